"""``profilehub serve`` as a real process for the operations tests: started on a free port, its
output in a log file (a pipe nobody reads would stall it), stopped by the caller's signal."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    def __init__(self, proc: subprocess.Popen[bytes], base: str, log: Path) -> None:
        self.proc = proc
        self.base = base
        self.log = log

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server did not start: {self.log.read_text()}")
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


@contextlib.contextmanager
def serve(database_url: str, tmp_path: Path, *args: str, **env: str) -> Iterator[Served]:
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    full_env = {**os.environ, "PROFILEHUB_DATABASE_URL": database_url, **env}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(VENV_BIN / "profilehub"), "serve", "--port", str(port), "--no-access-log", *args],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    served = Served(proc, f"http://127.0.0.1:{port}", log)
    try:
        served.wait_ready()
        yield served
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
