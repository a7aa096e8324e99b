"""Long polls of the change feed under many waiters: ``profilehub serve`` (one worker) with N
clients waiting on ``GET /cdp/v1/changes?wait=30`` of one org, then one profile written by another
process (a ``Database`` of its own, as an import or a second server: it rings no bell in the
server), or with ``--write server`` through the server itself (its bell wakes the waits).

Printed per round: how long after the write's commit (the event's ``ts``) the first, the median and
the last waiter had their answer, and how many answers carried the event; on PostgreSQL also the
database's transactions a second while the waiters only wait (each look at the database is one),
and on both the server's CPU (its processes) a second while they wait.
``--baseline REF`` runs the build of REF too, in alternating rounds of one run, a fresh database
each: by default the build just before the feeds' shared watch (``feeds._Watch``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import psycopg

from bench.backends import fresh_database
from bench.generate import ORG_ID, REGION
from bench.machine import command_line, exclusive_run, load_note
from bench.outbox import _git, _setup, baseline_tree
from bench.run_http import free_port, group_cpu, server

ROOT = Path(__file__).resolve().parent.parent
PROFILEHUB = str(ROOT / ".venv/bin/profilehub")
OUT = Path(__file__).resolve().parent / "out"
EMAIL = "waited-for@example.com"
WINDOW = 5.0  # seconds of waiting measured (server CPU, database transactions)
# Run with the build's PYTHONPATH, so the write is that build's own.
WRITE_ELSEWHERE = f"""
import sys
from profilehub.profiles import ProfileService, ProfileWrite
from profilehub.store.database import Database
db = Database(sys.argv[1])
ProfileService(db).write_batch([ProfileWrite({ORG_ID}, {REGION!r}, {{"email": {EMAIL!r}}}, {{}})], "bench")
db.close()
"""


def _default_baseline() -> str:
    added = _git("log", "--format=%H", "-S", "class _Watch", "--", "src/profilehub/feeds.py").decode().split()
    if not added:
        raise SystemExit("no commit adds feeds._Watch: pass --baseline REF")
    return f"{added[-1]}^"


@contextmanager
def _pythonpath(src: Path | None) -> Iterator[dict[str, str]]:
    """The environment of a build: this tree's (None) or the baseline's ``src`` first."""
    before = os.environ.get("PYTHONPATH")
    paths = [*([str(src)] if src else []), str(ROOT)]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)
    try:
        yield dict(os.environ)
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


async def _get(port: int, path: str, headers: dict[str, str]) -> tuple[dict[str, Any], float]:
    """One request on a connection of its own: the JSON answer and when it had fully arrived."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        body = await reader.readexactly(length)
        arrived = time.time()
    finally:
        writer.close()
    if status != b"200":
        raise RuntimeError(f"GET {path}: {head.decode(errors='replace')} {body[:300]!r}")
    answer: dict[str, Any] = orjson.loads(body)
    return answer, arrived


async def _post(port: int, path: str, headers: dict[str, str], body: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
    if head.split(b" ", 2)[1] != b"200":
        raise RuntimeError(f"POST {path}: {head.decode(errors='replace')}")


def _transactions(url: str) -> int:
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


async def _waiters_round(
    args: argparse.Namespace, url: str, pgid: int, port: int, apikey: str, env: dict[str, str]
) -> dict[str, Any]:
    headers = {"apikey": apikey, "scopes": "profile.read,profile.write"}
    start, _ = await _get(port, f"/cdp/v1/changes?orgId={ORG_ID}", headers)
    path = f"/cdp/v1/changes?orgId={ORG_ID}&after={start['next']}&wait=30"
    waits = [asyncio.create_task(_get(port, path, headers)) for _ in range(args.waiters)]
    await asyncio.sleep(args.settle)  # every wait has made its first look and waits
    tps = None
    before = 0
    if args.backend == "postgres":
        # An idle backend reports its transactions to pg_stat_database up to 10 s late
        # (PGSTAT_IDLE_INTERVAL): past that, the first looks are all counted before the window.
        await asyncio.sleep(10)
        before = await asyncio.to_thread(_transactions, url)
    cpu = group_cpu(pgid)
    await asyncio.sleep(WINDOW)
    cpu_per_second = (group_cpu(pgid) - cpu) / WINDOW
    if args.backend == "postgres":
        tps = (await asyncio.to_thread(_transactions, url) - before) / WINDOW
    if any(w.done() for w in waits):
        raise RuntimeError("a wait answered before the write: --settle too long or a request failed")
    if args.write == "process":
        cmd = [sys.executable, "-c", WRITE_ELSEWHERE, url]
        done = await asyncio.to_thread(
            subprocess.run, cmd, env=env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"the other process's write failed:\n{done.stderr[-3000:]}")
    else:
        body = orjson.dumps({"orgId": ORG_ID, "region": REGION, "ids": {"email": EMAIL}, "upsert": {}})
        await _post(port, "/cdp/v1/users", headers, body)
    answers = await asyncio.wait_for(asyncio.gather(*waits), 60)
    carried = [a for a, _ in answers if a["changes"]]
    if not carried:
        raise RuntimeError("no wait answered the write")
    committed = carried[0]["changes"][0]["ts"] / 1000
    after = sorted(arrived - committed for _, arrived in answers)
    return {
        "carried": len(carried),
        "first": after[0],
        "median": statistics.median(after),
        "last": after[-1],
        "tps": tps,
        "cpu": cpu_per_second,
    }


def _round(args: argparse.Namespace, src: Path | None) -> dict[str, Any]:
    with fresh_database(args.backend, OUT) as url, _pythonpath(src) as env:
        apikey = _setup(url, src)
        port = free_port()
        serve = [PROFILEHUB, "serve", "--port", str(port), "--workers", "1", "--no-access-log"]
        with server(serve, url, port, OUT / "waiters-server.log") as process:
            return asyncio.run(_waiters_round(args, url, process.pid, port, apikey, env))


def run(args: argparse.Namespace) -> None:
    OUT.mkdir(exist_ok=True)
    modes: dict[str, Path | None] = {"this tree": None}
    if args.baseline != "none":
        commit, src = baseline_tree(args.baseline or _default_baseline())
        modes = {f"before ({commit})": src, **modes}
    lasts: dict[str, list[float]] = {m: [] for m in modes}
    order = list(modes)
    for n in range(args.rounds):
        # Alternate which build goes first, so a drift in the machine's load hits both alike.
        for mode in order if n % 2 == 0 else order[::-1]:
            r = _round(args, modes[mode])
            lasts[mode].append(r["last"])
            tps = "" if r["tps"] is None else f", {r['tps']:.0f} database transactions/s"
            print(
                f"[waiters {args.backend}] round {n + 1} {mode}: {args.waiters} waits, write through "
                f"{args.write}: answered after the commit first {r['first']:.2f} s, median "
                f"{r['median']:.2f} s, last {r['last']:.2f} s; {r['carried']} carried the event; while waiting: server CPU "
                f"{r['cpu'] * 1000:.0f} ms/s{tps}; "
                f"{load_note()}"
            )
            sys.stdout.flush()
    summary = ", ".join(f"{m} {statistics.median(v):.2f} s" for m, v in lasts.items())
    print(f"[waiters {args.backend}] last answer after the write (medians of {args.rounds}): {summary}")
    print(f"[waiters {args.backend}] reproduce: {args.reproduce}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.waiters", description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--waiters", type=int, default=300)
    parser.add_argument("--write", choices=["process", "server"], default="process")
    parser.add_argument(
        "--settle", type=float, default=3.0, help="Seconds for every wait to make its first look."
    )
    parser.add_argument("--rounds", type=int, default=2, help="Rounds of each build (alternating).")
    parser.add_argument(
        "--baseline", default=None, help="Git ref of the build to compare; 'none': this tree only."
    )
    args = parser.parse_args(argv)
    args.reproduce = f".venv/bin/python -m bench.waiters {' '.join(sys.argv[1:] if argv is None else argv)}"
    with exclusive_run(command_line()):
        run(args)


if __name__ == "__main__":
    main()
