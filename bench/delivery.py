"""Webhook delivery under write load: ``profilehub serve`` taking the CDP write load of the HTTP
bench (``bench.load``: N keep-alive clients posting ``/cdp/v1/users``), with background delivery
off (``PROFILEHUB_SERVE_DELIVERS=off``, no endpoint) and on (one endpoint, a local receiver), in
alternating rounds of one run, a fresh database each.

Printed per "on" round: events written and received, the backlog (events committed but not yet
received) sampled every second during the load (start, middle, end, highest: flat means delivery
keeps up), how long the rest took to arrive after the load stopped, and the write-to-receipt
latency p50/p95/p99 (receipt time minus the event's ``ts``, the write's commit time in ms). Then
the writes/s with delivery on over off (medians; goal >= 0.9x), per backend: both (SQLite and
PostgreSQL) by default, side by side in each round. Each round also prints the CPU each process
spent per write during the load (the server's processes, its deliverer process, PostgreSQL's
backends of the bench's database, the load generator, the receiver) and, on PostgreSQL, the
database's transactions per write: where delivery's cost goes.

The receiver is a minimal asyncio HTTP/1.1 server in this process (answers 204, notes
``webhook-id`` and the event's ``ts``); it shares the machine's cores with the server and the
load generator, as a receiver on the same host would.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from bench.backends import fresh_database
from bench.figures import latency_ms
from bench.generate import ORG_ID, dataset
from bench.machine import command_line, exclusive_run, load_note
from bench.run_http import free_port, load, new_store, server
from profilehub.delivery import endpoints
from profilehub.store.database import Database
from profilehub.store.events import last_event_id
from profilehub.store.tables import webhook_endpoints

ROOT = Path(__file__).resolve().parent.parent
PROFILEHUB = str(ROOT / ".venv/bin/profilehub")
OUT = Path(__file__).resolve().parent / "out"


class Receiver:
    """Counts deliveries and their latency; one asyncio loop in a thread."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.latencies: list[float] = []
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        threading.Thread(target=self._main, daemon=True).start()
        self._ready.wait(10)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length, event_id = 0, ""
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    key = name.strip().lower()
                    if key == b"content-length":
                        length = int(value)
                    elif key == b"webhook-id":
                        event_id = value.strip().decode()
                body = await reader.readexactly(length)
                now_ms = time.time() * 1000
                if event_id not in self.ids:
                    self.ids.add(event_id)
                    self.latencies.append((now_ms - orjson.loads(body)["ts"]) / 1000)
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def cpu(self) -> float:
        """CPU seconds of the receiver's thread so far."""

        async def spent() -> float:
            return time.thread_time()

        return asyncio.run_coroutine_threadsafe(spent(), self._loop).result(10)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _pids(match: Callable[[int, str], bool]) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            pgid = int(stat.rsplit(")", 1)[1].split()[2])
            if match(pgid, cmdline):
                out.append(int(entry.name))
    return out


class CpuMeter:
    """CPU seconds spent during the load by the server's processes (its process group: the
    server, its workers, a deliverer it started), the database's own processes (PostgreSQL
    backends serving the bench's database) and the receiver's thread."""

    def __init__(self, serve_pid: int, database: str | None) -> None:
        self.serve_pid = serve_pid
        self.database = database
        self.start = self._read()

    def _groups(self) -> dict[str, list[int]]:
        groups = {"server": _pids(lambda pgid, _: pgid == self.serve_pid), "postgres": []}
        for pid in groups["server"]:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if Path(f"/proc/{pid}").exists() else b""
            if b"deliver" in cmdline and pid != self.serve_pid:
                groups.setdefault("deliverer", []).append(pid)
        groups["server"] = [p for p in groups["server"] if p not in groups.get("deliverer", [])]
        if self.database:
            groups["postgres"] = _pids(lambda _, cmd: f" {self.database} " in cmd)
        return groups

    def _read(self) -> dict[int, float]:
        return {pid: _cpu_seconds(pid) for pids in self._groups().values() for pid in pids}

    def spent(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, pids in self._groups().items():
            out[name] = sum(_cpu_seconds(pid) - self.start.get(pid, 0.0) for pid in pids)
        return out


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _wait_for_deliverer(db: Database) -> None:
    """Until the server's deliverer holds the endpoint: the load starts once delivery runs."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with db.read() as conn:
            if conn.execute(sa.select(webhook_endpoints.c.lease_owner)).scalar():
                return
        time.sleep(0.1)
    raise RuntimeError("the server's deliverer did not take the endpoint within 60 s")


def _transactions(db: Database) -> int | None:
    """Transactions of the bench's PostgreSQL database so far (every process's; None on SQLite)."""
    if db.dialect != "postgresql":
        return None
    with db.read() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
                )
            ).scalar_one()
        )


def _backlog(db: Database, receiver: Receiver, first: int) -> int:
    with db.read() as conn:
        written = last_event_id(conn) - first
    return written - len(receiver.ids)


def _round(args: argparse.Namespace, backend: str, deliver: bool) -> dict[str, Any]:
    data = dataset(OUT, args.requests, seed=7)
    with fresh_database(backend, OUT) as url:
        apikey = new_store(url)
        db = Database(url)
        receiver = Receiver() if deliver else None
        try:
            with db.read() as conn:
                first = last_event_id(conn)
            if receiver is not None:
                db.write(
                    lambda c: endpoints.create_endpoint(
                        c, ORG_ID, f"http://127.0.0.1:{receiver.port}/hook", start_after=first
                    )
                )
            port = free_port()
            serve = [
                PROFILEHUB,
                "serve",
                "--port",
                str(port),
                "--workers",
                str(args.workers),
                "--no-access-log",
            ]
            os.environ["PROFILEHUB_SERVE_DELIVERS"] = args.deliver_in if deliver else "off"
            try:
                with server(serve, url, port, OUT / "delivery-server.log") as served:
                    if receiver is not None:
                        _wait_for_deliverer(db)
                    xacts = _transactions(db)
                    meter = CpuMeter(served.pid, url.rsplit("/", 1)[1] if backend == "postgres" else None)
                    receiver_cpu = receiver.cpu() if receiver is not None else 0.0
                    children_cpu = _children_cpu()
                    samples: list[int] = []
                    done = threading.Event()

                    def sample() -> None:
                        while not done.wait(1.0):
                            if receiver is not None:
                                samples.append(_backlog(db, receiver, first))

                    sampler = threading.Thread(target=sample, daemon=True)
                    sampler.start()
                    result = load(port, data, apikey, args.clients, args.requests, args.seconds)
                    done.set()
                    cpu = meter.spent()
                    if xacts is not None:
                        time.sleep(1.0)  # PostgreSQL publishes its counters at most once a second
                        spent = (_transactions(db) or 0) - xacts
                        result["transactions_per_write"] = spent / max(1, result["requests"])
                    cpu["load generator"] = _children_cpu() - children_cpu
                    if receiver is not None:
                        cpu["receiver"] = receiver.cpu() - receiver_cpu
                    result["cpu_ms_per_write"] = {
                        k: v * 1000 / max(1, result["requests"]) for k, v in cpu.items()
                    }
                    sampler.join()
                    if receiver is not None:
                        stopped = time.monotonic()
                        while _backlog(db, receiver, first) > 0 and time.monotonic() - stopped < 120:
                            time.sleep(0.05)
                        result["drain_seconds"] = time.monotonic() - stopped
                        result["backlog"] = samples
                        result["received"] = len(receiver.ids)
                        result["delivery_ms"] = latency_ms(receiver.latencies)
                    with db.read() as conn:
                        result["events"] = last_event_id(conn) - first
            finally:
                os.environ.pop("PROFILEHUB_SERVE_DELIVERS", None)
        finally:
            if receiver is not None:
                receiver.stop()
            db.close()
    return result


def _backlog_note(samples: list[int]) -> str:
    if not samples:
        return "no samples"
    middle = samples[len(samples) // 2]
    return f"start {samples[0]:,}, middle {middle:,}, end {samples[-1]:,}, highest {max(samples):,}"


def run(args: argparse.Namespace) -> None:
    OUT.mkdir(exist_ok=True)
    backends: list[str] = args.backend or ["sqlite", "postgres"]
    results: dict[str, dict[bool, list[dict[str, Any]]]] = {b: {False: [], True: []} for b in backends}
    for n in range(args.rounds):
        for backend in backends:
            # Alternate which mode goes first, so a drift in the machine's load hits both alike.
            for deliver in (False, True) if n % 2 == 0 else (True, False):
                result = _round(args, backend, deliver)
                results[backend][deliver].append(result)
                print(_round_line(backend, n, deliver, result))
                sys.stdout.flush()
    for backend in backends:
        off = statistics.median(r["rate"] for r in results[backend][False])
        on_rounds = results[backend][True]
        on = statistics.median(r["rate"] for r in on_rounds)
        p50 = statistics.median(r["delivery_ms"]["p50"] for r in on_rounds)
        p99 = statistics.median(r["delivery_ms"]["p99"] for r in on_rounds)
        backlogs = "; ".join(_backlog_note(r["backlog"]) for r in on_rounds)
        print(
            f"[delivery {backend}] {args.clients} clients, {args.workers} worker(s), {args.rounds} rounds, "
            f"PROFILEHUB_SERVE_DELIVERS={args.deliver_in}: delivery off {off:,.0f} writes/s, on {on:,.0f} "
            f"writes/s: on/off {on / off:.2f}x (medians; goal >= 0.9x); backlog (events) {backlogs}; "
            f"write-to-receipt p50 {p50:,.0f} ms, p99 {p99:,.0f} ms (medians of the rounds); {load_note()}"
        )
    print(f"[delivery] reproduce: {args.reproduce}")


def _round_line(backend: str, n: int, deliver: bool, result: dict[str, Any]) -> str:
    line = (
        f"[delivery {backend}] round {n + 1} delivery {'on ' if deliver else 'off'}: "
        f"{result['requests']:,} writes, {result['rate']:,.0f}/s, p99 {result['latency_ms']['p99']:.1f} ms, "
        f"statuses {result['statuses']}"
    )
    if deliver:
        lat = result["delivery_ms"]
        line += (
            f"; {result['received']:,} of {result['events']:,} events received; backlog during the "
            f"load (events) {_backlog_note(result['backlog'])}; the rest arrived {result['drain_seconds']:.1f} s "
            f"after the load; write-to-receipt p50/p95/p99 {lat['p50']:.0f}/{lat['p95']:.0f}/{lat['p99']:.0f} ms"
        )
    cpu = ", ".join(f"{k} {v:.2f}" for k, v in result["cpu_ms_per_write"].items())
    line += f"; CPU ms per write: {cpu}"
    if "transactions_per_write" in result:
        line += f"; database transactions per write {result['transactions_per_write']:.2f}"
    return f"{line}; {load_note()}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.delivery", description=__doc__)
    parser.add_argument(
        "--backend",
        choices=["sqlite", "postgres"],
        action="append",
        help="Repeat for both (the default: both, side by side in each round).",
    )
    parser.add_argument("--requests", type=int, default=6000, help="Writes per round (at most).")
    parser.add_argument("--seconds", type=float, default=30.0, help="Longest a round's load runs.")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="Rounds of each mode (alternating).")
    parser.add_argument(
        "--deliver-in",
        choices=["process", "thread"],
        default="process",
        help="PROFILEHUB_SERVE_DELIVERS of the rounds with delivery on.",
    )
    args = parser.parse_args(argv)
    args.reproduce = f".venv/bin/python -m bench.delivery {' '.join(sys.argv[1:] if argv is None else argv)}"
    with exclusive_run(command_line()):
        run(args)


if __name__ == "__main__":
    main()
