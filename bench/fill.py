"""Fill a profilehub store with N synthetic profiles fast, for latency at 10 million profiles.

The importer resolves every record (about 2,500 records/s here), so building a store of 10 million
profiles through it takes hours. This writes the rows a finished import leaves behind directly, in
bulk, without resolution: the rows have exactly the shapes ``BatchStore.flush`` writes, so a write
that later sends a filled person's raw ids resolves to that person's profile as it would in a store
built by imports.

Profile ``i`` (0-based, deterministic, so a probe knows what to send):

- a ``profiles`` row: ucid ``fill_ucid(i)`` (UUIDv7 layout, time-ordered by ``i``), JSON data as a
  CDP upsert leaves it (``{"profile": {..., "_ts": "<ms>"}, ...}``), timestamps in epoch ms;
- ``profile_ids`` rows, as the identity mix of ``bench.generate`` leaves them (7.5 rows a profile):
  email ``fill{i}@example{i % 97}.com`` (75%) as its 5 hashes, phone ``+4917{i:09d}`` (50%, a
  quarter with the email) as its 3 hashes, one ad id (a second one for 1 in 12), a GA client id with
  the email, a first-party id with most phones. Hashes are of the normalised values, made with
  profilehub's own ``email_hashes``/``phone_hashes``; raw emails and phones only when the org keeps
  raw ids, as the write path does;
- one ``changes`` row, its ``create``. Not free to skip: the feed's key is time-ordered, so its
  inserts append, but its index on (entity, entity_id) is by ucid, so a later write of an old
  profile inserts into a random page of an index as big as the feed. (An import also writes one
  per update and merge: a filled store's feed is shorter than an imported one's, never longer);
- for 1 in 100, a second profile merged into it (``merged_into`` set, data ``{}``, no ids), as the
  1% of merges an import makes leave behind.

Speed: rows are generated in Python in chunks, in a worker process while the previous chunk is
written (memory stays flat, a few hundred MB), and loaded with the indexes out of the way, since
building an index by sorting is far faster than millions of random inserts into it. PostgreSQL: COPY into the tables with their primary keys and indexes dropped, both
rebuilt after, then ANALYZE (autovacuum would, and on a server without it the writer does).
SQLite: the ordinary indexes are dropped and rebuilt; the primary keys are automatic indexes that
cannot be dropped, so profiles and changes are inserted in key order (their keys grow with ``i``)
and the id rows go first to a staging database, then into ``profile_ids`` sorted by key. Either
way the schema at the end is checked against the one before (every index and constraint, by
definition), and the fill fails loudly if they differ.

No other connection may be open on the database while it fills (SQLite leaves WAL mode for the
load and returns to it at the end; PostgreSQL drops and re-adds keys). A failed fill rolls back.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from bench.generate import ORG_ID, REGION
from profilehub.identity.normalize import Identifier, email_hashes, normalise_ids, phone_hashes
from profilehub.identity.strategy import Strategy
from profilehub.store.strategy_store import load_strategy

# Filled profiles were "created" from here on, four a millisecond (an import's pace), so every
# filled ucid sorts before any ucid a later write makes.
FILL_EPOCH_MS = 1_700_000_000_000
CHUNK = 20_000  # profiles generated and written at a time: a multiple of 4 and of 100
MERGED_EVERY = 100
TABLES = ("profiles", "profile_ids", "changes")
_MASK64 = (1 << 64) - 1


def _mix(i: int) -> int:
    """64 well-spread bits from ``i`` (splitmix64): the "random" parts of ucids, cheap and fixed."""
    z = (i * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _uuid_text(value: int) -> str:
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def created_ms(i: int) -> int:
    return FILL_EPOCH_MS + i // 4


def updated_ms(i: int) -> int:
    return created_ms(i) + 1000 * (i % 3600)


def fill_ucid(i: int, merged: bool = False) -> str:
    """Profile ``i``'s ucid in ``new_ucid``'s layout: ms, version 7, variant, then bits from ``i``.

    The low 32 bits are ``i`` itself, so ucids are unique up to 4 billion profiles; the merged-away
    twin differs in one bit and sorts after its master within the same millisecond, as the later
    created profile of a merge does.
    """
    m = _mix(i)
    rand_a = m >> 52
    rand_b = (int(merged) << 61) | ((m & 0x1FFFFFFF) << 32) | (i & 0xFFFFFFFF)
    return _uuid_text(
        (created_ms(i) & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    )


def after_fill(count: int) -> str:
    """A ucid above every ucid of filled profiles 0 to ``count - 1`` and below any a write makes."""
    return _uuid_text((created_ms(count - 1) + 1) << 80)


def ad_id(i: int, k: int) -> str:
    """A version-4 UUID as phones send them; profile ``i``'s ``k``-th device."""
    h = hashlib.md5(f"ad{i}.{k}".encode(), usedforsecurity=False).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def email(i: int) -> str:
    return f"fill{i}@example{i % 97}.com"


def phone(i: int) -> str:
    return f"+4917{i:09d}"  # German mobile, as bench.generate's +4915...: stored in this very form


def has_email(i: int) -> bool:
    return i % 4 != 3


def has_phone(i: int) -> bool:
    return i % 4 in (0, 3)


def has_fpuid(i: int) -> bool:
    return has_phone(i) and i % 5 != 0


def devices(i: int) -> int:
    return 2 if i % 12 == 5 else 1


def fill_writes(i: int) -> list[dict[str, str]]:
    """The raw ids of writes that, sent through the write path, build profile ``i``.

    The first carries everything but a second device; the second device comes with the email or
    phone that ties it to the same person.
    """
    ids: dict[str, str] = {}
    if has_email(i):
        ids["email"] = email(i)
        ids["ga_clientid"] = f"GA1.2.{i}.99"
    if has_phone(i):
        ids["cellphone"] = phone(i)
    if has_fpuid(i):
        ids["fpuid"] = f"fp-fill-{i}"
    ids["AdId"] = ad_id(i, 0)
    writes = [ids]
    if devices(i) == 2:
        anchor = {"email": ids["email"]} if has_email(i) else {"cellphone": ids["cellphone"]}
        writes.append({**anchor, "AdId": ad_id(i, 1)})
    return writes


def probe_ids(i: int, shape: int) -> dict[str, str]:
    """A write of filled person ``i`` in one of ``bench.generate``'s three shapes of three ids."""
    ids = fill_writes(i)[0]
    keys: tuple[str, ...]
    if has_email(i) and has_phone(i) and shape % 3 == 0:
        keys = ("email", "cellphone", "AdId")
    elif has_email(i) and (shape % 3 == 1 or not has_phone(i)):
        keys = ("email", "AdId", "ga_clientid")
    else:
        keys = ("cellphone", "AdId", "fpuid") if has_fpuid(i) else ("cellphone", "AdId")
    return {k: ids[k] for k in keys}


def fill_identifiers(i: int, keep_raw_ids: bool = False) -> list[tuple[Identifier, int]]:
    """(stored id, ts) of profile ``i``: what ``normalise_ids`` makes of ``fill_writes(i)``."""
    ts = updated_ms(i)
    out: list[tuple[Identifier, int]] = []
    if has_email(i):
        e = email(i)
        out += [(Identifier(t, v), ts) for t, v in email_hashes(e).items()]
        out.append((Identifier("ga_clientid", f"GA1.2.{i}.99"), ts))
        if keep_raw_ids:
            out.append((Identifier("email", e), ts))
    if has_phone(i):
        p = phone(i)
        out += [(Identifier(t, v), ts) for t, v in phone_hashes(p).items()]
        if keep_raw_ids:
            out.append((Identifier("cellphone", p), ts))
    if has_fpuid(i):
        out.append((Identifier("fpuid", f"fp-fill-{i}"), ts))
    out.append((Identifier("AdId", ad_id(i, 0)), ts))
    if devices(i) == 2:
        out.append((Identifier("AdId", ad_id(i, 1)), created_ms(i)))  # seen once, at creation
    return out


def _data(i: int) -> dict[str, dict[str, Any]]:
    """Attributes as ``apply_upsert`` leaves them: each category stamped with its last write."""
    data: dict[str, dict[str, Any]] = {
        "profile": {"first_name": f"F{i}", "last_seen_batch": i // 1000, "_ts": str(updated_ms(i))}
    }
    if i % 10 < 3:
        data["consent"] = {"gdpr_marketing": "yes" if i % 2 else "no", "_ts": str(created_ms(i))}
    if i % 5 == 1:
        data["mkt_preferences"] = {"sms_optin": "no" if i % 3 else "yes", "_ts": str(updated_ms(i))}
    return data


def _change_detail(i: int, ids: list[tuple[Identifier, int]], data: dict[str, dict[str, Any]]) -> str:
    return orjson.dumps(
        {
            "region": REGION,
            "idTypes": sorted({ident.id_type for ident, _ in ids}),
            "attributes": {c: sorted(a for a in attrs if a != "_ts") for c, attrs in data.items()},
            "merged": [],
            "notices": [],
        }
    ).decode()


@dataclass
class Chunk:
    """The rows of profiles ``start`` to ``stop - 1``, each table's in its key order."""

    profiles: list[tuple[Any, ...]] = field(default_factory=list)
    ids: dict[str, list[tuple[str, str, int]]] = field(default_factory=dict)  # id_type -> (value, ucid, ts)
    changes: list[tuple[Any, ...]] = field(default_factory=list)
    id_rows: int = 0
    masters: int = 0
    merged: int = 0
    copy: tuple[bytes, bytes, bytes] = (b"", b"", b"")  # the three tables' COPY text, when made for it


def chunk_rows(start: int, stop: int, keep_raw_ids: bool = False) -> Chunk:
    out = Chunk()
    for i in range(start, stop):
        ucid = fill_ucid(i)
        ids = fill_identifiers(i, keep_raw_ids)
        data = _data(i)
        created, updated = created_ms(i), updated_ms(i)
        out.profiles.append((ORG_ID, ucid, REGION, created, updated, None, orjson.dumps(data).decode()))
        if i % MERGED_EVERY == MERGED_EVERY // 2:
            out.profiles.append((ORG_ID, fill_ucid(i, merged=True), REGION, created, updated, ucid, "{}"))
            out.merged += 1
        for ident, ts in ids:
            out.ids.setdefault(ident.id_type, []).append((ident.value, ucid, ts))
        out.id_rows += len(ids)
        out.masters += 1
        change_id = f"{created:012x}{_mix(i):016x}"
        out.changes.append(
            (
                ORG_ID,
                change_id,
                created,
                "bench-fill",
                "profile",
                ucid,
                "create",
                _change_detail(i, ids, data),
            )
        )
    # Keys grow with i but not strictly within a millisecond: sort so SQLite appends to its keys.
    out.profiles.sort(key=lambda r: r[1])
    out.changes.sort(key=lambda r: r[1])
    return out


def check_against_write_path(strategy: Strategy, samples: list[int]) -> None:
    """Fail unless the rows made for ``samples`` are what profilehub's normaliser makes of them."""
    for i in samples:
        expected: set[Identifier] = set()
        for ids in fill_writes(i):
            normalised, notices = normalise_ids(strategy, ids, REGION)
            if notices:
                raise RuntimeError(f"filled profile {i}: the org's strategy refuses its ids: {notices}")
            expected.update(normalised)
        made = {ident for ident, _ in fill_identifiers(i, strategy.keep_raw_ids)}
        if made != expected:
            raise RuntimeError(
                f"filled profile {i} differs from the write path's ids: "
                f"only filled {sorted(made - expected)}, only written {sorted(expected - made)}"
            )


@dataclass
class FillResult:
    profiles: int  # master profiles added
    merged: int  # merged-away profiles added
    id_rows: int
    changes: int
    seconds: float
    phases: dict[str, float]

    def line(self) -> str:
        phases = ", ".join(f"{k} {v:.0f}s" for k, v in self.phases.items())
        return (
            f"filled {self.profiles:,} profiles (+{self.merged:,} merged away), {self.id_rows:,} id rows, "
            f"{self.changes:,} changes in {self.seconds:.0f}s ({phases})"
        )


def _timer(phases: dict[str, float]) -> Callable[[str], None]:
    last = [time.perf_counter()]

    def mark(name: str) -> None:
        now = time.perf_counter()
        phases[name] = phases.get(name, 0.0) + now - last[0]
        last[0] = now

    return mark


def _copy_text(rows: list[tuple[Any, ...]]) -> bytes:
    # COPY's text format. No generated value holds a tab, newline or backslash (hex, UUIDs, plain
    # JSON of ASCII words), so nothing needs escaping; None is \N.
    return "".join("\t".join("\\N" if v is None else str(v) for v in row) + "\n" for row in rows).encode()


def copy_chunk(start: int, stop: int, keep_raw_ids: bool) -> Chunk:
    """``chunk_rows`` as PostgreSQL's COPY takes them, formatted where the chunk is made."""
    chunk = chunk_rows(start, stop, keep_raw_ids)
    chunk.copy = (
        _copy_text(chunk.profiles),
        b"".join(_copy_text([(ORG_ID, REGION, t, *r) for r in rows]) for t, rows in chunk.ids.items()),
        _copy_text(chunk.changes),
    )
    chunk.merged = sum(1 for r in chunk.profiles if r[5] is not None)
    chunk.masters = len(chunk.profiles) - chunk.merged
    chunk.profiles, chunk.ids, chunk.changes = [], {}, []  # sent as text only
    return chunk


def _chunks(
    make: Callable[[int, int, bool], Chunk], start: int, stop: int, keep_raw_ids: bool
) -> Iterator[Chunk]:
    """The chunks of ``start`` to ``stop``, made in a worker process while this one writes the
    previous ones: generating rows in Python costs about as much as writing them. At most three
    chunks are in flight, so memory stays flat however slow the writes are."""
    ranges = [(lo, min(stop, lo + CHUNK), keep_raw_ids) for lo in range(start, stop, CHUNK)]
    if len(ranges) <= 2:
        yield from (make(*r) for r in ranges)
        return
    # fork: spawn would re-run the caller's __main__. The child never touches the parent's open
    # database connection and leaves by os._exit, so sharing it is harmless.
    with multiprocessing.get_context("fork").Pool(1) as pool:
        pending: deque[Any] = deque()
        for r in ranges:
            pending.append(pool.apply_async(make, r))
            if len(pending) >= 3:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


# --- PostgreSQL ---


def _pg_schema(cur: Any) -> list[tuple[str, ...]]:
    cur.execute(
        "SELECT 'index', tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
        "UNION ALL SELECT 'constraint', conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
        "FROM pg_constraint WHERE connamespace = current_schema()::regnamespace ORDER BY 1, 2, 3"
    )
    return [tuple(r) for r in cur.fetchall()]


def _fill_postgres(engine: sa.Engine, start: int, stop: int, mark: Callable[[str], None]) -> FillResult:
    raw = engine.raw_connection()
    conn: Any = raw.driver_connection
    try:
        conn.autocommit = False
        cur = conn.cursor()
        before = _pg_schema(cur)
        # What to drop and rebuild: the three tables' primary keys, then their other indexes.
        keys = [(t, name, d) for kind, t, name, d in before if kind == "constraint" and t in TABLES]
        if any(not d.startswith("PRIMARY KEY") for _, _, d in keys):
            raise RuntimeError(f"unexpected constraints on {TABLES}: {keys}")
        key_names = {name for _, name, _ in keys}
        indexes = [
            (name, d)
            for kind, t, name, d in before
            if kind == "index" and t in TABLES and name not in key_names
        ]
        strategy = _strategy(engine)
        check_against_write_path(strategy, _samples(start, stop))
        for t, name, _ in keys:
            cur.execute(f'ALTER TABLE {t} DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            cur.execute(f'DROP INDEX "{name}"')
        mark("drop keys")
        result = FillResult(0, 0, 0, 0, 0.0, {})
        for chunk in _chunks(copy_chunk, start, stop, strategy.keep_raw_ids):
            mark("generate")
            profiles, ids, changes = chunk.copy
            with cur.copy(
                "COPY profiles (org_id, ucid, region, created_ts, updated_ts, merged_into, data) FROM STDIN"
            ) as copy:
                copy.write(profiles)
            with cur.copy("COPY profile_ids (org_id, region, id_type, value, ucid, ts) FROM STDIN") as copy:
                copy.write(ids)
            with cur.copy(
                "COPY changes (org_id, change_id, ts, actor, entity, entity_id, action, detail) FROM STDIN"
            ) as copy:
                copy.write(changes)
            _count(result, chunk)
            mark("copy")
        # Sorting builds: give them memory (this session only) and one parallel worker.
        cur.execute("SET maintenance_work_mem = '512MB'")
        cur.execute("SET max_parallel_maintenance_workers = 1")
        for t, name, d in keys:
            cur.execute(f'ALTER TABLE {t} ADD CONSTRAINT "{name}" {d}')
        mark("build keys")
        for _, d in indexes:
            cur.execute(d)
        mark("build indexes")
        after = _pg_schema(cur)
        _same_schema(before, after)
        conn.commit()
        conn.autocommit = True
        # Fresh statistics, as autovacuum (or, without it, the writer) gives a grown store: without
        # them the planner takes the 10M-row tables for empty ones.
        cur.execute("ANALYZE profiles, profile_ids, changes")
        mark("analyze")
        return result
    except BaseException:
        conn.rollback()
        raise
    finally:
        raw.close()


def _strategy(engine: sa.Engine) -> Strategy:
    with engine.connect() as c:
        return load_strategy(c, ORG_ID)


# --- SQLite ---


def _sqlite_schema(con: sqlite3.Connection, schema: str = "main") -> list[tuple[str, ...]]:
    return [
        tuple(str(v) for v in r)
        for r in con.execute(f"SELECT type, name, tbl_name, sql FROM {schema}.sqlite_master ORDER BY 1, 2, 3")
    ]


def _fill_sqlite(path: str, start: int, stop: int, mark: Callable[[str], None]) -> FillResult:
    engine = sa.create_engine(f"sqlite:///{path}", poolclass=sa.pool.NullPool)
    strategy = _strategy(engine)  # read and closed first: the load needs the file to itself
    engine.dispose()
    check_against_write_path(strategy, _samples(start, stop))
    con = sqlite3.connect(path, isolation_level=None)
    staging = Path(f"{path}.fill-staging")
    staging.unlink(missing_ok=True)
    try:
        mode = con.execute("PRAGMA journal_mode").fetchone()[0]
        # Through the WAL, a load of tens of GB would write every page twice and grow the WAL to
        # the whole load. A rollback journal keeps only pages that existed before the load (new
        # pages need none), so a failed fill still rolls back; WAL mode returns at the end.
        con.execute("PRAGMA journal_mode=DELETE")
        con.execute("PRAGMA synchronous=OFF")
        con.execute("PRAGMA cache_size=-163840")  # 160 MB, and as much again for each sort
        before = _sqlite_schema(con)
        indexes = [
            (name, sql) for kind, name, t, sql in before if kind == "index" and t in TABLES and sql != "None"
        ]
        con.execute("BEGIN")
        for name, _ in indexes:
            con.execute(f'DROP INDEX "{name}"')
        con.execute("ATTACH DATABASE ? AS staging", (str(staging),))
        con.execute("PRAGMA staging.journal_mode=OFF")
        mark("drop keys")
        made: set[str] = set()
        result = FillResult(0, 0, 0, 0, 0.0, {})
        for chunk in _chunks(chunk_rows, start, stop, strategy.keep_raw_ids):
            mark("generate")
            con.executemany(
                "INSERT INTO profiles (org_id, ucid, region, created_ts, updated_ts, merged_into, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                chunk.profiles,
            )
            con.executemany(
                "INSERT INTO changes (org_id, change_id, ts, actor, entity, entity_id, action, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                chunk.changes,
            )
            for id_type, rows in chunk.ids.items():
                table = f'staging."{id_type}"'
                if id_type not in made:
                    con.execute(f"CREATE TABLE {table} (value TEXT, ucid TEXT, ts INTEGER)")
                    made.add(id_type)
                con.executemany(f"INSERT INTO {table} VALUES (?, ?, ?)", rows)
            _count(result, chunk)
            mark("insert")
        # The primary key (org_id, region, id_type, value) is an automatic index: feed it in its
        # order, one idType after another (the same BINARY order as Python's sorted), so every
        # insert appends instead of landing on a random page of a tree too big for the cache.
        for id_type in sorted(made):
            con.execute(
                "INSERT INTO profile_ids (org_id, region, id_type, value, ucid, ts) "
                f'SELECT ?, ?, ?, value, ucid, ts FROM staging."{id_type}" ORDER BY value',
                (ORG_ID, REGION, id_type),
            )
        mark("sorted insert of ids")
        for _, sql in indexes:
            con.execute(sql)
        mark("build indexes")
        con.execute("COMMIT")
        con.execute("DETACH DATABASE staging")
        after = _sqlite_schema(con)
        _same_schema(before, after)
        con.execute(f"PRAGMA journal_mode={mode}")
        return result
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise
    finally:
        con.close()
        staging.unlink(missing_ok=True)


# --- both ---


def _samples(start: int, stop: int) -> list[int]:
    """Profiles whose rows are checked against the real normaliser: every shape (i mod 60)."""
    return sorted({*range(start, min(stop, start + 60)), *range(max(start, stop - 60), stop)})


def _count(result: FillResult, chunk: Chunk) -> None:
    result.profiles += chunk.masters
    result.merged += chunk.merged
    result.id_rows += chunk.id_rows
    result.changes += chunk.masters  # one create each


def _same_schema(before: list[tuple[str, ...]], after: list[tuple[str, ...]]) -> None:
    if before != after:
        lost = sorted(set(before) - set(after))
        gained = sorted(set(after) - set(before))
        raise RuntimeError(f"the fill changed the schema: lost {lost}, gained {gained}")


def fill(url: str, count: int, start: int = 0) -> FillResult:
    """Add filled profiles ``start`` to ``start + count - 1`` to the store at ``url``.

    The schema must be migrated and the org set up (``bench.run_import.setup_org``); profiles
    already there stay (a store can be filled in steps: 0 to 10,000, then 10,000 to 10 million).
    """
    phases: dict[str, float] = {}
    mark = _timer(phases)
    started = time.perf_counter()
    stop = start + count
    if url.startswith("sqlite"):
        database = sa.engine.make_url(url).database
        if not database or not os.path.exists(database):
            raise RuntimeError(f"no SQLite database at {url}: migrate it first (Database(url))")
        result = _fill_sqlite(database, start, stop, mark)
    else:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            result = _fill_postgres(engine, start, stop, mark)
        finally:
            engine.dispose()
    result.seconds = time.perf_counter() - started
    result.phases = phases
    return result
