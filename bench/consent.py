"""What the consent ledger costs CDP writes that carry consent (docs/privacy.md), on SQLite and
PostgreSQL, in one run.

CDP writes/s with the ledger against the same writes without it (``ProfileService(ledger=False)``,
the only switch), in alternating rounds (on, off, off, on, on, off), a fresh database each: single
writes sent by concurrent threads to the service, as the HTTP route sends them, so the writer
groups them into batches as it does when serving. Every write of the bench dataset
(``bench.generate``: returning people and merges among new ones) gets two consent attributes, so
two ledger rows at least (a merge adds the values it brought).

In-process (no HTTP): the ledger's cost is all in the writer, and the HTTP layer would only add
the same time to both sides. Run: ``python -m bench.consent [--backend sqlite|postgres]
[--writes N] [--threads T]``. The machine is shared: its load is printed with each figure.
"""

from __future__ import annotations

import argparse
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.alternating import on_off, rounds_note
from bench.backends import fresh_database
from bench.generate import records
from bench.machine import command_line, exclusive_run, load_note
from bench.run_import import setup_org
from profilehub.errors import ProfilehubError
from profilehub.profiles import ProfileService, ProfileWrite
from profilehub.store.database import Database

OUT = Path(__file__).resolve().parent / "out"
ANSWERS = ("yes", "no", "true", "false", "optout", "granted")


def consent_writes(count: int) -> list[ProfileWrite]:
    """The bench dataset's writes, each with consent values added to its upsert."""
    pick = random.Random(5)
    out = []
    for r, _, _ in records(count, seed=11):
        upsert = dict(r["upsert"])
        upsert["consent"] = {
            **(upsert.get("consent") or {}),
            "email_optin": pick.choice(ANSWERS),
            "sms_optin": pick.choice(ANSWERS),
        }
        out.append(ProfileWrite(r["orgId"], r["region"], r["ids"], upsert))
    return out


def write_round(backend: str, ledger: bool, writes: list[ProfileWrite], threads: int) -> tuple[float, int]:
    """Writes per second of ``writes``, each sent alone from ``threads`` threads, and the ledger
    rows they left."""
    with fresh_database(backend, OUT) as url:
        setup_org(url)
        db = Database(url)
        service = ProfileService(db, ledger=ledger)
        try:
            service.write_batch(writes[:1], "bench")  # the strategy cached, the writer warm
            start = time.perf_counter()
            with ThreadPoolExecutor(threads) as pool:
                results = list(pool.map(lambda w: service.write_batch([w], "bench")[0], writes[1:]))
            elapsed = time.perf_counter() - start
            with db.read() as conn:
                rows = int(conn.exec_driver_sql("SELECT count(*) FROM consent_ledger").scalar_one())
        finally:
            db.close()
    failed = [r for r in results if isinstance(r, ProfilehubError)]
    if len(failed) > len(results) // 20:
        raise RuntimeError(f"{len(failed)} writes refused: {failed[0]}")
    return (len(writes) - 1) / elapsed, rows


def ledger_cost(backend: str, count: int, threads: int) -> dict[str, Any]:
    writes = consent_writes(count)
    rows = 0

    def one_round(ledger: bool) -> float:
        nonlocal rows
        rate, kept = write_round(backend, ledger, writes, threads)
        if ledger:
            rows = kept
        return rate

    return {**on_off(one_round), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append")
    parser.add_argument("--writes", type=int, default=3000, help="writes per round")
    parser.add_argument("--threads", type=int, default=32, help="concurrent writers")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    with exclusive_run(command_line()):
        print(f"reproduce: {command_line()}")
        for backend in args.backend or ["sqlite", "postgres"]:
            print(f"== {backend}")
            print(f"  {load_note()}")
            cost = ledger_cost(backend, args.writes, args.threads)
            print(
                f"  writes/s, {args.writes} single writes with consent from {args.threads} threads: "
                f"ledger on {cost['on']:.0f}, off {cost['off']:.0f}: {cost['ratio']:.2f}x "
                f"({rounds_note(cost)}; {cost['rows']} ledger rows a round)"
            )
            print(f"  {load_note()}")


if __name__ == "__main__":
    main()
