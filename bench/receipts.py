"""What an erasure's signed receipt costs ``_delete`` (docs/privacy.md), on SQLite and PostgreSQL.

Erasures/s with receipts against the same erasures without them, in alternating rounds (on, off,
off, on, on, off), a fresh database each. "Off" replaces the two receipt steps of the erasure (the
counts read before the delete, and signing and storing the receipt) with nothing: the one thing
that differs. Each round writes ``--people`` people (two writes each, so a merge: two profiles,
their ids and journal) and then erases them one at a time by email from ``--threads`` threads, as
concurrent ``_delete`` requests would, in-process (the HTTP layer adds the same to both sides).

Run: ``python -m bench.receipts [--backend sqlite|postgres] [--people N] [--threads T]``. The
machine is shared: its load is printed with each figure.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

from bench.alternating import on_off, rounds_note
from bench.backends import fresh_database
from bench.machine import command_line, exclusive_run, load_note
from profilehub import profiles
from profilehub.orgs import create_org
from profilehub.profiles import ProfileService, ProfileWrite
from profilehub.store.database import Database

OUT = Path(__file__).resolve().parent / "out"
ORG_ID = 4242


@contextmanager
def receipts_off() -> Iterator[None]:
    def no_receipt(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"receiptId": kwargs["receipt_id"]}

    with (
        # Nothing counted, in the shape the erasure adds to (the events of profiles it was
        # unmerged from are counted as they are deleted).
        mock.patch.object(profiles, "erasure_counts", lambda *a: {"events": 0}),
        mock.patch.object(profiles, "issue_receipt", no_receipt),
    ):
        yield


def erase_round(backend: str, receipts: bool, people: int, threads: int) -> float:
    """Erasures per second of ``people`` people, one ``_delete`` each."""
    with fresh_database(backend, OUT) as url:
        db = Database(url)
        try:
            db.write(lambda c: create_org(c, ORG_ID, "Bench", ["EU"]))
            service = ProfileService(db)
            emails = [f"p{i}.{uuid.uuid4().hex[:6]}@example.org" for i in range(people + 1)]
            writes = [
                ProfileWrite(ORG_ID, "EU", {"email": e}, {"profile": {"n": i}}) for i, e in enumerate(emails)
            ]
            writes += [
                ProfileWrite(ORG_ID, "EU", {"email": e, "crm_id": f"c{i}"}, {"consent": {"sms": "yes"}})
                for i, e in enumerate(emails)
            ]
            service.write_batch(writes, "bench")
            with receipts_off() if not receipts else _nothing():
                service.delete(ORG_ID, "EU", {"email": [emails[0]]}, "bench")  # key made, writer warm
                start = time.perf_counter()
                with ThreadPoolExecutor(threads) as pool:
                    done = list(
                        pool.map(lambda e: service.delete(ORG_ID, "EU", {"email": [e]}, "bench"), emails[1:])
                    )
                elapsed = time.perf_counter() - start
        finally:
            db.close()
    if any(d["deletedProfiles"] != 1 for d in done):
        raise RuntimeError("an erasure did not find its person")
    return people / elapsed


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append")
    parser.add_argument("--people", type=int, default=300, help="people erased per round")
    parser.add_argument("--threads", type=int, default=8, help="concurrent erasures")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    with exclusive_run(command_line()):
        print(f"reproduce: {command_line()}")
        for backend in args.backend or ["sqlite", "postgres"]:
            print(f"== {backend}")
            print(f"  {load_note()}")
            cost = on_off(lambda receipts, b=backend: erase_round(b, receipts, args.people, args.threads))
            print(
                f"  erasures/s, {args.people} one-person _delete calls from {args.threads} threads: "
                f"receipts on {cost['on']:.0f}, off {cost['off']:.0f}: {cost['ratio']:.2f}x ({rounds_note(cost)})"
            )
            print(f"  {load_note()}")


if __name__ == "__main__":
    main()
