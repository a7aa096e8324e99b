"""The journal of profile writes: what each applied write carried, kept with the person it made.

``BatchStore`` appends a row per applied write at ``flush`` (``journal_row``); erasure deletes the
rows of the erased ucids (``delete_journal``); an unmerge reads a person's rows
(``person_journal``) and points them at the profiles it rebuilt (``move_journal``). Rows are
keyed by the master the write landed on when it was written: a person's journal is the rows of
its master and of every ucid merged into it.

A write's ids that its profile did not take (another profile held them, or a limit refused them)
stay in its row all the same, in another person's journal. ``journal_unattached`` names those
rows by id (``unattached_rows``), so erasing the id's holder takes it out of them
(``scrub_unattached``) without reading the org's journal.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.identity.normalize import Identifier
from profilehub.identity.storage import WriteRecord
from profilehub.store.tables import journal_retention, journal_unattached, profile_writes

JOURNAL_COLUMNS = (
    "org_id",
    "ucid",
    "seq",
    "ts",
    "region",
    "actor",
    "created",
    "named_ucid",
    "ids",
    "upsert",
    "merges",
    "released",
)
DAY_MS = 86_400_000
# The writer drops an org's journal rows past its retention at most this often per process.
PRUNE_EVERY_MS = 10 * 60 * 1000
_CHUNK = 400


class JournalClock:
    """Strictly increasing microseconds, the order of a person's writes.

    Read while the writer holds the scope's lock (the single writer, BEGIN IMMEDIATE on SQLite, the
    advisory lock on PostgreSQL): a writer in another process that takes the lock next reads the
    clock after this transaction committed, so its writes sort after these.
    """

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(time.time_ns() // 1000, self._last + 1)
            return self._last

    def reserve(self, n: int) -> int:
        """The first of ``n`` consecutive values, all after every value read before (the bulk
        import numbers its writes ``first + file index``)."""
        with self._lock:
            first = max(time.time_ns() // 1000, self._last + 1)
            self._last = first + max(n, 1) - 1
            return first


CLOCK = JournalClock()


def journal_row(record: WriteRecord, seq: int) -> tuple[Any, ...]:
    """The row of ``record`` in ``JOURNAL_COLUMNS`` order."""
    return (
        record.org_id,
        record.ucid,
        seq,
        record.ts,
        record.region,
        record.actor[:100],
        record.created,
        record.named_ucid,
        orjson.dumps([list(i) for i in record.ids]).decode(),
        orjson.dumps(record.upsert).decode(),
        orjson.dumps(record.merges).decode(),
        orjson.dumps([list(i) for i in record.released]).decode() if record.released else None,
    )


UNATTACHED_COLUMNS = ("org_id", "ucid", "seq", "region", "id_type", "value", "ts")


def unattached_rows(record: WriteRecord, seq: int) -> list[tuple[Any, ...]]:
    """The ``journal_unattached`` rows of ``record``'s journal row, in ``UNATTACHED_COLUMNS``
    order (none for the common write, whose ids all attached)."""
    return [
        (record.org_id, record.ucid, seq, record.region, i.id_type, i.value, record.ts)
        for i in dict.fromkeys(record.unattached)
    ]


def _record(row: Any) -> WriteRecord:
    return WriteRecord(
        row.org_id,
        row.region,
        row.ucid,
        bool(row.created),
        tuple(Identifier(t, v) for t, v in orjson.loads(row.ids)),
        orjson.loads(row.upsert),
        row.named_ucid,
        row.actor,
        row.ts,
        orjson.loads(row.merges),
        tuple(Identifier(t, v) for t, v in orjson.loads(row.released)) if row.released else (),
    )


def person_journal(conn: Connection, org_id: int, ucids: Iterable[str]) -> list[tuple[int, WriteRecord]]:
    """The journal of the profiles ``ucids`` (a master and its merged ucids), oldest first, as
    ``(seq, record)``."""
    found: list[tuple[int, WriteRecord]] = []
    wanted = sorted(set(ucids))
    for i in range(0, len(wanted), _CHUNK):
        q = sa.select(profile_writes).where(
            profile_writes.c.org_id == org_id, profile_writes.c.ucid.in_(wanted[i : i + _CHUNK])
        )
        found += [(row.seq, _record(row)) for row in conn.execute(q)]
    found.sort(key=lambda pair: pair[0])
    return found


def delete_journal(conn: Connection, org_id: int, ucids: list[str]) -> None:
    """Erase the journal of ``ucids`` (erasure: the journal is part of the person)."""
    for i in range(0, len(ucids), _CHUNK):
        part = ucids[i : i + _CHUNK]
        conn.execute(
            profile_writes.delete().where(profile_writes.c.org_id == org_id, profile_writes.c.ucid.in_(part))
        )
        conn.execute(
            journal_unattached.delete().where(
                journal_unattached.c.org_id == org_id, journal_unattached.c.ucid.in_(part)
            )
        )


def insert_unattached(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    if rows:
        conn.execute(
            journal_unattached.insert(), [dict(zip(UNATTACHED_COLUMNS, row, strict=True)) for row in rows]
        )


def scrub_unattached(
    conn: Connection, org_id: int, region: str, ids: set[Identifier], gone: set[str]
) -> None:
    """Take ``ids`` (an erased person's, held in ``region``) and the ucids ``gone`` out of the
    journal rows of other people that carried them without taking them
    (docs/privacy.md#what-an-erasure-leaves): found through ``journal_unattached`` by id, so
    the rows read are those and the rest of their people's journals, never the org's."""
    wanted = sorted(ids)
    holders: set[str] = set()
    for i in range(0, len(wanted), _CHUNK):
        part = wanted[i : i + _CHUNK]
        keys = sa.tuple_(journal_unattached.c.id_type, journal_unattached.c.value).in_(
            [(ident.id_type, ident.value) for ident in part]
        )
        where = (journal_unattached.c.org_id == org_id, journal_unattached.c.region == region, keys)
        holders |= set(conn.execute(sa.select(journal_unattached.c.ucid).where(*where)).scalars())
        conn.execute(journal_unattached.delete().where(*where))
    # A row whose journal row went since (retention) names a ucid with no rows: nothing to scrub.
    scrub_journal(conn, org_id, holders - gone, ids, gone)


def scrub_journal(
    conn: Connection, org_id: int, ucids: Iterable[str], ids: set[Identifier], gone: set[str]
) -> None:
    """Take ``ids`` and the ucids ``gone`` out of the journal rows of ``ucids``: an erased person's,
    from the writes of a profile it was unmerged from (docs/privacy.md#what-an-erasure-leaves).
    A replay then finds them on no write, as it would find them on no profile."""
    for seq, rec in person_journal(conn, org_id, ucids):
        kept = [list(i) for i in rec.ids if i not in ids]
        released = [list(i) for i in rec.released if i not in ids]
        merges = {u: via for u, via in rec.merges.items() if u not in gone}
        named = None if rec.named_ucid in gone else rec.named_ucid
        if (len(kept), len(released), len(merges), named) == (
            len(rec.ids),
            len(rec.released),
            len(rec.merges),
            rec.named_ucid,
        ):
            continue
        conn.execute(
            profile_writes.update()
            .where(
                profile_writes.c.org_id == org_id,
                profile_writes.c.ucid == rec.ucid,
                profile_writes.c.seq == seq,
            )
            .values(
                ids=orjson.dumps(kept).decode(),
                released=orjson.dumps(released).decode() if released else None,
                merges=orjson.dumps(merges).decode(),
                named_ucid=named,
            )
        )


def move_journal(conn: Connection, org_id: int, moves: dict[int, tuple[str, str]]) -> None:
    """Re-key rows ``seq -> (from ucid, to ucid)``: the profile each write now belongs to."""
    for seq, (old, new) in sorted(moves.items()):
        if old != new:
            for table in (profile_writes, journal_unattached):
                conn.execute(
                    table.update()
                    .where(table.c.org_id == org_id, table.c.ucid == old, table.c.seq == seq)
                    .values(ucid=new)
                )


# --- retention ---
def retention_days(conn: Connection, org_id: int) -> int | None:
    """Days an org keeps its journal; None: for ever (the default)."""
    return conn.execute(
        sa.select(journal_retention.c.max_age_days).where(journal_retention.c.org_id == org_id)
    ).scalar_one_or_none()


def set_retention_days(conn: Connection, org_id: int, days: int | None, now_ms: int) -> None:
    conn.execute(journal_retention.delete().where(journal_retention.c.org_id == org_id))
    if days is not None:
        conn.execute(journal_retention.insert().values(org_id=org_id, max_age_days=days, updated_ts=now_ms))


def prune_journal(conn: Connection, now_ms: int, org_id: int | None = None) -> dict[int, int]:
    """Drop journal rows older than their org's retention; the rows dropped per org."""
    q = sa.select(journal_retention.c.org_id, journal_retention.c.max_age_days).where(
        journal_retention.c.max_age_days.is_not(None)
    )
    if org_id is not None:
        q = q.where(journal_retention.c.org_id == org_id)
    dropped: dict[int, int] = {}
    for org, days in conn.execute(q).all():
        result = conn.execute(
            profile_writes.delete().where(
                profile_writes.c.org_id == org, profile_writes.c.ts < now_ms - days * DAY_MS
            )
        )
        dropped[org] = result.rowcount
        # Their rows here share their ``ts``: they go with them.
        conn.execute(
            journal_unattached.delete().where(
                journal_unattached.c.org_id == org, journal_unattached.c.ts < now_ms - days * DAY_MS
            )
        )
    return dropped


class JournalPruner:
    """Applies retention from the write path: an org's old rows go, at most every
    ``PRUNE_EVERY_MS`` per process, in the transaction of one of its writes."""

    def __init__(self) -> None:
        self._pruned: dict[int, int] = {}

    def prune(self, conn: Connection, org_ids: Iterable[int], now_ms: int) -> None:
        for org_id in sorted(set(org_ids)):
            if now_ms - self._pruned.get(org_id, 0) > PRUNE_EVERY_MS:
                self._pruned[org_id] = now_ms
                prune_journal(conn, now_ms, org_id)
