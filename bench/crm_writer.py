"""The single writer's share of a CRM upsert beside a CDP write's: ``python -m bench.crm_writer``.

In-process, no HTTP: batches of N (default 64) CRM upserts by email and of N CDP writes by email
(1 in 4 a returning person, as ``bench.crm`` sends them), each batch handed to the writer as one
group, as 64 concurrent requests are. For each dialect it prints the work done before the writer
(in the request's thread: parsing, checks, hashing) and in the writer per record, the writer's
records/s, the statements each batch sends to the database (SQLite: every statement the library
runs, each row of an ``executemany`` counted; PostgreSQL: each execute, executemany or COPY, and
the driver's waits on the server, i.e. round trips, fewer than the statements where a pipeline
sends several at once), and the writer's time split by phase. Counted on the driver (psycopg,
sqlite3), not by a SQLAlchemy ``before_cursor_execute`` listener: the hot paths run on the
driver's cursor, which SQLAlchemy's events never see. ``--profile`` adds the writer's top functions.
``--statement-cpu`` (PostgreSQL) adds the writer's database backend's CPU a record by statement
(``/proc/<pid>/schedstat`` read as each statement starts: the CPU since the last one started is that
one's), with psycopg's pipeline off so that each statement is answered before the next is sent.
The CDP figures are the same-run baseline; trust their ratio on a loaded machine.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

import profilehub.crm.people as crm_people
from bench.backends import fresh_database
from bench.crm import _database_cpu, bodies
from bench.figures import ratio
from bench.generate import ORG_ID, REGION
from bench.machine import command_line, exclusive_run, load_note
from bench.run_import import setup_org
from profilehub import profiles
from profilehub.crm import people, people_batch
from profilehub.profiles import ProfileService, ProfileWrite
from profilehub.store import batch_store
from profilehub.store.database import Database, GroupJob

OUT = Path(__file__).resolve().parent / "out"
spent: defaultdict[str, float] = defaultdict(float)
statements: list[int] = [0]
# PostgreSQL: the times the driver waited on the server (a statement, a pipeline's sync, each
# step of a COPY): the round trips, which a pipeline makes fewer than the statements.
waits: list[int] = [0]
by_kind = [False]  # --statements: each statement's kind too (which costs writer time of its own)
# --statement-cpu: the writer backend's CPU (ns) by statement, and the statement each backend runs
backend_cpu: defaultdict[str, int] = defaultdict(int)
_running: dict[int, tuple[str | None, int]] = {}
_originals: list[tuple[Any, str, Any]] = []


def _timer(owner: Any, name: str, label: str) -> None:
    original = getattr(owner, name)
    _originals.append((owner, name, original))

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[label] += time.perf_counter() - started

    setattr(owner, name, timed)


def _counter(owner: Any, name: str) -> None:
    original = getattr(owner, name)
    _originals.append((owner, name, original))

    def counted(*args: Any, **kwargs: Any) -> Any:
        statements[0] += 1
        if by_kind[0]:
            sql = args[1] if len(args) > 1 else ""
            kinds[_kind(sql if isinstance(sql, str) else str(getattr(sql, "_obj", sql)))] += 1
        return original(*args, **kwargs)

    setattr(owner, name, counted)


def _waits(owner: Any) -> None:
    original = owner.wait
    _originals.append((owner, "wait", original))

    def counted(*args: Any, **kwargs: Any) -> Any:
        waits[0] += 1
        return original(*args, **kwargs)

    owner.wait = counted


def _backend_ns(pid: int) -> int:
    """CPU time (ns) the database's process ``pid`` has run so far (Linux, server on this machine)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def _statement_label(sql: Any) -> str:
    """A statement by verb and table; a data-modifying ``WITH`` by each of its parts'."""
    text = " ".join(str(getattr(sql, "_obj", sql)).split())
    if text.startswith("COPY"):
        return " ".join(text.split()[:2])
    if text.startswith("WITH"):
        parts = re.findall(r"AS \((INSERT INTO \w+|UPDATE \w+|DELETE FROM \w+)", text)
        return "WITH " + " + ".join(parts) if parts else _kind(text)
    if text.startswith("SELECT"):
        table = re.search(r"\bFROM ([a-z_]+)", text)
        return f"SELECT {table.group(1)}" if table else "SELECT"
    return _kind(text)


def _started(conn: Any, label: str | None) -> None:
    """The backend of ``conn`` starts ``label`` (None: goes idle): what it ran since the last call
    is the previous statement's."""
    if threading.current_thread().name == "profilehub-statistics" or label == "SELECT pg_stat_activity":
        return  # the analyser's own connection, the bench's reading of the database's CPU
    pid = conn.info.backend_pid
    now = _backend_ns(pid)
    before = _running.get(pid)
    if before is not None and before[0] is not None:
        backend_cpu[before[0]] += now - before[1]
    _running[pid] = (label, now)


def _statement_timer(owner: Any, name: str) -> None:
    original = getattr(owner, name)
    _originals.append((owner, name, original))

    def timed(self: Any, sql: Any, *args: Any, **kwargs: Any) -> Any:
        _started(self.connection, _statement_label(sql))
        return original(self, sql, *args, **kwargs)

    setattr(owner, name, timed)


def _end_timer(owner: Any, name: str) -> None:
    original = getattr(owner, name)
    _originals.append((owner, name, original))

    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        _started(self, name.upper())
        try:
            return original(self, *args, **kwargs)
        finally:
            _started(self, None)

    setattr(owner, name, timed)


@contextmanager
def _unpipelined(conn: Any) -> Iterator[None]:
    yield


def _per_statement() -> None:
    """Each statement's backend CPU, as ``--statement-cpu`` reads it (the pipeline off)."""
    for owner in (crm_people, people_batch):
        _originals.append((owner, "pipelined", owner.pipelined))
        owner.pipelined = _unpipelined  # type: ignore[assignment]
    for method in ("execute", "executemany", "copy"):
        _statement_timer(psycopg.Cursor, method)
    for method in ("commit", "rollback"):
        _end_timer(psycopg.Connection, method)


@contextmanager
def instrumented(statement_cpu: bool = False) -> Iterator[None]:
    # The writer's phases, by the functions that do them (profilehub's internals: a profiling aid).
    _timer(profiles.ProfileService, "_write_group", "CDP: the whole group, in the writer")
    _timer(people_batch.PeopleBatch, "prefetch", "CRM rows: prefetch (emails' owners, records)")
    _timer(people_batch.PeopleBatch, "flush", "CRM rows: flush")
    _timer(profiles.ProfileService, "write_people", "graph: write_people (resolution + its flush)")
    _timer(batch_store.BatchStore, "prefetch", "graph: prefetch")
    _timer(batch_store.BatchStore, "flush", "graph: flush")
    _timer(people, "people_links", "graph: people_links (ucids for the answers)")
    _timer(people, "append_events", "events: append")
    _timer(profiles, "append_events", "events: append")
    for cls in (psycopg.Cursor,):
        for method in ("execute", "executemany", "copy"):
            _counter(cls, method)
    _waits(psycopg.Connection)
    if statement_cpu:
        _per_statement()
    try:
        yield
    finally:
        while _originals:
            owner, name, original = _originals.pop()
            setattr(owner, name, original)


def _sqlite_trace(conn: Any, on: bool) -> None:
    raw = conn.connection.dbapi_connection
    if hasattr(raw, "set_trace_callback"):
        raw.set_trace_callback((_count_kind if by_kind[0] else _count_one) if on else None)


kinds: Counter[str] = Counter()


def _count_one(_sql: str) -> None:
    statements[0] += 1


def _count_kind(sql: str) -> None:
    statements[0] += 1
    kinds[_kind(sql)] += 1


def _kind(sql: str) -> str:
    """``INSERT INTO t``, ``UPDATE t``, ``SELECT … FROM t``: a statement by verb and first table."""
    words = sql.split()
    verb = words[0].upper() if words else "?"
    for marker in ("INTO", "FROM", "UPDATE"):
        upper = [w.upper() for w in words]
        if marker in upper[: 40 if verb == "SELECT" else 4] and upper.index(marker) + 1 < len(words):
            return f"{verb} {words[upper.index(marker) + 1].strip('(').lower()}"
    return verb


def _run_group(db: Database, jobs: list[GroupJob], profiler: cProfile.Profile | None) -> float:
    """Run ``jobs`` as the writer runs a group of queued jobs; the writer's seconds."""

    def job(conn: Any) -> Any:
        _sqlite_trace(conn, True)
        if profiler is not None:
            profiler.enable()  # in the writer's thread
        try:
            return jobs[0].group(conn, [j.payload for j in jobs])
        finally:
            if profiler is not None:
                profiler.disable()
            _sqlite_trace(conn, False)

    started = time.perf_counter()
    results = db.write(job)
    seconds = time.perf_counter() - started
    for result in results:
        items = result if isinstance(result, list) else [result]
        bad = [r for r in items if isinstance(r, Exception)]
        if bad:
            raise RuntimeError(f"a write was refused: {bad[0]!r}")
    return seconds


def crm_jobs(service: ProfileService, batch: list[dict[str, Any]]) -> list[GroupJob]:
    return [people.people_upsert_job(service, ORG_ID, [b], "email", "bench") for b in batch]


def cdp_jobs(service: ProfileService, batch: list[dict[str, Any]]) -> list[GroupJob]:
    writes = [ProfileWrite(ORG_ID, REGION, b["ids"], b["upsert"]) for b in batch]
    return [service.write_job([w], "bench") for w in writes]


def measure(
    db: Database,
    service: ProfileService,
    make: Callable[[ProfileService, list[dict[str, Any]]], list[GroupJob]],
    all_bodies: list[dict[str, Any]],
    size: int,
    profiler: cProfile.Profile | None,
    url: str = "",
) -> dict[str, Any]:
    spent.clear()
    kinds.clear()
    backend_cpu.clear()
    _running.clear()
    statements[0] = waits[0] = 0
    prepare = writer = 0.0
    batches = 0
    # CPU everywhere a write costs it: this process (all its threads) and the database's backends.
    cpu, db_cpu = time.process_time(), _database_cpu(url)
    for i in range(0, len(all_bodies), size):
        started = time.perf_counter()
        jobs = make(service, all_bodies[i : i + size])
        prepare += time.perf_counter() - started
        writer += _run_group(db, jobs, profiler)
        batches += 1
    n = len(all_bodies)
    cpu, db_cpu = time.process_time() - cpu, _database_cpu(url) - db_cpu
    return {
        "cpu_us": cpu * 1e6 / n,
        "db_cpu_us": db_cpu * 1e6 / n,
        "prepare_us": prepare * 1e6 / n,
        "writer_us": writer * 1e6 / n,
        "rate": n / writer,
        "statements": statements[0] / batches,
        "waits": waits[0] / batches,
        "phases": {k: v * 1e6 / n for k, v in spent.items()},
        "kinds": {k: v / batches for k, v in kinds.items()},
        "statement_cpu": {k: v / 1000 / n for k, v in backend_cpu.items()},
    }


def run(
    backend: str,
    requests: int,
    size: int,
    profile: bool,
    show_statements: bool,
    reproduce: str,
    statement_cpu: bool = False,
) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with fresh_database(backend, OUT) as url:
        setup_org(url)
        db = Database(url)
        service = ProfileService(db)
        try:
            # warm the caches (strategy, attributes) and the tables' first pages
            warm = [{**b, "ids": {"email": "warm." + b["ids"]["email"]}} for b in bodies("cdp", 64, seed=5)]
            measure(db, service, cdp_jobs, warm, size, None)
            measure(db, service, crm_jobs, bodies("warm", 64, seed=5), size, None)
            found: dict[str, dict[str, Any]] = {}
            profilers: dict[str, cProfile.Profile] = {}
            with instrumented(statement_cpu and backend == "postgres"):
                for kind, make in (("cdp", cdp_jobs), ("crm", crm_jobs)):
                    profiler = cProfile.Profile() if profile else None
                    found[kind] = measure(db, service, make, bodies(kind, requests), size, profiler, url)
                    if profiler is not None:
                        profilers[kind] = profiler
        finally:
            db.close()
    print(f"[crm-writer {backend}] {requests:,} writes of each dialect in groups of {size}; {load_note()}")
    for kind, name in (("cdp", "CDP write (baseline)"), ("crm", "CRM upsert by email")):
        r = found[kind]
        print(
            f"[crm-writer {backend}]   {name:22s} before the writer {r['prepare_us']:6.0f} µs, "
            f"writer {r['writer_us']:6.0f} µs/record ({r['rate']:,.0f}/s), "
            f"{r['statements']:.0f} statements a group"
            + (f", {r['waits']:.0f} waits on the server" if r["waits"] else "")
            + f"; CPU {r['cpu_us'] + r['db_cpu_us']:.0f} µs/record (this process {r['cpu_us']:.0f}"
            + (f", database {r['db_cpu_us']:.0f})" if r["db_cpu_us"] else ")")
        )
        for phase, us in sorted(r["phases"].items(), key=lambda kv: -kv[1]):
            print(f"[crm-writer {backend}]       {phase:50s} {us:6.0f} µs/record")
        if show_statements:
            listed = ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["kinds"].items(), key=lambda kv: -kv[1]))
            print(f"[crm-writer {backend}]       statements a group: {listed}")
        if r["statement_cpu"]:
            total = sum(r["statement_cpu"].values())
            print(
                f"[crm-writer {backend}]       the writer's database backend, by statement: {total:.0f} µs/record"
            )
            for label, us in sorted(r["statement_cpu"].items(), key=lambda kv: -kv[1]):
                if us >= 0.5:
                    print(f"[crm-writer {backend}]         {us:6.1f}  {label}")
    cpu = {k: r["cpu_us"] + r["db_cpu_us"] for k, r in found.items()}
    print(
        f"[crm-writer {backend}]   CRM/CDP writer records/s {ratio(found['crm']['rate'], found['cdp']['rate'])}, "
        f"CPU a record {ratio(cpu['crm'], cpu['cdp'])} (on a machine whose CPUs are busy the rate follows it)"
    )
    for kind, profiler in profilers.items():
        out = io.StringIO()
        sort = os.environ.get("CRM_SORT", "cumulative" if kind == "crm" else "tottime")
        pstats.Stats(profiler, stream=out).sort_stats(sort).print_stats(45)
        print(f"[crm-writer {backend}] {kind} writer profile ({sort}):\n{out.getvalue()}")
    print(f"[crm-writer {backend}] reproduce: {reproduce}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.crm_writer", description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append", help="Repeatable.")
    parser.add_argument("--requests", type=int, default=3000, help="Writes of each dialect.")
    parser.add_argument("--group", type=int, default=64, help="Writes a group (concurrent requests).")
    parser.add_argument("--profile", action="store_true", help="Print the writer's top functions.")
    parser.add_argument("--statements", action="store_true", help="Print a group's statements by kind.")
    parser.add_argument(
        "--statement-cpu",
        action="store_true",
        help="PostgreSQL: the writer's database backend's CPU by statement (the pipeline off).",
    )
    args = parser.parse_args(argv)
    by_kind[0] = args.statements
    with exclusive_run(command_line()):
        for backend in args.backend or ["sqlite", "postgres"]:
            reproduce = (
                f".venv/bin/python -m bench.crm_writer --backend {backend} --requests {args.requests} "
                f"--group {args.group}"
                + (" --profile" if args.profile else "")
                + (" --statements" if args.statements else "")
                + (" --statement-cpu" if args.statement_cpu else "")
            )
            run(
                backend,
                args.requests,
                args.group,
                args.profile,
                args.statements,
                reproduce,
                args.statement_cpu,
            )


if __name__ == "__main__":
    main()
