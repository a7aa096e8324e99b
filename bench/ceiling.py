"""How fast can the database alone store an import's id rows? The ceiling under the import goal.

``python -m bench.ceiling [--records N] [--batch B]`` writes, for N synthetic records, exactly the
id rows profilehub stores for a record of the benchmark's kind (an email's five hashes, a phone's
three, a device id: nine rows of the ``profile_ids`` shape, hashed values at random places in the
primary key), straight into the database with nothing else: no parsing, no resolution, no profile
or change rows. Each variant prints records/s; the import goal (1,000,000 records in 60 s) needs
16,667/s *in total*, so a variant below that shows the goal is out of reach for that storage
layout on this machine, whatever the Python around it does.

Variants: SQLite in memory (B-tree work only), SQLite on disk as profilehub runs it (WAL,
``synchronous=NORMAL``), the same with bigger batches and fewer checkpoints, PostgreSQL ``COPY``,
and a layout profilehub does not use (a 64-bit fingerprint as an integer key) to show what a
storage redesign could gain.

``--favourable`` adds the most favourable layout we could think of for these rows, to test whether
*any* redesign of the id store could reach the goal on these two databases: one 8-byte integer
key per id (a fingerprint of type and value) as the table's only B-tree, the owner and timestamp
as two integers beside it, the keys hashed and sorted before the clock starts, 10,000 records a
transaction. SQLite gets a 200 MB page cache (the import's memory goal is 300 MB) and rare
checkpoints; PostgreSQL gets binary ``COPY`` and ``synchronous_commit = off``. It gives up what
profilehub needs (the value itself for collisions and erasure, the owner index for merges), so it
is a bound from above, not a design.

``--compact`` adds a compact id layout as a real one would need it, both of its tables: the lookup
(``id_lookup``: a 64-bit fingerprint of type and value as the only key, the owner beside it) and
the values themselves (``id_values``: clustered by owner, ``WITHOUT ROWID``, keyed by owner, type
and value, holding the timestamp), which is also the layout's owner index (a merge finds a
profile's ids there). It is written the way profilehub writes (its transaction size, its SQLite
settings), with the owner as its ucid text and as an integer. It answers whether that redesign
alone is worth a migration.

Like for like: every variant gets the same ids of the same records, made (and, for fingerprint
keys, hashed) before the clock starts, as profilehub's import workers prepare ids ahead of the
writer; within a transaction every table's rows go in in that table's key order, as profilehub's
own flush writes them (``BatchStore`` sorts the ids it writes). Only ``--favourable`` leaves out
what a real layout needs (the values, the owner index): it is labelled a bound, not a layout.
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from bench.backends import fresh_database
from bench.machine import command_line, exclusive_run, load_note
from profilehub.store.tables import profile_ids

ID_TYPES = (
    "email_sha256_lowercase",
    "email_sha256_uppercase",
    "email_md5_lowercase",
    "email_md5_uppercase",
    "email_sha1_lowercase",
    "cellphone_number_e164_sha256",
    "cellphone_number_e164_md5",
    "cellphone_number_e164_sha1",
    "AdId",
)
_ALGORITHM = {"sha256": hashlib.sha256, "md5": hashlib.md5, "sha1": hashlib.sha1}
IdRow = tuple[int, str, str, str, str, int]


def ddl(dialect: str) -> list[str]:
    """profilehub's own ``profile_ids`` table and its index, as that database's DDL."""
    compiled = (postgresql if dialect == "postgresql" else sqlite).dialect()
    return [
        str(sa.schema.CreateTable(profile_ids).compile(dialect=compiled)),
        *(str(sa.schema.CreateIndex(index).compile(dialect=compiled)) for index in profile_ids.indexes),
    ]


def _value(id_type: str, n: int) -> str:
    if id_type == "AdId":
        return str(uuid.UUID(int=n * 0x9E3779B97F4A7C15 % (1 << 128)))
    algorithm = next(a for name, a in _ALGORITHM.items() if name in id_type)
    return algorithm(f"{id_type}:{n}".encode()).hexdigest()


def batches(records: int, batch: int) -> Iterator[list[IdRow]]:
    """Nine id rows per record; ucids increase, as profilehub's time-ordered ucids do. Each batch in
    the table's key order (org, region, idType, value), as profilehub's flush inserts them."""
    for start in range(0, records, batch):
        rows: list[IdRow] = []
        for n in range(start, min(records, start + batch)):
            ucid = str(uuid.UUID(int=(n + 1) << 64))
            rows += [(1, "EU", t, _value(t, n), ucid, n) for t in ID_TYPES]
        yield sorted(rows)


def _fingerprint(id_type: str, value: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(f"{id_type}:{value}".encode(), digest_size=8).digest(), "big", signed=True
    )


def key_batches(records: int, batch: int, with_value: bool = False) -> Iterator[list[tuple[Any, ...]]]:
    """The same ids as ``batches``, as (fingerprint, [value,] owner number, ts) rows in key order."""
    for rows in batches(records, batch):
        yield sorted((_fingerprint(r[2], r[3]), *((r[3],) if with_value else ()), r[5], r[5]) for r in rows)


CompactBatch = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]


def compact_batches(records: int, batch: int, owner_text: bool = False) -> Iterator[CompactBatch]:
    """The same ids as ``batches`` for the compact layout's two tables, each in its key order:
    lookup rows (fingerprint, owner) and value rows (org, region, owner, idType, value, ts). The
    owner is the record's ucid text, or its number (an integer profile key) without ``owner_text``."""
    for rows in batches(records, batch):
        lookup = sorted((_fingerprint(r[2], r[3]), r[4] if owner_text else r[5]) for r in rows)
        values = sorted((r[0], r[1], r[4] if owner_text else r[5], r[2], r[3], r[5]) for r in rows)
        yield lookup, values


def _timed(
    write: Callable[[Any], None],
    records: int,
    batch: int,
    rows_of: Callable[[int, int], Iterator[Any]] | None = None,
) -> float:
    """Records/s of ``write`` alone (making the rows is not timed)."""
    spent = 0.0
    for rows in (rows_of or batches)(records, batch):
        started = time.perf_counter()
        write(rows)
        spent += time.perf_counter() - started
    return records / spent


def _sqlite(path: str, checkpoint_pages: int = 1000) -> sqlite3.Connection:
    """A connection with profilehub's own SQLite settings (WAL, ``synchronous=NORMAL``) on a file."""
    conn = sqlite3.connect(path, isolation_level=None)
    if path != ":memory:":
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA wal_autocheckpoint={checkpoint_pages}")
    return conn


def _transaction(conn: sqlite3.Connection, work: Iterable[tuple[str, list[Any]]]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    for sql, rows in work:
        conn.executemany(sql, rows)
    conn.execute("COMMIT")


def sqlite_rate(
    path: str, records: int, batch: int, checkpoint_pages: int = 1000, fingerprint: bool = False
) -> float:
    conn = _sqlite(path, checkpoint_pages)
    rows_of: Callable[[int, int], Iterator[Any]]
    if fingerprint:
        # One integer key per id (first 8 bytes of a hash of type and value), the value kept for
        # checking, the owner as an integer: about a third of the bytes per index entry.
        conn.execute("CREATE TABLE ids (fp INTEGER PRIMARY KEY, value TEXT NOT NULL, owner INTEGER NOT NULL)")
        conn.execute("CREATE INDEX ix_ids_owner ON ids (owner)")
        sql = "INSERT INTO ids VALUES (?, ?, ?)"

        def rows_of(records: int, batch: int) -> Iterator[list[tuple[Any, ...]]]:
            for rows in key_batches(records, batch, with_value=True):
                yield [(fp, value, owner) for fp, value, owner, _ in rows]
    else:
        for statement in ddl("sqlite"):
            conn.execute(statement)
        sql = "INSERT INTO profile_ids VALUES (?, ?, ?, ?, ?, ?)"
        rows_of = batches

    try:
        return _timed(lambda rows: _transaction(conn, [(sql, rows)]), records, batch, rows_of)
    finally:
        conn.close()


def sqlite_key_rate(path: str, records: int, batch: int, with_value: bool = False) -> float:
    """The most favourable layout (``--favourable``): id rows keyed by fingerprint alone
    (``key_batches``), with the most favourable settings (a 200 MB page cache, rare checkpoints).
    No values table, no owner index: a bound, not a layout."""
    conn = _sqlite(path, 50_000)
    conn.execute("PRAGMA cache_size=-200000")
    # with_value: the id's value beside its key (what a lookup would need to tell two ids of one
    # fingerprint apart): only the row grows.
    columns = ["fp INTEGER PRIMARY KEY", *(["value TEXT NOT NULL"] if with_value else [])]
    columns += ["owner INTEGER NOT NULL", "ts INTEGER NOT NULL"]
    conn.execute(f"CREATE TABLE ids ({', '.join(columns)})")
    sql = f"INSERT INTO ids VALUES ({', '.join('?' * len(columns))})"

    def rows_of(records: int, batch: int) -> Iterator[list[tuple[Any, ...]]]:
        return key_batches(records, batch, with_value)

    try:
        return _timed(lambda rows: _transaction(conn, [(sql, rows)]), records, batch, rows_of)
    finally:
        conn.close()


def compact_ddl(owner_text: bool, dialect: str = "sqlite") -> list[str]:
    """The compact layout's two tables: the fingerprint lookup, and the values clustered by owner
    (which is also the layout's owner index: a merge reads and moves a profile's ids there)."""
    big = "bigint" if dialect == "postgresql" else "INTEGER"
    owner = "text" if owner_text else big
    clustered = "" if dialect == "postgresql" else " WITHOUT ROWID"
    return [
        f"CREATE TABLE id_lookup (fp {big} PRIMARY KEY, owner {owner} NOT NULL)",
        f"CREATE TABLE id_values (org_id {big} NOT NULL, region text NOT NULL, owner {owner} NOT NULL, "
        f"id_type text NOT NULL, value text NOT NULL, ts {big} NOT NULL, "
        f"PRIMARY KEY (org_id, region, owner, id_type, value)){clustered}",
    ]


def sqlite_compact_rate(path: str, records: int, batch: int, owner_text: bool = False) -> float:
    """The compact layout, both tables, with profilehub's SQLite settings (``--compact``)."""
    conn = _sqlite(path)
    for statement in compact_ddl(owner_text):
        conn.execute(statement)

    def write(tables: CompactBatch) -> None:
        lookup, values = tables
        _transaction(
            conn,
            [
                ("INSERT INTO id_lookup VALUES (?, ?)", lookup),
                ("INSERT INTO id_values VALUES (?, ?, ?, ?, ?, ?)", values),
            ],
        )

    def rows_of(records: int, batch: int) -> Iterator[CompactBatch]:
        return compact_batches(records, batch, owner_text)

    try:
        return _timed(write, records, batch, rows_of)
    finally:
        conn.close()


def postgres_favourable_rate(url: str, records: int, batch: int) -> float:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("CREATE TABLE ids (fp bigint PRIMARY KEY, owner bigint NOT NULL, ts bigint NOT NULL)")
        conn.commit()

        def write(rows: list[tuple[Any, ...]]) -> None:
            with conn.cursor() as cur, cur.copy("COPY ids FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "int8", "int8"])
                for row in rows:
                    copy.write_row(row)
            conn.commit()

        return _timed(write, records, batch, key_batches)


def postgres_rate(url: str, records: int, batch: int) -> float:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        for statement in ddl("postgresql"):
            conn.execute(statement)
        conn.commit()

        def write(rows: list[IdRow]) -> None:
            with conn.cursor() as cur, cur.copy("COPY profile_ids FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            conn.commit()

        return _timed(write, records, batch)


def postgres_compact_rate(url: str, records: int, batch: int, owner_text: bool = True) -> float:
    """The compact layout's two tables by ``COPY``, as profilehub's PostgreSQL flush writes new rows."""
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        for statement in compact_ddl(owner_text, "postgresql"):
            conn.execute(statement)
        conn.commit()

        def write(tables: CompactBatch) -> None:
            with conn.cursor() as cur:
                for table, rows in zip(("id_lookup", "id_values"), tables, strict=True):
                    with cur.copy(f"COPY {table} FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
            conn.commit()

        def rows_of(records: int, batch: int) -> Iterator[CompactBatch]:
            return compact_batches(records, batch, owner_text)

        return _timed(write, records, batch, rows_of)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling", description=__doc__)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument(
        "--batch", type=int, default=2000, help="Records per transaction (the importer's is 2,000)."
    )
    parser.add_argument(
        "--favourable", action="store_true", help="Also the most favourable integer-key layout (see above)."
    )
    parser.add_argument(
        "--compact",
        action="store_true",
        help="Also a compact layout (lookup and values tables), written as profilehub writes (see above).",
    )
    parser.add_argument("--no-postgres", action="store_true", help="SQLite variants only.")
    args = parser.parse_args(argv)
    with exclusive_run(command_line()):
        run(args)


def run(args: argparse.Namespace) -> None:
    n, b = args.records, args.batch
    print(
        f"# id rows alone: {n:,} records x {len(ID_TYPES)} ids, {b:,} records per transaction, every "
        f"table's rows in its key order; goal 16,667 records/s; {load_note()}"
    )

    def report(name: str, rate: float) -> None:
        print(f"[ceiling] {name}: {rate:,.0f} records/s; {load_note()}", flush=True)

    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as tmp:
        variants: list[tuple[str, Callable[[], float]]] = [
            ("SQLite in memory (B-tree work only)", lambda: sqlite_rate(":memory:", n, b)),
            ("SQLite file, WAL, as profilehub runs it", lambda: sqlite_rate(f"{tmp}/a.db", n, b)),
            (
                f"SQLite file, WAL, {5 * b:,} records per transaction, checkpoint every 50,000 pages",
                lambda: sqlite_rate(f"{tmp}/b.db", n, 5 * b, checkpoint_pages=50_000),
            ),
            (
                "SQLite file, WAL, integer fingerprint key with the value and an owner index",
                lambda: sqlite_rate(f"{tmp}/c.db", n, b, fingerprint=True),
            ),
        ]
        if args.compact:
            variants += [
                (
                    "compact layout (lookup fingerprint -> ucid, values clustered by ucid), SQLite file "
                    "as profilehub runs it",
                    lambda: sqlite_compact_rate(f"{tmp}/f.db", n, b, owner_text=True),
                ),
                (
                    "compact layout with an integer owner (needs an integer profile key too), SQLite "
                    "file as profilehub runs it",
                    lambda: sqlite_compact_rate(f"{tmp}/g.db", n, b),
                ),
            ]
        if args.favourable:
            variants += [
                (
                    "BOUND, not a layout (no values, no owner index, 10,000 records a transaction, "
                    "200 MB cache): SQLite in memory",
                    lambda: sqlite_key_rate(":memory:", n, 10_000),
                ),
                ("BOUND, not a layout: SQLite file, WAL", lambda: sqlite_key_rate(f"{tmp}/d.db", n, 10_000)),
                (
                    "BOUND, not a layout, with the id's value beside its key: SQLite file, WAL",
                    lambda: sqlite_key_rate(f"{tmp}/e.db", n, 10_000, with_value=True),
                ),
            ]
        for name, variant in variants:
            report(name, variant())
    if not args.no_postgres:
        with fresh_database("postgres", Path(tempfile.gettempdir())) as url:
            report("PostgreSQL COPY into today's layout (profile_ids)", postgres_rate(url, n, b))
            if args.compact:  # its own tables in the same fresh database
                report("compact layout, PostgreSQL COPY into both tables", postgres_compact_rate(url, n, b))
            if args.favourable:
                report(
                    "BOUND, not a layout: PostgreSQL binary COPY, synchronous_commit = off",
                    postgres_favourable_rate(url, n, 10_000),
                )
    extra = "".join(
        f" --{flag.replace('_', '-')}"
        for flag in ("compact", "favourable", "no_postgres")
        if getattr(args, flag)
    )
    print(f"[ceiling] reproduce: .venv/bin/python -m bench.ceiling --records {n} --batch {b}{extra}")


if __name__ == "__main__":
    main()
