"""The bulk write's rows, table by table, and the second process that loads some of them on SQLite.

Every table's rows come from the groups' spools merged in the table's key order; the change log,
journal, consent ledger and events are numbered on the way (change ids, journal ``seq``s and
event ids in file order, from blocks reserved for the import: ``Numbering``).

SQLite has one writer, and the write phase of a first backfill is that one thread's Python and
SQLite's B-trees, the machine's other cores idle. There the change log, journal, consent ledger
and events (about half the write's rows and bytes) are loaded by a second process into scratch
SQLite files, one a table, while the importer loads the profiles and ids, and the importer copies
each in as soon as it is done with ``INSERT INTO … SELECT * FROM scratch…`` (SQLite moves the rows
as they are stored, without decoding them, into a table that is empty and shaped the same: the
scratch tables are made from the store's own ``CREATE TABLE`` text). The scratch files are read
only by the import's own transaction: the store's all-or-nothing is unchanged.

On PostgreSQL the importer's side of a ``COPY`` (these rows made and encoded, in Python) and the
server's took turns; a worker process makes and encodes every table's rows into files instead
(``encode_copy``), which the importer sends as they grow.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from psycopg import adapt, postgres, pq
from psycopg._copy_base import BinaryFormatter  # the encoder ``Copy`` uses; no public name

from profilehub.bulk.resolve import SPOOL_KEYS, Spools
from profilehub.bulk.spool import merged
from profilehub.store import tables
from profilehub.store.changes import ChangeIdBlock
from profilehub.store.consent_ledger import LEDGER_COLUMNS
from profilehub.store.events import feed_of
from profilehub.store.journal_store import JOURNAL_COLUMNS, UNATTACHED_COLUMNS
from profilehub.store.rows import sqlite_insert_many

PROFILE_COLUMNS = ("org_id", "ucid", "region", "created_ts", "updated_ts", "merged_into", "data")
ID_COLUMNS = ("org_id", "region", "id_type", "value", "ucid", "ts")
CHANGE_COLUMNS = ("org_id", "change_id", "ts", "actor", "entity", "entity_id", "action", "detail")
EVENT_COLUMNS = ("org_id", "event_id", "feed", "type", "region", "ts", "entity_id", "data")

# (table, its spool in ``Spools``, its columns), in the order the write loads them: events last
# (taking their numbers holds the counter row until commit: docs/events.md).
TABLES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("profiles", "profiles", PROFILE_COLUMNS),
    ("profile_ids", "ids", ID_COLUMNS),
    ("changes", "changes", CHANGE_COLUMNS),
    ("profile_writes", "journal", tuple(JOURNAL_COLUMNS)),
    ("journal_unattached", "unattached", UNATTACHED_COLUMNS),
    ("consent_ledger", "ledger", tuple(LEDGER_COLUMNS)),
    ("events", "events", EVENT_COLUMNS),
)
# What the second process loads on SQLite (``load_scratch``).
SCRATCH_TABLES = ("changes", "profile_writes", "consent_ledger", "events")


@dataclass
class Numbering:
    """The numbers the write gives its rows: the k-th write's change id ``change_id(k)``, its
    journal and ledger ``seq`` ``journal_base + k``, its event id ``first_event + k`` less the
    refused writes before it (``skipped``, sorted; they have no event)."""

    org_id: int
    change_id: ChangeIdBlock
    journal_base: int
    skipped: list[int] = field(default_factory=list)
    first_event: int | None = None  # reserved when the events are about to be loaded


def table_blocks(
    table: str,
    spools: Sequence[Spools],
    numbering: Numbering,
    check: Callable[[], None] = lambda: None,
) -> Iterator[list[tuple[Any, ...]]]:
    """``table``'s rows in its key order, numbered, a block at a time; each spool read is
    discarded once read to its end (the table then grows in the database as its spools go).
    ``check`` is called before each block (a stop ends the load there)."""
    name = next(spool for t, spool, _ in TABLES if t == table)
    blocks = merged([getattr(group, name) for group in spools], key=SPOOL_KEYS.get(name))
    if table == "changes":
        change_id = numbering.change_id
        blocks = ([(row[1], change_id(row[0]), *row[2:]) for row in block] for block in blocks)
    elif table in ("profile_writes", "journal_unattached", "consent_ledger"):  # they share its seq
        base = numbering.journal_base
        blocks = ([(*row[:2], base + row[2], *row[3:]) for row in block] for block in blocks)
    elif table == "events":
        blocks = _events(blocks, numbering)
    for block in blocks:
        check()
        yield block
    for group in spools:
        getattr(group, name).discard()


def _events(blocks: Iterator[list[tuple[Any, ...]]], numbering: Numbering) -> Iterator[list[tuple[Any, ...]]]:
    first, skipped, org_id = numbering.first_event, numbering.skipped, numbering.org_id
    assert first is not None, "the event ids are reserved before the events are loaded"
    feeds: dict[str, str] = {}
    for block in blocks:
        yield [
            (
                org_id,
                # The k-th write's event is numbered after the written ones before it.
                first + k - (bisect_left(skipped, k) if skipped else 0),
                feeds.get(kind) or feeds.setdefault(kind, feed_of(kind)),
                kind,
                region,
                ts,
                entity,
                data,
            )
            for k, kind, region, ts, entity, data in block
        ]


def load_scratch(path: Path, table: str, create: str, spools: list[Spools], numbering: Numbering) -> None:
    """In a worker process: make ``path`` a SQLite file holding ``table`` (made by ``create``, the
    store's ``CREATE TABLE`` text) with its rows, as ``table_blocks`` gives them. Nothing in it
    needs to survive a crash (the importer reads it in its transaction or not at all), so it keeps
    no journal and does not sync."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        _load(conn, table, create, spools, numbering)
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorname == "SQLITE_FULL":
            # The work folder's disk, not the store's: said as the spools' own writes say it
            # (``workdir.work_folder`` names the folder).
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
        raise
    finally:
        conn.close()


def _load(
    conn: sqlite3.Connection, table: str, create: str, spools: list[Spools], numbering: Numbering
) -> None:
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    conn.execute(create)
    cursor = conn.cursor()
    columns = next(c for t, _, c in TABLES if t == table)
    sqlite_insert_many(cursor, table, columns, chain.from_iterable(table_blocks(table, spools, numbering)))
    cursor.close()
    conn.execute("COMMIT")


def encode_copy(
    path: Path, table: str, columns: Sequence[str], spools: list[Spools], numbering: Numbering
) -> None:
    """In a worker process: ``table``'s rows (``table_blocks``) as the data of a PostgreSQL binary
    ``COPY`` of ``columns`` (typed by ``copy_types``), written to ``path`` as they are made, a
    piece at a time, for the importer to send as the file grows (``BulkImporter._copy_file``).
    psycopg's own binary formatter encodes them, as a ``Copy`` does on the importer's cursor: this
    process has no connection to lend one."""
    transformer = adapt.Transformer()
    oids = [postgres.types.get_oid(name) for name in copy_types(table, columns)]
    transformer.set_dumper_types(oids, pq.Format.BINARY)
    formatter = BinaryFormatter(transformer)
    with path.open("wb", buffering=0) as out:  # each piece reaches the file as it is made
        for block in table_blocks(table, spools, numbering):
            for row in block:
                if data := formatter.write_row(row):
                    out.write(data)
        out.write(formatter.end())


def copy_types(table: str, columns: Sequence[str]) -> list[str]:
    """The PostgreSQL type of each of ``columns`` of ``table`` (``store.tables``), for a binary
    ``COPY``: the server then takes each value as it is stored instead of parsing text (half the
    server's time on the events' JSON, measured), and psycopg sends it without formatting it."""
    found = tables.metadata.tables[table].c
    names: list[str] = []
    for column in columns:
        kind = found[column].type
        if isinstance(kind, sa.BigInteger):
            names.append("int8")
        elif isinstance(kind, sa.Integer):
            names.append("int4")
        elif isinstance(kind, sa.Boolean):
            names.append("bool")
        elif isinstance(kind, sa.String):  # Text too
            names.append("text")
        else:
            raise TypeError(f"{table}.{column}: no binary COPY type for {kind!r}")
    return names
