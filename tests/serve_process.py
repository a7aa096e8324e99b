"""``profilehub serve`` as a real process for the tests that need one: started on a free port, its
output in a log file (a pipe nobody reads would stall it), stopped by the caller's signal or
killed when the block ends, with every process it started (``--workers 2`` forks workers, which
outlived a killed master when a test failed and kept the port and their database connections)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from profilehub.store.database import Database
from tests.conftest import OrgFixture, make_org, migrated_url

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` different free local ports (held together while chosen, so none twice)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


def new_org(database_url: str) -> OrgFixture:
    """An org in the new, empty database at ``database_url``, made (with the schema, copied: see
    ``migrated_url``) before a server starts."""
    db = Database(migrated_url(database_url))
    try:
        return make_org(db)
    finally:
        db.close()


class Served:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
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


def _launch(
    port: int, database_url: str, log_dir: Path, args: tuple[str, ...], access_log: bool, env: dict[str, str]
) -> Served:
    log = log_dir / f"serve-{port}.log"
    full_env = {**os.environ, "PROFILEHUB_DATABASE_URL": database_url, **env}
    command = [str(VENV_BIN / "profilehub"), "serve", "--port", str(port), *args]
    if not access_log:
        command.append("--no-access-log")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            # A process group of its own, so the whole server (master and workers) can be killed
            # at once below, whatever state a failed test left it in.
            start_new_session=True,
        )
    return Served(proc, port, log)


@contextlib.contextmanager
def serve(
    database_url: str, log_dir: Path, *args: str, access_log: bool = False, **env: str
) -> Iterator[Served]:
    """``profilehub serve --port <free> *args``, ready (``/healthz`` 200) when the block starts;
    ``env`` is added to this process's environment. The access log is off unless asked for."""
    with serve_several(1, database_url, log_dir, *args, access_log=access_log, **env) as [served]:
        yield served


@contextlib.contextmanager
def serve_several(
    count: int, database_url: str, log_dir: Path, *args: str, access_log: bool = False, **env: str
) -> Iterator[list[Served]]:
    """``count`` servers as by ``serve``, started side by side (a start is mostly imports; one
    after the other, a test waited for each in turn)."""
    servers: list[Served] = []
    try:
        for port in free_ports(count):
            servers.append(_launch(port, database_url, log_dir, args, access_log, env))
        for served in servers:
            served.wait_ready()
        yield servers
    finally:
        for served in servers:
            kill_group(served.proc)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc``'s process group (it leads one: ``start_new_session``) and reap ``proc``.

    Also after ``proc`` itself ended: a master killed by a test leaves its workers running."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


T = TypeVar("T")


async def send_all_at_once(
    clients: int,
    queue_of: Callable[[int], asyncio.Queue[T]],
    send: Callable[[httpx.AsyncClient, int, T], Awaitable[httpx.Response]],
    bases: list[str],
) -> list[httpx.Response]:
    """``clients`` clients, client n on server ``bases[n % len(bases)]`` over its own keep-alive
    connection, released together: each sends ``send(client, n, item)`` for the items it takes from
    ``queue_of(n)`` until that queue is empty. The answers, in the order they came."""
    responses: list[httpx.Response] = []
    start = asyncio.Event()

    async def client(n: int) -> None:
        queue = queue_of(n)
        async with httpx.AsyncClient(base_url=bases[n % len(bases)], timeout=120) as ac:
            await start.wait()
            while not queue.empty():
                responses.append(await send(ac, n, queue.get_nowait()))

    tasks = [asyncio.create_task(client(n)) for n in range(clients)]
    await asyncio.sleep(0)
    start.set()
    await asyncio.gather(*tasks)
    return responses
