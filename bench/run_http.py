"""HTTP write benchmark: ``profilehub serve`` under N concurrent clients, beside a bare-ASGI raw upsert
of the same rows batched the same way (``bench/baseline_server.py``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from bench.backends import fresh_database
from bench.figures import ratio
from bench.generate import ORG_ID, Dataset
from bench.machine import load_note
from bench.run_import import setup_org
from profilehub.auth import CredentialKind, create_credential
from profilehub.store.database import Database

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    # The kernel's choice of an unused port: benchmarks run side by side (each with its own bench
    # lock) each get a different one. Scanning a fixed range from its first port gave two
    # benches started together the same port, and the second server failed to start.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def new_store(url: str) -> str:
    """Set up the bench's org in the fresh database at ``url``; return a read/write API key."""
    setup_org(url)
    db = Database(url)
    apikey = db.write(
        lambda c: create_credential(c, ORG_ID, CredentialKind.APIKEY, "profile.read,profile.write")
    ).secret
    db.close()
    return apikey


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 "):
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the server on port {port} did not answer within {timeout}s")


def group_cpu(pgid: int) -> float:
    """CPU time of the process group ``pgid`` (the server and its ``--workers`` processes) so far."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def settle(pgid: int, timeout: float = 60.0) -> None:
    """Wait (at most ``timeout`` s) until the server's processes are idle. A server spawns its
    webhook deliverer at start-up (one process per worker), whose interpreter and imports took
    ~0.9 s of CPU at load 9 and were still running when bench.crm's warm-up ended: that CPU fell
    on the first round measured (0.45 ms of each of its 2,000 requests' server CPU, where the
    deliverer spent 0.01 ms a request in every later round). ``server`` waits for it before
    handing the server on, and a bench may wait again after its warm-up."""
    deadline = time.monotonic() + timeout
    before = group_cpu(pgid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = group_cpu(pgid)
        if now - before < 0.02:
            return
        before = now


@contextmanager
def server(cmd: list[str], url: str, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The server on ``port``, its stderr in ``log`` (a pipe nobody reads would fill up and stall
    the server once it has logged 64 KB)."""
    env = {**os.environ, "PROFILEHUB_DATABASE_URL": url}
    with log.open("wb") as err:
        process = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
        )
    try:
        wait_ready(port, process)
        settle(process.pid)
        yield process
    finally:
        # The server and its workers are one process group, started by us above.
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def load(
    port: int, data: Dataset, apikey: str, clients: int, requests: int, seconds: float
) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "bench.load", "--port", str(port), "--file", str(data.records),
        "--apikey", apikey, "--clients", str(clients), "--requests", str(requests), "--seconds", str(seconds),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
    return result


def bench_http(
    data: Dataset, backend: str, out: Path, reproduce: str, clients: int, requests: int, workers: int
) -> dict[str, Any]:
    seconds = 120.0
    with fresh_database(backend, out) as url:
        apikey = new_store(url)
        port = free_port()
        # No access log: the baseline logs nothing either (like for like).
        serve = [str(ROOT / ".venv/bin/profilehub"), "serve", "--port", str(port), "--workers", str(workers)]
        serve.append("--no-access-log")
        with server(serve, url, port, out / "http-server.log"):
            ours = load(port, data, apikey, clients, requests, seconds)
        port = free_port()
        with server(
            [sys.executable, "-m", "bench.baseline_server", "--port", str(port), "--url", url],
            url,
            port,
            out / "http-baseline.log",
        ):
            base = load(port, data, apikey, clients, requests, seconds)
    lat, blat = ours["latency_ms"], base["latency_ms"]
    print(
        f"[http {backend}] {ours['requests']:,} POST /cdp/v1/users, {clients} clients, {workers} worker(s), "
        f"no access log: "
        f"{ours['rate']:,.0f} writes/s, p50/p95/p99 {lat['p50']:.1f}/{lat['p95']:.1f}/{lat['p99']:.1f} ms, "
        f"statuses {ours['statuses']}; bare-ASGI raw upsert baseline (same group commit and batching) {base['rate']:,.0f}/s "
        f"p99 {blat['p99']:.1f} ms; ratio {ratio(ours['rate'], base['rate'])}; {load_note()}"
    )
    print(f"[http {backend}] reproduce: {reproduce}")
    sys.stdout.flush()
    return {"backend": backend, "ours": ours, "baseline": base}
