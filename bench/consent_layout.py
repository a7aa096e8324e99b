"""What the consent ledger's rows cost SQLite by table layout, alone (docs/privacy.md#consent-ledger).

``bench.consent`` measures the ledger's cost to CDP writes/s; this one asks whether another layout
of its rows would make it cheaper. It writes the ``bench.consent`` dataset once through the profile
service (ledger on), reads back the ledger rows each write made, and inserts them again, in the
writer's batches (``--batch`` writes, one transaction and one ``executemany`` each, WAL,
``synchronous=NORMAL`` as the server runs), into a fresh SQLite file per layout:

- ``today``: one row per entry, primary key (org_id, ucid, seq, n) in a rowid table (a table and
  its primary key's index);
- ``without-rowid``: the same key, ``WITHOUT ROWID`` (one B-tree);
- ``json-per-write``: one row per write, its entries as a JSON array, key (org_id, ucid, seq);
- ``json-without-rowid``: the same, ``WITHOUT ROWID``;
- ``today-one-statement``: today's table, but each batch's rows in one statement
  (``INSERT … SELECT … FROM json_each(?)``, the rows as one JSON array) instead of one
  ``executemany`` step per row: SQLite's per-row step releases and takes back the GIL, which the
  writer shares with the request threads.

CPU microseconds per write (the process's CPU time: SQLite runs in-process), best of
``--passes``. Run: ``python -m bench.consent_layout [--writes N] [--batch B] [--passes P]``.
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from collections.abc import Callable
from itertools import groupby
from pathlib import Path
from typing import Any

import orjson

from bench.backends import fresh_database
from bench.consent import OUT, consent_writes
from bench.machine import command_line, exclusive_run, load_note
from bench.run_import import setup_org
from profilehub.profiles import ProfileService
from profilehub.store.database import Database

ENTRY = (
    "org_id BIGINT, ucid VARCHAR(36), seq BIGINT, n INTEGER, ts BIGINT, attribute VARCHAR(200), "
    "value TEXT, actor VARCHAR(100), source VARCHAR(16), PRIMARY KEY (org_id, ucid, seq, n)"
)
PER_WRITE = (
    "org_id BIGINT, ucid VARCHAR(36), seq BIGINT, ts BIGINT, actor VARCHAR(100), entries TEXT, "
    "PRIMARY KEY (org_id, ucid, seq)"
)
Row = tuple[Any, ...]
# A layout: its table's DDL, and one write's ledger rows as that table's rows.
LAYOUTS: dict[str, tuple[str, Callable[[list[Row]], list[Row]]]] = {
    "today": (f"CREATE TABLE ledger ({ENTRY})", lambda rows: rows),
    "without-rowid": (f"CREATE TABLE ledger ({ENTRY}) WITHOUT ROWID", lambda rows: rows),
    "json-per-write": (
        f"CREATE TABLE ledger ({PER_WRITE})",
        lambda rows: [
            (*rows[0][:3], rows[0][4], rows[0][7], orjson.dumps([[r[5], r[6], r[8]] for r in rows]).decode())
        ],
    ),
    "json-without-rowid": (
        f"CREATE TABLE ledger ({PER_WRITE}) WITHOUT ROWID",
        lambda rows: [
            (*rows[0][:3], rows[0][4], rows[0][7], orjson.dumps([[r[5], r[6], r[8]] for r in rows]).decode())
        ],
    ),
    "today-one-statement": (f"CREATE TABLE ledger ({ENTRY})", lambda rows: rows),
}


def ledger_by_write(count: int, batch: int) -> list[list[Row]]:
    """Each write's ledger rows (in ``consent_ledger`` column order), in the order written."""
    writes = consent_writes(count)
    with fresh_database("sqlite", OUT) as url:
        setup_org(url)
        db = Database(url)
        try:
            service = ProfileService(db)
            for start in range(0, len(writes), batch):
                service.write_batch(writes[start : start + batch], "bench")
            with db.read() as conn:
                rows = [
                    tuple(r)
                    for r in conn.exec_driver_sql(
                        "SELECT org_id, ucid, seq, n, ts, attribute, value, actor, source "
                        "FROM consent_ledger ORDER BY seq, n"
                    )
                ]
        finally:
            db.close()
    return [list(group) for _, group in groupby(rows, key=lambda r: r[2])]


def insert_cost(path: Path, layout: str, by_write: list[list[Row]], batch: int) -> float:
    """CPU microseconds per write to insert the ledger in ``layout``, batch by batch."""
    ddl, rows_of = LAYOUTS[layout]
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(ddl)
        batches = [
            [row for rows in by_write[i : i + batch] for row in rows_of(rows)]
            for i in range(0, len(by_write), batch)
        ]
        width = len(batches[0][0])
        marks = ", ".join("?" * width)
        picks = ", ".join(f"value ->> {i}" for i in range(width))
        start = time.process_time()
        for rows in batches:
            conn.execute("BEGIN IMMEDIATE")
            if layout == "today-one-statement":
                conn.execute(
                    f"INSERT INTO ledger SELECT {picks} FROM json_each(?)", (orjson.dumps(rows).decode(),)
                )
            else:
                conn.executemany(f"INSERT INTO ledger VALUES ({marks})", rows)
            conn.execute("COMMIT")
        return (time.process_time() - start) / len(by_write) * 1e6
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=24, help="writes per transaction (the writer's batch)")
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    with exclusive_run(command_line()):
        print(f"reproduce: {command_line()}")
        print(f"  {load_note()}")
        by_write = ledger_by_write(args.writes, args.batch)
        entries = sum(len(rows) for rows in by_write)
        print(
            f"  {len(by_write)} writes with consent, {entries} ledger entries ({entries / len(by_write):.2f} a write)"
        )
        best = {layout: float("inf") for layout in LAYOUTS}
        for _ in range(args.passes):
            for layout in LAYOUTS:  # interleaved, so drifting load falls on every layout alike
                best[layout] = min(
                    best[layout], insert_cost(OUT / "consent_layout.db", layout, by_write, args.batch)
                )
        for layout, us in best.items():
            print(f"  {layout}: {us:.1f} us CPU a write (best of {args.passes})")
        print(f"  {load_note()}")


if __name__ == "__main__":
    main()
