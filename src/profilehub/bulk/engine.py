"""``run_bulk_import``: read and prepare the whole file, then resolve and write it in one transaction.

Phases, each timed in ``BulkSummary.phases``:

1. **prepare**: every record read by the online importer's readers (NDJSON, CSV with ``--map``),
   validated by the online parser (``parse_write``) and its ids normalised and hashed
   (``prepare_write``) in worker processes. A refused record goes to the rejects file exactly as
   online; the prepared writes go to a file, and only their ids' 64-bit keys stay in memory.
2. **link**: the writes' ids coded as integers and the connected components of records and ids
   found (``bulk.graph``): components are independent, so each can be resolved on its own. Which
   components resolve in closed form is decided here (``resolve.simple_components``).
3. **resolve** (in the writer's transaction, holding the locks of the scopes written): the
   components that touch a stored profile or name a ``ucid`` are replayed in file order against
   the store, through the online write path's own storage (``profile_storage``). The others
   resolve group by group in memory (``bulk.resolve``: simple components in closed form, the rest
   replayed through the identity core's ``apply_write``), their writes read from the group's file
   and their rows spooled to a temporary folder; all at the import's one time ``at``.
4. **write**: the spooled rows go in with ``COPY`` (PostgreSQL) or multi-row ``INSERT``s (SQLite), the
   events numbered last. Everything is one transaction: an interrupted or failed run is rolled
   back and leaves nothing.
"""

from __future__ import annotations

import heapq
import math
import resource
import threading
import time
import uuid
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from itertools import accumulate, chain, islice
from operator import attrgetter
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson
from numpy.typing import NDArray
from sqlalchemy.engine import Connection

from profilehub import collector
from profilehub.bulk.graph import CodeFile, bucket_keys, code_buckets, components
from profilehub.bulk.interrupted import BulkInterrupted
from profilehub.bulk.load import (
    EVENT_COLUMNS,
    SCRATCH_TABLES,
    TABLES,
    Numbering,
    copy_types,
    encode_copy,
    load_scratch,
    table_blocks,
)
from profilehub.bulk.prepare import PreparedChunk, prepare_chunk, prepare_lines
from profilehub.bulk.resolve import (
    Recorded,
    Refused,
    Spools,
    Tally,
    read_writes,
    resolve_file,
    resolve_payload,
    simple_components,
    spool_log,
    worker_ready,
)
from profilehub.bulk.spool import FRAME_BYTES, frame_bytes
from profilehub.bulk.workdir import work_folder
from profilehub.errors import Conflict, ProfilehubError, error_body
from profilehub.identity.normalize import Identifier
from profilehub.identity.resolve import apply_write
from profilehub.identity.strategy import Strategy
from profilehub.identity.ucid import UcidBlock
from profilehub.ingest import checkpoint as checkpoints
from profilehub.ingest.cdp import CdpSink
from profilehub.ingest.reader import NdjsonLine, SourceRecord
from profilehub.ingest.runner import (
    EARLY_STOP_RECORDS,
    ImportStopped,
    ImportSummary,
    Progress,
    RecordSource,
    WorkerPool,
    _reason,
    _stop_on_interrupt,
    _stop_signals_blocked,
    carried_suppressed,
    default_workers,
    feeding_switches,
    stop_on_terminate,
    worker_pool,
)
from profilehub.profiles import WriteResult
from profilehub.store.backfill_journal import ROLLBACK, written_once
from profilehub.store.changes import ChangeIdBlock, now_ms
from profilehub.store.database import OnceJob, lock_scope, savepoint
from profilehub.store.events import reserve_event_ids
from profilehub.store.journal_store import CLOCK
from profilehub.store.profile_storage import profile_storage
from profilehub.store.rows import sqlite_insert_many
from profilehub.store.statistics import analyse_before_lookups

# Records per job handed to a worker process: large enough that pickling is a small share.
PREPARE_CHUNK = 2000
# Chunks (and, resolving, groups) submitted to each worker process and not yet taken back: one
# it works on and one waiting, so that it never waits for this thread to finish its own.
PREPARE_AHEAD = 2
# Chunks prepared and not yet taken (held in file order behind a worker's) before this thread
# waits for the first: bounds what a slow worker makes the importer hold.
PREPARE_HELD = 16
# Writes resolved in memory at a time (whole components): bounds the resolver's memory.
GROUP_WRITES = 20_000
# Lines of the writes file read at a time when the scope already holds profiles (``_mark_stored``).
LOOKUP_CHUNK = 20_000


@dataclass
class BulkSummary(ImportSummary):
    """The online importer's summary, and what the bulk path adds: its clock, its phases' times
    (seconds), how its writes were resolved and the peak resident memory of the importer and of
    its worker processes."""

    at: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    components: int = 0
    replayed_in_store: int = 0  # writes of components touching stored profiles or naming a ucid
    resolved_in_memory: int = 0
    closed_form: int = 0  # of those in memory, writes of simple components (no replay)
    peak_rss_bytes: int = 0
    peak_rss_workers_bytes: int = 0
    # The importer's peak RSS at the end of each phase (where memory goes).
    peak_rss_by_phase: dict[str, int] = field(default_factory=dict)
    # SQLite: the journal the transaction wrote through (``store.backfill_journal``); None on PostgreSQL.
    journal: str | None = None
    # The phase running now (prepare, link, resolve, write, commit: docs/bulk.md), for a progress
    # display: the file is read to its end when preparing ends, and the phases after it take most
    # of a large import's time.
    running: str = ""

    def begin(self, phase: str) -> float:
        """``phase`` starts now: it is the one ``running``; its start (``time.monotonic``) for ``mark``."""
        self.running = phase
        return time.monotonic()

    def mark(self, phase: str, began: float) -> None:
        self.phases[phase] = time.monotonic() - began
        self.peak_rss_bytes = _peak_rss()
        self.peak_rss_by_phase[phase] = self.peak_rss_bytes

    def note_workers(self, pool: object) -> None:
        """After a pool of worker processes (``worker_pool``) ended: the largest one so far."""
        if isinstance(pool, WorkerPool):
            self.peak_rss_workers_bytes = max(self.peak_rss_workers_bytes, pool.peak_rss_bytes)


def _count(summary: BulkSummary, tally: Tally) -> None:
    summary.created += tally.created
    summary.updated += tally.updated
    summary.over_id_limit += tally.over_id_limit


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


@dataclass
class _Reject:
    line: int
    raw: str
    body: dict[str, Any]
    reason: str


class _Rejects:
    """The records refused while preparing, in file order, kept in a file of the import's folder
    until the rejects file is written: each is its record as read and an error body (about 1 KB),
    which in memory would grow with a file's refused records (a gigabyte for a million)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._file: BinaryIO | None = None

    def append(self, reject: _Reject) -> None:
        if self._file is None:
            self._file = self.path.open("ab", buffering=1 << 16)
        self.count += 1
        self._file.write(orjson.dumps([reject.line, reject.raw, reject.body, reject.reason]) + b"\n")

    def __iter__(self) -> Iterator[_Reject]:
        if self._file is not None:
            self._file.close()
            self._file = None
        if not self.count:
            return
        with self.path.open("rb") as f:
            for line in f:
                yield _Reject(*orjson.loads(line))


class _Records:
    """A chunk of records as the import's reader (``RecordSource``) read them, prepared by
    ``prepare_chunk``."""

    def __init__(self, records: list[SourceRecord]) -> None:
        self.records = records
        self.lines = [r.line for r in records]
        self.end = records[-1].end_offset

    def raw(self, n: int) -> str:
        return self.records[n].raw

    def error(self, n: int) -> str:
        return self.records[n].error or "unreadable record"

    def job(self) -> tuple[Callable[..., PreparedChunk], tuple[Any, ...]]:
        return prepare_chunk, ([r.data for r in self.records],)


class _Lines:
    """A chunk of NDJSON lines as ``ingest.reader.ndjson_lines`` split them, read and prepared by
    ``prepare_lines`` where they are prepared (a worker process, mostly): the importer neither
    parses them nor sends parsed records across."""

    def __init__(self, lines: list[NdjsonLine]) -> None:
        self.lines = [number for number, _, _, _ in lines]
        self.texts = [text for _, _, text, _ in lines]
        # the lines over the API's body limit, by place: refused unread, as ``read_ndjson`` does
        self.too_large = {n: why for n, (_, _, _, why) in enumerate(lines) if why}
        self.end = lines[-1][1]

    def raw(self, n: int) -> str:
        return self.texts[n].decode("utf-8", errors="replace")  # as ``read_ndjson`` keeps it

    def error(self, n: int) -> str:
        return "unreadable record"  # ``prepare_lines`` says why

    def job(self) -> tuple[Callable[..., PreparedChunk], tuple[Any, ...]]:
        return prepare_lines, (self.lines, self.texts, self.too_large)


_Chunk = _Records | _Lines
# An NDJSON file's lines from its start, blank ones left out (``ingest.reader.ndjson_lines``)
LineSource = Callable[[], Iterator[NdjsonLine]]


class _Plan:
    """What the transaction keeps of the file in memory, small enough for ten million records: per
    write, its ids' idTypes (``types[offsets[k]:offsets[k + 1]]``) and its line in the file; the
    ucid, the record as read and whether an id was suppressed, of the few writes that have them.
    The ids' 64-bit keys (``resolve.id_key``, in the same places as the idTypes) go to a file
    (``keys_path``, read a chunk at a time by the link: 530 MB at ten million records, which
    held in memory were half of the importer's at the end of preparing). The prepared writes
    themselves go to a file in file order (one line each, ``resolve.write_line``), which the
    transaction splits by group and reads back a group at a time (``resolve.read_writes``)."""

    def __init__(self, org_id: int, actor: str, strategy: Strategy, folder: Path) -> None:
        self.org_id = org_id
        self.actor = actor
        self.strategy_version = strategy.version
        self.type_names = sorted(strategy.id_types)  # idType codes, as ``prepare_chunk`` made them
        self.regions: set[str] = set()
        self.offsets = array("q", [0])
        self.keys_path = folder / "keys.bin"
        self._keys: BinaryIO | None = self.keys_path.open("wb", buffering=1 << 20)
        # idType codes go up to len(type_names) (unknown): a byte each for any real strategy (64-bit,
        # 60 MB more at a million records, 600 MB at ten million)
        self.types = array("b" if len(self.type_names) < 127 else "q")
        self.ucids: dict[int, str] = {}
        self.suppressed: set[int] = set()  # writes carrying a suppressed id (written without it)
        # each write's line in the file: 32-bit (40 MB at ten million records, not 80), 64-bit
        # only past four billion lines
        self.lines = array("I")
        self.raw: dict[int, str] = {}  # the record as read, of writes that may be refused (ucid)
        self.rejects = _Rejects(folder / "rejects.jsonl")
        self.path = folder / "writes.jsonl"
        self._file: BinaryIO | None = self.path.open("wb", buffering=1 << 20)
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def add(self, chunk: _Chunk, prepared: PreparedChunk) -> None:
        """The written records of ``chunk`` (those ``prepared`` did not refuse), in order."""
        refused = prepared.refused
        numbers = chunk.lines
        written = (
            [(n, line) for n, line in enumerate(numbers) if n not in refused]
            if refused
            else list(enumerate(numbers))
        )
        base = self.count
        self.count += len(written)
        if numbers[-1] > 0xFFFFFFFF and self.lines.typecode == "I":
            self.lines = array("q", self.lines)
        self.lines.extend([line for _, line in written])
        assert self._keys is not None
        self._keys.write(prepared.keys)  # the array's bytes: int64 values, as the link reads them
        types = prepared.types
        self.types.extend(
            types if types.typecode == self.types.typecode else array(self.types.typecode, types)
        )
        self.offsets.extend(islice(accumulate(prepared.counts, initial=self.offsets[-1]), 1, None))
        self.regions.update(prepared.regions)
        if prepared.ucids or prepared.suppressed:
            k_of = {n: base + j for j, (n, _) in enumerate(written)}
            for n, ucid in prepared.ucids.items():
                self.ucids[k_of[n]] = ucid
                self.raw[k_of[n]] = chunk.raw(n)
            self.suppressed.update(k_of[n] for n in prepared.suppressed)
        assert self._file is not None
        # each line as ``resolve.write_line`` makes it: ``[k,`` and its body
        self._file.write(b"".join([b"[%d,%s\n" % (base + j, body) for j, body in enumerate(prepared.bodies)]))

    def done_adding(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._keys is not None:
            self._keys.close()
            self._keys = None

    def split(self, folder: Path, group_of: Any, groups: int) -> list[Path]:
        """The writes file split into ``groups`` files by ``group_of[k]`` (-1: the last file, the
        writes replayed against the store), each in file order; their paths."""
        paths = [folder / f"writes-{g}.jsonl" for g in range(groups)] + [folder / "writes-store.jsonl"]
        outputs = [p.open("wb", buffering=1 << 16) for p in paths]
        try:
            with self.path.open("rb") as f:
                start = 0
                while start < self.count:
                    # a slice at a time: a Python list of ten million ints would take 360 MB
                    part = group_of[start : start + 1_000_000].tolist()
                    for g in part:
                        outputs[g].write(f.readline())
                    start += len(part)
        finally:
            for out in outputs:
                out.close()
        return paths


@dataclass
class _Linked:
    """What the link phase found (``BulkImporter._link``): each write's component (``label``),
    which components are simple, and where each id occurrence's code (in the writes file's order)
    and each id's component wait (read only when the scope already holds profiles, ``ids``)."""

    label: NDArray[np.integer[Any]]
    simple: NDArray[np.bool_]
    count: int
    codes_path: Path
    labels_path: Path

    def ids(self) -> tuple[NDArray[np.integer[Any]], NDArray[np.integer[Any]]]:
        """Each id occurrence's code (the writes' ids in file order, as ``_Plan.keys_path`` holds their keys;
        a code is the place of the id's key among the distinct keys, sorted), and each id's
        component by code: mapped from their files, so only the pages read are loaded."""
        return np.load(self.codes_path, mmap_mode="r"), np.load(self.labels_path, mmap_mode="r")


class _Again(Exception):
    """A write was refused while it applied: roll back and apply the rest again without it."""


# A table holding at most this many rows, all of the import's own org (its set-up entries, a few
# writes), counts as empty for ``_indexes_after_load``: rebuilding its indexes costs nothing.
_FEW_ROWS = 10_000


def _secondary_indexes(conn: Connection, table: str) -> list[tuple[str, str]]:
    """(name, definition) of each index of ``table`` that neither is its primary key nor enforces
    uniqueness: dropping those changes no answer a load gives, only when the work is done."""
    if conn.dialect.name == "postgresql":
        return [
            (str(name), str(definition))
            for name, definition in conn.exec_driver_sql(
                "SELECT c.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x "
                "JOIN pg_class c ON c.oid = x.indexrelid "
                "WHERE x.indrelid = %s::regclass AND NOT x.indisunique AND NOT x.indisprimary "
                "ORDER BY c.relname",
                (table,),
            )
        ]
    created = {
        str(row[1])
        for row in conn.exec_driver_sql(f"PRAGMA index_list({table})")
        if not row[2] and row[3] == "c"
    }
    return [
        (str(name), str(sql))
        for name, sql in conn.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL "
            "ORDER BY name",
            (table,),
        )
        if name in created
    ]


def _empty_for(conn: Connection, table: str, org_id: int | None) -> bool:
    """Whether ``table`` holds no rows, or (``org_id`` given) at most ``_FEW_ROWS``, all of that org."""
    held = conn.exec_driver_sql(f"SELECT org_id FROM {table} LIMIT {_FEW_ROWS + 1}").all()
    if org_id is None:
        return not held
    return len(held) <= _FEW_ROWS and all(row[0] == org_id for row in held)


@contextmanager
def _indexes_after_load(
    conn: Connection, table: str, org_id: int | None, phases: dict[str, float] | None
) -> Iterator[None]:
    """Into a table that holds nothing yet (``_empty_for``: the first backfill of a store), every
    secondary index is dropped before the load and built again after it, in the same transaction
    (a rollback restores it): one sort per index instead of a B-tree insert per row, the ucid
    indexes' at a random place. Into a table that holds other rows they stay: rebuilding them
    would cost every row, and dropping one blocks every other transaction that reads the table
    (on PostgreSQL, until the commit)."""
    if not _empty_for(conn, table, org_id):
        yield
        return
    # (drop, create) statements
    rebuilt = [(f"DROP INDEX {name}", definition) for name, definition in _secondary_indexes(conn, table)]
    if conn.dialect.name == "postgresql":
        # The primary key too (PostgreSQL can drop and add it back as a constraint; SQLite cannot):
        # ~30% of the id rows' server time, measured. A duplicate key then fails the ADD at the
        # end of the load instead of its row: the same error, nothing written either way.
        for name, definition in conn.exec_driver_sql(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype = 'p'",
            (table,),
        ):
            rebuilt.insert(
                0,
                (
                    f"ALTER TABLE {table} DROP CONSTRAINT {name}",
                    f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}",
                ),
            )
    for drop, _ in rebuilt:
        conn.exec_driver_sql(drop)
    yield
    began = time.monotonic()
    for _, create in rebuilt:
        conn.exec_driver_sql(create)
    if phases is not None and rebuilt:
        phases[f"index_{table}"] = time.monotonic() - began


def _stream_rows(
    conn: Connection,
    table: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    phases: dict[str, float] | None = None,
    org_id: int | None = None,
) -> None:
    """``store.rows.insert_rows`` for rows read as they go (from a spool), the secondary indexes
    built after the load into a table that holds nothing yet (``_indexes_after_load``; with
    ``org_id``, a few rows of that org count as nothing); the time it took (index builds
    included) in ``phases["write_<table>"]``."""
    began = time.monotonic()
    try:
        with _indexes_after_load(conn, table, org_id, phases):
            _insert(conn, table, columns, rows)
    finally:
        if phases is not None:
            phases[f"write_{table}"] = time.monotonic() - began


# PostgreSQL's encoded load (``BulkImporter._write_encoded``): the tables during whose load the
# events are encoded (their ids reserved as the first begins), the bytes sent to the server at a
# time, and how often to look again for more of a file the worker is still writing.
_EVENTS_ENCODED_DURING = ("profile_writes", "consent_ledger")
_COPY_CHUNK = 1 << 20
_ENCODED_POLL_SECONDS = 0.02

# SQLite's page cache (KiB) while the rows go into tables that hold rows already.
_KEPT_INDEXES_CACHE_KIB = 256 * 1024


@contextmanager
def _write_cache(conn: Connection, org_id: int) -> Iterator[None]:
    """SQLite: a page cache of ``_KEPT_INDEXES_CACHE_KIB`` for the write into a store that holds
    id rows, restored after. Its indexes are kept (``_indexes_after_load``), and the new entries of
    the ucid-ordered ones (``ix_profile_ids_ucid``, ``ix_changes_entity``) land at random places
    of their new part, which the default 2 MB cache cannot hold (the likely cause, not measured
    apart: each insert reads its page back and spills it again). 100,000 records into a million profiles, the id rows 89.0 / 100.8 s
    -> 53.9 / 47.2 s, alternating (load 9-14). Into an empty store it gave nothing (the indexes
    are built after the load there) and is not set. Grows only as used: up to 256 MB more RSS."""
    if conn.dialect.name != "sqlite" or _empty_for(conn, "profile_ids", org_id):
        yield
        return
    before = int(conn.exec_driver_sql("PRAGMA cache_size").scalar() or 0)
    conn.exec_driver_sql(f"PRAGMA cache_size = -{_KEPT_INDEXES_CACHE_KIB}")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size = {before}")


def _binary_copy(table: str, columns: Sequence[str]) -> str:
    return f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"


def _insert(conn: Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    cursor = conn.connection.cursor()
    try:
        if conn.dialect.name == "postgresql":
            with cursor.copy(_binary_copy(table, columns)) as copy:
                copy.set_types(copy_types(table, columns))
                for row in rows:
                    copy.write_row(row)
        else:
            sqlite_insert_many(cursor, table, columns, rows)
    finally:
        cursor.close()


def _distinct_ids(
    path: Path, codes: NDArray[np.integer[Any]], regions: set[str], check_stop: Callable[[], None]
) -> Iterator[list[tuple[str, str, str, int]]]:
    """Blocks of (region, idType, value, code) of the ids of the writes file at ``path`` in
    ``regions``, each block in ``profile_ids``' key order, each distinct id once: ``codes`` gives
    each id occurrence's code (``_link``), so an id seen before is skipped without keeping the ids
    themselves. Two ids that share a key share a code, so a code also keeps a second hash of the id
    seen under it (Python's, 8 bytes an id): an id whose hash differs from it is sent too, and the
    lookup stays exact."""
    seen = np.zeros(int(codes.max()) + 1 if len(codes) else 0, dtype=np.int64)
    place = 0
    with path.open("rb") as f:
        while True:
            check_stop()
            lines = list(islice(f, LOOKUP_CHUNK))
            if not lines:
                return
            writes = [orjson.loads(line) for line in lines]
            count = sum(len(w[2]) for w in writes) // 2
            block = codes[place : place + count].tolist()
            place += count
            rows: list[tuple[str, str, str, int]] = []
            n = 0
            for w in writes:
                region, parts = w[1], w[2]
                if region not in regions:
                    n += len(parts) // 2
                    continue
                for j in range(0, len(parts), 2):
                    code = block[n]
                    n += 1
                    tag = hash((region, parts[j], parts[j + 1])) or 1
                    if seen[code] != tag:
                        seen[code] = tag
                        rows.append((region, parts[j], parts[j + 1], code))
            # Looked up in this order, the ids of a block go through profile_ids' key leaf after
            # leaf instead of at random: 300,000 ids against 3.7 million stored rows (PostgreSQL,
            # load 12-17), in runs of 75,000 sorted 5.4-6.8 s, in file order 9.8-23 s.
            rows.sort()
            yield rows


# The stored-id lookup on PostgreSQL, of the ids in the temporary table ``bulk_lookup``.
PG_STORED_LOOKUP = (
    "SELECT b.code FROM bulk_lookup b CROSS JOIN LATERAL (SELECT 1 FROM profile_ids p "
    "WHERE p.org_id = %s AND p.region = b.region AND p.id_type = b.id_type AND p.value = b.value "
    "LIMIT 1) hit"
)


def _stored_codes(
    conn: Connection, org_id: int, blocks: Iterable[list[tuple[str, str, str, int]]]
) -> list[int]:
    """The codes of the ids in ``blocks`` (``_distinct_ids``) that ``profile_ids`` holds in
    ``org_id``: the ids loaded into a temporary table, then one semi-join on the primary key."""
    cursor = conn.connection.cursor()
    try:
        if conn.dialect.name == "postgresql":
            cursor.execute(
                "CREATE TEMPORARY TABLE bulk_lookup (code int8, region text, id_type text, value text) "
                "ON COMMIT DROP"
            )
            with cursor.copy(
                "COPY bulk_lookup (region, id_type, value, code) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["text", "text", "text", "int8"])
                for rows in blocks:
                    for row in rows:
                        copy.write_row(row)
            # Each id looked up through the primary key (a nested loop; LATERAL ... LIMIT 1 keeps
            # the planner to it): as a semi-join, even after ANALYZE, the planner hashes the ids
            # and scans the whole of profile_ids, whose size is the store's, not the file's (7.5
            # million rows scanned for 0.7 million ids at a million profiles; 3.7 million for
            # 300,000 ids at half a million, 17 s against 12 s, load 12). The ids go in the order
            # they were loaded, a block at a time in the key's order (``_distinct_ids``): sorted
            # by the server instead, the sort cost what the ordered probes saved (12-16 s vs 11-13).
            cursor.execute(PG_STORED_LOOKUP, (org_id,))
        else:
            cursor.execute(
                "CREATE TEMPORARY TABLE bulk_lookup (code INTEGER, region TEXT, id_type TEXT, value TEXT)"
            )
            for rows in blocks:
                cursor.executemany(
                    "INSERT INTO bulk_lookup (region, id_type, value, code) VALUES (?, ?, ?, ?)", rows
                )
            # SQLite: a scan of the ids in the order loaded (``_distinct_ids``' sorted blocks),
            # each searched in profile_ids' covering primary-key index (EXPLAIN QUERY PLAN).
            cursor.execute(
                "SELECT b.code FROM bulk_lookup b WHERE EXISTS (SELECT 1 FROM profile_ids p "
                "WHERE p.org_id = ? AND p.region = b.region AND p.id_type = b.id_type AND p.value = b.value)",
                (org_id,),
            )
        found = [int(row[0]) for row in cursor.fetchall()]
        cursor.execute("DROP TABLE bulk_lookup")
        return found
    finally:
        cursor.close()


class BulkImporter:
    def __init__(
        self,
        source: Path,
        records: RecordSource,
        sink: CdpSink,
        *,
        progress: Progress | None = None,
        workers: int | None = None,
        early_stop: int = EARLY_STOP_RECORDS,
        at: int | None = None,
        spool_dir: Path | None = None,
        lines: LineSource | None = None,
    ) -> None:
        self.source = source
        self.lines = lines
        self.records = records
        self.sink = sink
        self.progress = progress or (lambda _summary: None)
        self.workers = default_workers() if workers is None else workers
        self.early_stop = early_stop
        self.at = at
        self.spool_dir = spool_dir
        self._stop = threading.Event()
        self.summary: BulkSummary | None = None
        self._resolve_pool: Executor | None = None
        self._job_ended = 0.0  # when the transaction's job returned (its commit follows)
        self._frame = FRAME_BYTES  # the spools' frame size (``spool.frame_bytes``)

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise BulkInterrupted

    # --- phase 1: read and prepare ---
    def _chunks(self) -> Iterator[_Chunk]:
        if self.lines is not None:
            lines: list[NdjsonLine] = []
            for line in self.lines():
                lines.append(line)
                if len(lines) >= PREPARE_CHUNK:
                    yield _Lines(lines)
                    lines = []
            if lines:
                yield _Lines(lines)
            return
        chunk: list[SourceRecord] = []
        for record in self.records(0, 0):
            chunk.append(record)
            if len(chunk) >= PREPARE_CHUNK:
                yield _Records(chunk)
                chunk = []
        if chunk:
            yield _Records(chunk)

    def _prepare(
        self, pool: Executor | None, strategy: Strategy, summary: BulkSummary, started: float, spool_dir: Path
    ) -> _Plan:
        sink = self.sink
        # the import's name: each process keeps one ``bulk.prepare.Preparer`` (and its memo) for it
        args = (uuid.uuid4().hex, strategy, sink.org_id, sink.region, sink.actor)
        plan = _Plan(sink.org_id, sink.actor, strategy, spool_dir)
        head: set[str] = set()
        head_left = self.early_stop
        last_progress = time.monotonic()

        def take(chunk: _Chunk, prepared: PreparedChunk) -> None:
            nonlocal head_left
            for n, error in prepared.refused.items():
                line, raw = chunk.lines[n], chunk.raw(n)
                if error is None or isinstance(error, str):
                    message = error if isinstance(error, str) else chunk.error(n)
                    body = error_body(400, message, {"line": "unreadable"})
                    plan.rejects.append(_Reject(line, raw, body, "parse"))
                else:
                    body = error_body(error.status, error.message, error.errors)
                    plan.rejects.append(_Reject(line, raw, body, _reason(error)))
                    if carried_suppressed(error):
                        summary.suppressed += 1
            plan.add(chunk, prepared)
            summary.read += len(chunk.lines)
            summary.line = chunk.lines[-1]
            summary.offset = chunk.end
            for n in range(min(head_left, len(chunk.lines))):
                if n not in prepared.refused:
                    head.add("")
                else:
                    error = prepared.refused[n]
                    head.add("parse" if error is None or isinstance(error, str) else _reason(error))
            head_left -= min(head_left, len(chunk.lines))

        # Chunks in file order, each with its worker's future or, prepared here, its result. The
        # workers are kept fed (``AHEAD`` chunks each submitted and not yet done) and this
        # thread prepares a chunk itself only while they are: it also reads the file, sends the
        # chunks and takes the results, so a fixed share (every other chunk, before) left the
        # workers idle while it caught up.
        pending: deque[tuple[_Chunk, Future[PreparedChunk] | PreparedChunk]] = deque()
        in_flight = 0
        ahead = PREPARE_AHEAD * self.workers

        def take_ready(wait_for_all: bool) -> None:
            nonlocal in_flight
            while pending:
                done_chunk, item = pending[0]
                if isinstance(item, Future):
                    if not (wait_for_all or item.done() or len(pending) > PREPARE_HELD):
                        return
                    self._check_stop()
                    item = item.result()
                    in_flight -= 1
                pending.popleft()
                take(done_chunk, item)

        for chunk in self._chunks():
            self._check_stop()
            function, data = chunk.job()
            if pool is not None and in_flight < ahead:
                with _stop_signals_blocked():  # workers start on demand: never with Ctrl-C
                    pending.append((chunk, pool.submit(function, *args, *data)))
                in_flight += 1
            else:
                pending.append((chunk, function(*args, *data)))
            take_ready(False)
            if time.monotonic() - last_progress >= 1.0:
                last_progress = time.monotonic()
                summary.seconds = last_progress - started
                self.progress(summary)
        take_ready(True)
        plan.done_adding()
        if self.early_stop and head_left == 0 and len(head) == 1 and "" not in head:
            # As online: the first records were all refused for one reason (a wrong org, region
            # or mapping); here nothing at all is written.
            reason = head.pop()
            self._write_rejects(plan.rejects, [], summary)
            raise ImportStopped(summary, reason, self.early_stop)
        return plan

    # --- phases 3 and 4: the transaction ---
    def _job(
        self, plan: _Plan, linked: _Linked, at: int, summary: BulkSummary, spool_dir: Path
    ) -> Callable[[Connection], Any]:
        def job(conn: Connection) -> dict[int, ProfilehubError]:
            self._check_stop()  # a retry after a stop (the statement it interrupted failed)
            return self._transaction(conn, plan, linked, at, summary, spool_dir)

        return job

    # --- phase 2: link ---
    def _link(self, plan: _Plan, strategy: Strategy, folder: Path) -> _Linked:
        """The components of the plan's writes, and which are simple (``graph``,
        ``resolve.simple_components``), before the transaction: what the transaction needs of
        them is small (a 32-bit component a write, a flag a component), so the plan's per-id
        keys (read from their file a chunk at a time), idTypes and offsets are dropped here, and
        each id occurrence's code and each id's component, which only an import into a scope
        holding profiles looks at again, wait on disk. The codes are read back from their file a
        chunk at a time too: what is held at once is a few 4-byte arrays of one entry an id
        (~47 million ids at ten million records) or a write. The link's peak at ten million
        records (bench.generate's, 66 million id occurrences): 1,989-2,008 MB in the import before
        (the keys, their codes and distinct keys, four id-sized arrays at once), 1,144 MB with the
        keys bucketed through files (measured), and less than what the plan alone held since."""
        # Ids coded 0..m-1 by their keys, in order.
        keys = CodeFile(plan.keys_path, np.dtype(np.int64))
        try:
            buckets = bucket_keys(keys, folder)
        finally:
            keys.close()
        plan.keys_path.unlink()  # in the buckets' files now
        ids, flat = code_buckets(buckets)
        types = (
            np.frombuffer(plan.types, dtype=np.int8)
            if plan.types.typecode == "b"
            else np.frombuffer(plan.types, dtype=np.int64)
        )
        # Each id's idType: one of its writes' (all of them give the same unless two ids share a
        # key; a component is computed in closed form only after its ids themselves were checked).
        id_type = np.empty(ids, dtype=types.dtype)
        id_type[flat] = types
        del types
        plan.types = array(plan.types.typecode)
        # Each id occurrence's code, for ``_mark_stored`` (an import into a scope holding profiles)
        codes_path = folder / "id-codes.npy"
        np.save(codes_path, flat)
        # ... and read back from that file a chunk at a time from here on: not held beside the
        # components' arrays (265 MB at ten million records)
        del flat
        codes = CodeFile(codes_path)
        try:
            self._check_stop()
            offsets = np.frombuffer(plan.offsets, dtype=np.int64)
            graph = components(offsets, codes, ids)
            self._check_stop()
            # idType limits by code (the codes ``prepare_chunk`` gave); an unknown idType: never simple
            limits = np.array(
                [
                    strategy.id_types[n].max_per_profile if n in strategy.id_types else 0
                    for n in plan.type_names
                ]
                + [0],
                dtype=np.int64,
            )
            simple = simple_components(
                offsets, codes, graph.label, graph.id_label, id_type, limits, graph.count
            )
        finally:
            codes.close()
        del offsets, id_type
        plan.offsets = array("q")
        labels_path = folder / "id-labels.npy"
        np.save(labels_path, graph.id_label)
        return _Linked(graph.label, simple, graph.count, codes_path, labels_path)

    def _transaction(
        self, conn: Connection, plan: _Plan, linked: _Linked, at: int, summary: BulkSummary, spool_dir: Path
    ) -> dict[int, ProfilehubError]:
        sink = self.sink
        service = sink.service
        org_id = sink.org_id
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            # The transaction resolves for minutes between statements; the server's guard against
            # a frozen client holding locks (PROFILEHUB_DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS)
            # would end it.
            conn.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = 0")
        # counted as the writes apply (again, on a retry)
        summary.created = summary.updated = summary.over_id_limit = 0
        regions = sorted(plan.regions)
        for region in regions:
            lock_scope(conn, org_id, f"profiles:{region}")
        strategy = service.strategies.get(conn, org_id)
        if strategy.version != plan.strategy_version:
            raise Conflict(
                "the org's identity strategy changed while the file was prepared (an idType or a "
                "blocked value); nothing was written: run the import again",
                field="strategy",
            )
        t = summary.begin("resolve")
        touching = np.zeros(linked.count, dtype=bool)
        for k in plan.ucids:
            touching[linked.label[k]] = True
        self._mark_stored(conn, org_id, regions, plan, linked, touching)
        summary.phases["lookup"] = time.monotonic() - t  # of the resolve phase: the stored ids found
        self._check_stop()
        block = UcidBlock(len(plan))
        label = linked.label
        in_memory = np.flatnonzero(~touching[label])
        del touching
        # Groups of whole components, resolved by the worker processes and this thread at once.
        groups = max(1, math.ceil(len(in_memory) / GROUP_WRITES), self.workers + 1)
        # Every group's spools and the store's are merged at once by the write: frames sized so
        # that the merge holds ``spool.MERGE_BYTES`` of them whatever the number of groups.
        frame = frame_bytes(groups + 1)
        self._frame = frame
        spools = [Spools.open(spool_dir, "store", frame)]
        # -1: replayed against the store
        group_of: NDArray[np.integer[Any]] = np.full(
            len(plan), -1, dtype=np.int32 if groups < 2**31 else np.int64
        )
        group_of[in_memory] = label[in_memory] % groups
        # Each write's component where it resolves in closed form, else -1 (replayed in order).
        closed = np.where(linked.simple[label], label, -1)
        summary.closed_form = int((closed[in_memory] >= 0).sum())
        summary.resolved_in_memory = len(in_memory)
        del in_memory
        paths = plan.split(spool_dir, group_of, groups)
        store_paths = [paths[-1]]
        # Each group's writes in file order (a stable sort by group), and their closed-form labels.
        by_group = np.argsort(group_of, kind="stable")
        sizes = np.bincount(group_of[group_of >= 0], minlength=groups)
        start = int((group_of < 0).sum())  # the store's writes sort first
        group_closed = np.split(closed[by_group[start:]], np.cumsum(sizes)[:-1])
        del by_group
        for g, refused_group in self._resolve_groups(
            plan,
            strategy,
            paths[:-1],
            group_closed,
            at,
            block,
            spool_dir,
            spools,
            summary,
        ):
            # Not expected (only a write naming a ucid is refused as it applies, and those replay
            # against the store), but if it happens the group goes there too: the online writer's
            # handling of a refusal is what that path does.
            if refused_group:
                store_paths.append(paths[g])
                summary.resolved_in_memory -= int(sizes[g])
        summary.replayed_in_store = len(plan) - summary.resolved_in_memory
        del group_of, closed, group_closed
        if self._resolve_pool is not None:
            # The groups are resolved: the worker processes, ended now, do not keep what resolving
            # grew their heaps to resident through the write (at a million records the process
            # tree peaked there, 789 MB). A retried transaction resolves in this thread alone.
            self._resolve_pool.shutdown()
            self._resolve_pool = None
        refused, tally = self._replay_in_store(conn, strategy, store_paths, at, block, spools[0])
        _count(summary, tally)
        summary.mark("resolve", t)
        self._check_stop()

        t = summary.begin("write")
        with _write_cache(conn, org_id):
            self._write(conn, org_id, plan, refused, spools, summary.phases)
        if service.journal and len(plan):
            service.journal_pruner.prune(conn, [org_id], at)
        summary.mark("write", t)
        self._check_stop()
        self._job_ended = summary.begin("commit")
        return refused

    def _resolve_groups(
        self,
        plan: _Plan,
        strategy: Strategy,
        paths: list[Path],
        closed: list[Any],
        at: int,
        block: UcidBlock,
        spool_dir: Path,
        spools: list[Spools],
        summary: BulkSummary,
    ) -> Iterator[tuple[int, bool]]:
        """Resolve each group in memory (``bulk.resolve``), the g-th's writes in ``paths[g]`` and
        their simple components (or -1) in ``closed[g]``: up to one per worker process at a time,
        and one at a time in this thread meanwhile. Yields (group, refused) as each ends; the
        groups' spools are added to ``spools``."""
        service = self.sink.service
        org_id, actor, journal, ledger = self.sink.org_id, self.sink.actor, service.journal, service.ledger
        pool = self._resolve_pool
        todo = deque(g for g in range(len(paths)) if len(closed[g]))
        running: dict[Future[tuple[Tally, Spools] | None], int] = {}

        def done(g: int, result: tuple[Tally, Spools] | None) -> tuple[int, bool]:
            if result is None:
                return g, True
            tally, group_spools = result
            spools.append(group_spools)
            _count(summary, tally)
            # Its writes are in its spools now (a retried transaction splits the writes file
            # again): the disk they took (about 1 KB a record) is free for the write's.
            paths[g].unlink(missing_ok=True)
            return g, False

        while todo or running:
            self._check_stop()
            # a group waiting behind each worker's, while this thread has one left to take itself
            while pool is not None and (
                len(running) < self.workers
                if len(todo) == 1
                else todo and len(running) < PREPARE_AHEAD * self.workers
            ):
                g = todo.popleft()
                with _stop_signals_blocked():
                    future = pool.submit(
                        resolve_payload,
                        strategy,
                        org_id,
                        actor,
                        str(paths[g]),
                        closed[g],
                        at,
                        block,
                        str(spool_dir),
                        f"g{g}",
                        journal,
                        ledger,
                        self._frame,
                    )
                running[future] = g
            if todo:  # this thread takes one too, from the other end
                g = todo.pop()
                group_spools = Spools.open(spool_dir, f"g{g}", self._frame)
                try:
                    tally = resolve_file(
                        strategy,
                        org_id,
                        actor,
                        paths[g],
                        closed[g],
                        at,
                        block,
                        group_spools,
                        journal,
                        self._check_stop,
                        ledger,
                    )
                except Refused:
                    group_spools.discard()
                    yield g, True
                    continue
                group_spools.close()  # its files closed until the write: groups can be thousands
                yield done(g, (tally, group_spools))
            finished = [f for f in running if f.done()]
            if not finished and not todo and running:
                finished = list(wait(list(running), timeout=1.0, return_when=FIRST_COMPLETED).done)
            for f in finished:
                yield done(running.pop(f), f.result())

    def _mark_stored(
        self,
        conn: Connection,
        org_id: int,
        regions: list[str],
        plan: _Plan,
        linked: _Linked,
        touching: Any,
    ) -> None:
        """Mark the components holding an id a stored profile owns. Nothing to look up in a scope
        that holds no profiles yet (the usual backfill). Otherwise each distinct id of the file
        (by its code, from the link) goes once into a temporary table (``COPY`` on PostgreSQL,
        ``executemany`` on SQLite) and one statement finds those the store holds, each through
        ``profile_ids``' primary key: before, every id occurrence was looked up, chunk by chunk,
        through the online path's storage (minutes into a store of ten million profiles)."""
        held = [
            region
            for region in regions
            if conn.exec_driver_sql(
                "SELECT 1 FROM profile_ids WHERE org_id = %s AND region = %s LIMIT 1"
                if conn.dialect.name == "postgresql"
                else "SELECT 1 FROM profile_ids WHERE org_id = ? AND region = ? LIMIT 1",
                (org_id, region),
            ).first()
            is not None
        ]
        if not held:
            return
        # The lookups below, and the replay's through the online storage, are planned from these
        # tables' statistics, which may predate the org's rows (``analyse_before_lookups``).
        analyse_before_lookups(conn, ["profile_ids", "profiles"])
        codes, id_label = linked.ids()
        for code in _stored_codes(conn, org_id, _distinct_ids(plan.path, codes, set(held), self._check_stop)):
            touching[id_label[code]] = True

    def _replay_in_store(
        self,
        conn: Connection,
        strategy: Strategy,
        paths: list[Path],
        at: int,
        block: UcidBlock,
        spools: Spools,
    ) -> tuple[dict[int, ProfilehubError], Tally]:
        """The writes of components that touch stored profiles or name a ucid (in the files
        ``paths``), in file order, through the online write path's storage, refusals handled as
        the online writer does (the refused write rolled back and the others applied again
        without it)."""
        service = self.sink.service
        org_id = self.sink.org_id
        writes = {k: w for path in paths for k, w in read_writes(path, org_id, self.sink.actor)}
        if not writes:
            return {}, Tally()
        indices = sorted(writes)
        scopes: dict[str, tuple[list[Identifier], list[str]]] = {}
        for k in indices:
            w = writes[k]
            ids, ucids = scopes.setdefault(w.region, ([], []))
            ids += w.ids
            if w.ucid is not None:
                ucids.append(w.ucid)
        refused: dict[int, ProfilehubError] = {}
        while True:
            events: list[tuple[Any, ...]] = []
            tally = Tally()
            again = False
            try:
                with savepoint(conn):
                    storage = profile_storage(conn, service.journal, service.ledger)
                    for region, (ids, ucids) in sorted(scopes.items()):
                        storage.prefetch(org_id, region, ids, ucids)
                    # The change log and journal are numbered in file order with the in-memory
                    # writes' (``spool_log``), so they are kept aside rather than flushed here.
                    recorded = Recorded(storage)
                    applied: list[int] = []
                    for n, k in enumerate(indices):
                        if n % 1000 == 0:
                            self._check_stop()
                        if k in refused:
                            continue
                        try:
                            outcome = apply_write(
                                recorded, strategy, writes[k], at, new_ucid=partial(block, k)
                            )
                        except ProfilehubError as exc:
                            refused[k] = exc
                            again = True
                            continue
                        applied.append(k)
                        result = WriteResult(strategy, outcome)
                        tally.add(result)
                        e = result.event(org_id)
                        events.append((k, e.type, e.region, e.ts, e.entity_id, orjson.dumps(e.data).decode()))
                    if again:
                        raise _Again
                    storage.flush()
            except _Again:
                continue
            for row in events:
                spools.events.append(row)
            spool_log(spools, applied, recorded.changes, recorded.writes, service.journal, service.ledger)
            return refused, tally

    def _write(
        self,
        conn: Connection,
        org_id: int,
        plan: _Plan,
        refused: dict[int, ProfilehubError],
        spools: list[Spools],
        phases: dict[str, float],
    ) -> None:
        # Each group's rows of a table are in the table's key order (``Spools.open``): merged,
        # the whole load is, and each B-tree fills page after page (the id values are hashes
        # and ucids and file order interleave across groups: any other order is random).
        # Numbered in file order: change ids (the feed's order) and journal seqs, each block
        # reserved above every number this process gave before.
        numbering = Numbering(org_id, ChangeIdBlock(len(plan)), CLOCK.reserve(len(plan)), sorted(refused))
        count = len(plan) - len(refused)  # the events
        if conn.dialect.name == "postgresql" and self.workers:
            self._write_encoded(conn, spools, numbering, count, phases)
            return
        with self._scratch(conn, spools, numbering, count) as scratch:
            for table, _, columns in TABLES:
                if scratch is not None and table in SCRATCH_TABLES:
                    continue
                if table == "events":
                    if not count:
                        return
                    numbering.first_event = reserve_event_ids(conn, count)
                rows = table_blocks(table, spools, numbering, self._check_stop)
                _stream_rows(conn, table, columns, chain.from_iterable(rows), phases, org_id)
            if scratch is not None:
                scratch(phases)

    def _write_encoded(
        self,
        conn: Connection,
        spools: list[Spools],
        numbering: Numbering,
        events: int,
        phases: dict[str, float],
    ) -> None:
        """PostgreSQL with worker processes allowed: a worker process makes every table's rows
        and encodes them as ``COPY`` data into a file of the work folder (``load.encode_copy``), a
        table after another, while this thread sends each file to the server as it grows. The
        rows' making and encoding (Python, about half the write's time on one thread) then runs
        beside the server's work instead of taking turns with it. The event ids are reserved
        when the journal's load begins (``_EVENTS_ENCODED_DURING``), so that the events are
        encoded while the journal and ledger load: the counter row is held from there to the
        commit, a few seconds a million records longer than by the in-thread load."""
        folder = Path(spools[0].profiles.path).parent
        for group in spools:
            group.close()  # sent to the worker as their paths
        loads = [(table, columns) for table, _, columns in TABLES if table != "events" or events]
        waited = 0.0
        with worker_pool(1) as pool:

            def encode(table: str, columns: Sequence[str]) -> Future[None]:
                path = folder / f"copy_{table}"
                path.touch()  # there to be read from before the worker starts on it
                with _stop_signals_blocked():  # the importer decides how to stop (``_stop_signals_blocked``)
                    future: Future[None] = pool.submit(encode_copy, path, table, columns, spools, numbering)
                return future

            encoded = {table: encode(table, columns) for table, columns in loads if table != "events"}
            try:
                for table, columns in loads:
                    if table in _EVENTS_ENCODED_DURING and "events" not in encoded and events:
                        numbering.first_event = reserve_event_ids(conn, events)
                        encoded["events"] = encode("events", EVENT_COLUMNS)
                    began = time.monotonic()
                    with _indexes_after_load(conn, table, numbering.org_id, phases):
                        waited += self._copy_file(
                            conn, table, columns, folder / f"copy_{table}", encoded[table]
                        )
                    phases[f"write_{table}"] = time.monotonic() - began
            except BaseException:
                pool.terminate()  # a stop or a failure: its work is not wanted
                raise
        phases["write_encode_wait"] = waited

    def _copy_file(
        self, conn: Connection, table: str, columns: Sequence[str], path: Path, encoded: Future[None]
    ) -> float:
        """``COPY`` ``path`` into ``table`` as ``encoded`` (``load.encode_copy``) writes it, read as
        it grows until the worker is done; the seconds spent waiting for it."""
        waited = 0.0
        cursor = conn.connection.cursor()
        try:
            with (
                cursor.copy(_binary_copy(table, columns)) as copy,
                path.open("rb") as data,
            ):
                while True:
                    self._check_stop()
                    # Whether the worker is done is asked before the read: done by then, it had
                    # written the whole file, and a read that finds nothing is at its end.
                    done = encoded.done()
                    if chunk := data.read(_COPY_CHUNK):
                        copy.write(chunk)
                    elif done:
                        encoded.result()  # raises the worker's failure
                        break
                    else:
                        began = time.monotonic()
                        wait([encoded], timeout=_ENCODED_POLL_SECONDS)
                        waited += time.monotonic() - began
        finally:
            cursor.close()
        path.unlink()
        return waited

    @contextmanager
    def _scratch(
        self, conn: Connection, spools: list[Spools], numbering: Numbering, events: int
    ) -> Iterator[Callable[[dict[str, float]], None] | None]:
        """SQLite, a first backfill written once (``store.backfill_journal``) with worker
        processes allowed: a worker process loads ``load.SCRATCH_TABLES`` into scratch files, one
        a table, while this thread loads the rest (``bulk.load``). Yields what copies them in once this
        thread is done, or None where the write is this thread's alone."""
        if (
            conn.dialect.name != "sqlite"
            or not self.workers
            or self.summary is None
            or self.summary.journal != ROLLBACK
        ):
            yield None
            return
        # On SQLite the file is this import's alone (``ROLLBACK``): numbering the events first
        # makes no one wait.
        numbering.first_event = reserve_event_ids(conn, events) if events else 0
        shapes = {
            table: str(
                conn.exec_driver_sql(
                    "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
                ).scalar_one()
            )
            for table in SCRATCH_TABLES
        }
        # Named for this try: a transaction tried again (``_run_alone``) finds the first try's
        # file, and its name still attached to the connection.
        name = f"scratch_{uuid.uuid4().hex[:12]}"
        folder = Path(spools[0].profiles.path).parent
        for group in spools:
            group.close()  # sent to the worker as their paths
        with worker_pool(1) as pool:
            # A file a table, loaded in this order by the one worker: the first tables are copied
            # in while it still loads the events.
            with _stop_signals_blocked():  # the importer decides how to stop (``_stop_signals_blocked``)
                loaded = {
                    table: pool.submit(
                        load_scratch, folder / f"{name}_{table}.sqlite", table, shape, spools, numbering
                    )
                    for table, shape in shapes.items()
                }

            def copy(phases: dict[str, float]) -> None:
                waited = 0.0
                for table, future in loaded.items():
                    began = time.monotonic()
                    while not future.done():
                        self._check_stop()
                        wait([future], timeout=1.0)
                    self._check_stop()
                    future.result()
                    waited += time.monotonic() - began
                    began = time.monotonic()
                    attached = f"{name}_{table}"
                    conn.exec_driver_sql(
                        f"ATTACH DATABASE ? AS {attached}", (str(folder / f"{attached}.sqlite"),)
                    )
                    with _indexes_after_load(conn, table, numbering.org_id, phases):
                        conn.exec_driver_sql(f"INSERT INTO main.{table} SELECT * FROM {attached}.{table}")
                    phases[f"write_{table}"] = time.monotonic() - began
                phases["write_scratch_wait"] = waited
                # (SQLite refuses to DETACH within the transaction; the connection is closed
                # after it, ``store.backfill_journal``, and the files go with the work folder.)

            try:
                yield copy
            except BaseException:
                pool.terminate()  # a stop or a failure: its work is not wanted
                raise

    # --- the run ---
    def run(self) -> BulkSummary:
        source = self.source
        size = source.stat().st_size
        at = self.at if self.at is not None else now_ms()
        summary = BulkSummary(source, size, at=at)
        self.summary = summary
        started = time.monotonic()
        stop = self._stop = threading.Event()
        terminated = threading.Event()  # set by SIGTERM, not Ctrl-C: the exit status differs
        sink = self.sink
        database = sink.service.db

        def phase(name: str, began: float) -> None:
            summary.mark(name, began)
            summary.seconds = time.monotonic() - started

        try:
            with (
                _stop_on_interrupt(stop),
                stop_on_terminate(stop, terminated),
                collector.tuned(),
                work_folder("profilehub-bulk-", self.spool_dir) as spool_dir,
            ):
                t = summary.begin("prepare")
                with database.read() as conn:
                    strategy = sink.service.strategies.get(conn, sink.org_id)
                with worker_pool(self.workers) as pool, feeding_switches():
                    plan = self._prepare(pool, strategy, summary, started, Path(spool_dir))
                summary.note_workers(pool)
                phase("prepare", t)
                self.progress(summary)
                # New worker processes for the resolution: those that prepared keep what preparing
                # grew their heaps to (~230 MB each at a million records) resident through the
                # link phase, where they have nothing to do. The new ones start (a second or two
                # of imports each) while this thread links, not after.
                with worker_pool(self.workers) as pool:
                    if pool is not None:
                        with _stop_signals_blocked():  # never with Ctrl-C
                            for _ in range(self.workers):
                                pool.submit(worker_ready)
                    t = summary.begin("link")
                    linked = self._link(plan, strategy, Path(spool_dir))
                    summary.components = linked.count
                    summary.mark("link", t)
                    self.progress(summary)
                    t = time.monotonic()
                    self._resolve_pool = pool
                    with written_once(database) as journal:
                        summary.journal = journal
                        future: Future[dict[int, ProfilehubError]] = database.submit(
                            OnceJob(self._job(plan, linked, at, summary, Path(spool_dir)))
                        )
                        while not future.done():
                            wait([future], timeout=1.0)
                            summary.seconds = time.monotonic() - started
                            self.progress(summary)
                        refused = future.result()
                summary.note_workers(pool)
                # From the job's end to its commit: on SQLite that includes copying the WAL, about
                # as large as what the import wrote, into the database file (the checkpoint).
                summary.mark("commit", self._job_ended)
                summary.phases["transaction"] = time.monotonic() - t
                # Written records that carried a suppressed id (written without it), as online
                # counts them.
                summary.suppressed += sum(1 for k in plan.suppressed if k not in refused)
                self._write_rejects(  # before the folder, which holds those refused while preparing, goes
                    plan.rejects,
                    [
                        _Reject(
                            plan.lines[k],
                            plan.raw.get(k, ""),
                            error_body(e.status, e.message, e.errors),
                            _reason(e),
                        )
                        for k, e in refused.items()
                    ],
                    summary,
                )
        except BulkInterrupted as exc:
            summary.seconds = time.monotonic() - started
            exc.summary = summary
            exc.terminated = terminated.is_set()
            raise
        summary.seconds = time.monotonic() - started
        summary.peak_rss_bytes = _peak_rss()
        summary.running = ""  # done: committed
        self.progress(summary)
        return summary

    def _write_rejects(self, prepared: _Rejects, applied: list[_Reject], summary: BulkSummary) -> None:
        """The rejects file, as online (one line per refused record, in line order), and counts:
        those refused while preparing (in file order already) merged with those refused as they
        applied."""
        rejects_file = checkpoints.rejects_path(self.source)
        if not prepared.count and not applied:
            rejects_file.unlink(missing_ok=True)
            return
        line = attrgetter("line")
        everything = heapq.merge(prepared, sorted(applied, key=line), key=line)
        with rejects_file.open("wb") as out:
            for r in everything:
                summary.rejected += 1
                summary.reject_reasons[r.reason] = summary.reject_reasons.get(r.reason, 0) + 1
                message = str(r.body["message"])
                example = message if message.startswith("line ") else f"line {r.line}: {message}"
                summary.reject_examples.setdefault(r.reason, example)
                out.write(orjson.dumps({"line": r.line, "record": r.raw, "error": r.body}) + b"\n")


def run_bulk_import(
    source: Path,
    records: RecordSource,
    sink: CdpSink,
    *,
    progress: Progress | None = None,
    workers: int | None = None,
    early_stop: int = EARLY_STOP_RECORDS,
    at: int | None = None,
    spool_dir: Path | None = None,
    lines: LineSource | None = None,
    **_online_only: Any,
) -> BulkSummary:
    """Import ``source`` through the bulk path; the arguments of ``ingest.runner.Importer`` (its
    ``batch_size`` and ``shared`` mean nothing here and are accepted and ignored) plus ``at``, the
    one time (epoch ms) every record is written at (default: the run's start), and ``spool_dir``,
    where the resolved rows wait for the write (default: the system's temporary folder), and
    ``lines``, for an NDJSON file: its lines unparsed (``ingest.reader.ndjson_lines``), read where
    they are prepared instead of by ``records`` in this process (the same records, rejects and
    messages).

    Raises ``BulkInterrupted`` (nothing written) on Ctrl-C, ``ImportStopped`` (nothing written)
    when the first records are all refused for one reason.
    """
    importer = BulkImporter(
        source,
        records,
        sink,
        progress=progress,
        workers=workers,
        early_stop=early_stop,
        at=at,
        spool_dir=spool_dir,
        lines=lines,
    )
    return importer.run()
