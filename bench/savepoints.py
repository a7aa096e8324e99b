"""What the per-job savepoints of the single writer cost (issue 11), measured on the writer itself.

``python -m bench.savepoints [--writes N] [--clients C] [--backend sqlite|postgres]`` queues, wave
after wave, ``C`` concurrent writes for the one writer, as ``C`` HTTP clients do: CDP single writes
and CRM person upserts (group jobs each: a savepoint per batch's run of them, one more per
identity-graph batch). Each workload runs twice on one fresh database: as
shipped, and as the baseline with ``Connection.begin_nested`` made a no-op (the writer as it was
before, one transaction per batch and nothing else), alternating, so both meet the same load. It
prints writes/s of each and their ratio beside the machine's load.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

from sqlalchemy.engine import Connection

from bench.backends import fresh_database
from bench.machine import command_line, exclusive_run, load_note
from profilehub.crm.people import people_upsert_job
from profilehub.orgs import create_org
from profilehub.profiles import ProfileService, ProfileWrite
from profilehub.store.database import Database

ORG_ID = 1234


class _NoSavepoint:
    """What ``begin_nested`` answers in the baseline: a savepoint that sends nothing."""

    is_active = False

    def __enter__(self) -> _NoSavepoint:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def commit(self) -> None:
        return None

    def rollback(self) -> None:
        return None


@contextmanager
def _savepoints(enabled: bool) -> Iterator[None]:
    if enabled:
        yield
        return
    with mock.patch.object(Connection, "begin_nested", lambda self: _NoSavepoint()):
        yield


def _waves(db: Database, jobs: Callable[[int], list[Any]], writes: int, clients: int) -> float:
    """Seconds to run ``writes`` jobs as waves of ``clients`` queued at once."""
    started = time.perf_counter()
    for first in range(0, writes, clients):
        futures = [db.submit(job) for job in jobs(first)][: writes - first]
        for future in futures:
            future.result()
    return time.perf_counter() - started


def _cdp_jobs(service: ProfileService, tag: str, clients: int) -> Callable[[int], list[Any]]:
    def jobs(first: int) -> list[Any]:
        return [
            service.write_job(
                [
                    ProfileWrite(
                        ORG_ID,
                        "EU",
                        {"email": f"{tag}{n}@bench.example", "crm_id": f"{tag}-{n % 997}"},
                        {"profile": {"n": n}},
                    )
                ],
                "bench",
            )
            for n in range(first, first + clients)
        ]

    return jobs


def _crm_jobs(service: ProfileService, tag: str, clients: int) -> Callable[[int], list[Any]]:
    def jobs(first: int) -> list[Any]:
        return [
            people_upsert_job(
                service,
                ORG_ID,
                [{"firstName": f"P{n}", "emails": [f"{tag}{n % (clients * 4)}@bench.example"]}],
                "email",
                "bench",
            )
            for n in range(first, first + clients)
        ]

    return jobs


def run(url: str, writes: int, clients: int) -> list[tuple[str, bool, float]]:
    db = Database(url)
    try:
        db.write(lambda c: create_org(c, ORG_ID, "Bench", ["EU"]))
        service = ProfileService(db)
        out: list[tuple[str, bool, float]] = []
        # Warm up (strategy cache, planner statistics) outside the figures.
        _waves(db, _cdp_jobs(service, "warm", clients), clients * 4, clients)
        for round_, savepoints in enumerate([False, True, True, False]):
            tag = f"r{round_}"
            with _savepoints(savepoints):
                seconds = _waves(db, _cdp_jobs(service, tag, clients), writes, clients)
                out.append(("cdp write", savepoints, writes / seconds))
                seconds = _waves(db, _crm_jobs(service, tag, clients), writes, clients)
                out.append(("crm upsert", savepoints, writes / seconds))
        return out
    finally:
        db.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.savepoints", description=__doc__)
    parser.add_argument("--writes", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append", help="Repeatable.")
    args = parser.parse_args(argv)
    with exclusive_run(command_line()):
        out = Path(__file__).resolve().parent / "out"
        out.mkdir(exist_ok=True)
        for backend in args.backend or ["sqlite", "postgres"]:
            with fresh_database(backend, out) as url:
                figures = run(url, args.writes, args.clients)
            for workload in ("cdp write", "crm upsert"):
                rate = {
                    on: sum(r for w, o, r in figures if w == workload and o == on) / 2 for on in (True, False)
                }
                print(
                    f"[savepoints {backend}] {workload}: {rate[True]:,.0f} writes/s with a savepoint per job, "
                    f"{rate[False]:,.0f}/s without (baseline, same run); ratio {rate[True] / rate[False]:.2f}x; "
                    f"{args.writes:,} writes in waves of {args.clients}, each twice; {load_note()}",
                    flush=True,
                )
            print(
                f"[savepoints {backend}] reproduce: .venv/bin/python -m bench.savepoints --writes {args.writes} "
                f"--clients {args.clients} --backend {backend}",
                flush=True,
            )


if __name__ == "__main__":
    main()
