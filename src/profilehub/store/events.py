"""The outbox: every committed change as an event, numbered by a cursor and read back in order.

Shape, for code that writes, pulls or delivers events (docs/events.md is the user's reference):

- Table ``events`` (``store/tables.py``): ``org_id``, ``event_id`` (the cursor), ``feed`` (``"cdp"``
  for ``profile.*`` events, ``"crm"`` for the rest), ``type``, ``region`` (CDP events; None for
  CRM), ``ts`` (epoch ms), ``entity_id`` (the ordering key: the profile's ucid, the person's,
  company's or record's id) and ``data`` (JSON text).
- ``EventRow``: what a write appends; ``append_events(conn, rows)`` in the write's own
  transaction. ``event_id`` is not the caller's: it is allocated when the rows are inserted.
- ``forget_events(conn, org_id, entity_ids)``: an erasure or a CRM delete removes the earlier
  events of what it erased (they hold its values) before it appends its own; so ids have gaps
  and an event not yet fetched or delivered may vanish. ``forget_events_until(conn, org_id,
  bounds)`` does the same for the events up to a time of profiles an erased person was unmerged
  from (``unmerge_history``).
- ``read_events(conn, org_id, after, limit, feed=None, region=None, upto=None)`` ->
  ``list[Event]``: the org's events with ``after < event_id <= upto``, lowest first.
  ``Event.data`` stays JSON text. ``newest_event_id(conn, org_id)`` bounds a filtered read whose
  cursor may then move past what the filter skipped (``feeds.py``).
- ``event_json(event)`` -> the wire shape ``{"id": "<event_id>", "type", "orgId", "region" (CDP
  events only), "ts", "data"}``; ``event_bytes(event)`` is the same as JSON bytes without parsing
  ``data`` again. ``parse_cursor`` reads an ``id`` back (``"0"``: from the beginning);
  ``last_event_id(conn)`` is the newest id handed out in the database (the "now" of a cursor).
- ``EventBell``: rung by the writer thread after each commit that wrote events, so long-polls
  in the same process wake at once (others poll).

Cursors are allocated in commit order. A sequence or autoincrement would not be: on PostgreSQL
two transactions can take ids 7 and 8 and commit 8 first, and a reader that has passed 8 never
sees 7. Here the ids come from one counter row (``event_sequence``) that a transaction updates as
its last statement and holds until it commits (SQLite has a single writer anyway), so an id is
only ever visible after every smaller one. Inside the writer (every ``Database.write`` job) the
rows are collected and inserted just before commit, so the row is held for milliseconds and never
while a job waits on another lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.errors import BadRequest
from profilehub.store.rows import insert_rows
from profilehub.store.tables import event_sequence, events, webhook_pending

PROFILE_CREATED = "profile.created"
PROFILE_UPDATED = "profile.updated"
PROFILE_MERGED = "profile.merged"
PROFILE_UNMERGED = "profile.unmerged"
PROFILE_ERASED = "profile.erased"
# For the org's mailer: an erasure asked (sendEmailNotification) that the person be told; profilehub
# sends no email itself. Carries the receipt id and the ucids, no values (docs/privacy.md).
ERASURE_NOTIFICATION_REQUESTED = "erasure.notification_requested"
CDP_TYPES = (
    PROFILE_CREATED,
    PROFILE_UPDATED,
    PROFILE_MERGED,
    PROFILE_UNMERGED,
    PROFILE_ERASED,
    ERASURE_NOTIFICATION_REQUESTED,
)
CRM_TYPES = tuple(
    f"{entity}.{action}"
    for entity in ("person", "company", "record")
    for action in ("created", "updated", "deleted")
)
EVENT_TYPES = CDP_TYPES + CRM_TYPES
FEEDS = ("cdp", "crm")

_PENDING = "profilehub.pending_events"  # Connection.info key of the writer's collected rows
_SEQUENCE = "events"


@dataclass(frozen=True, slots=True)
class EventRow:
    """One change to record. ``data`` is JSON-serialisable; ``region`` only for CDP events."""

    org_id: int
    type: str
    ts: int
    entity_id: str
    data: dict[str, Any]
    region: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """One stored event; ``data`` is its JSON text."""

    event_id: int
    org_id: int
    type: str
    region: str | None
    ts: int
    entity_id: str
    data: str

    @property
    def feed(self) -> str:
        return feed_of(self.type)


def feed_of(event_type: str) -> str:
    return "cdp" if event_type.startswith(("profile.", "erasure.")) else "crm"


def append_events(conn: Connection, rows: list[EventRow]) -> None:
    """Record ``rows`` in the transaction ``conn`` is in: they commit or roll back with it.

    In the writer the rows wait for the end of the transaction (see the module's docstring);
    elsewhere they are inserted now.
    """
    if not rows:
        return
    pending: list[EventRow] | None = conn.info.get(_PENDING)
    if pending is not None:
        pending += rows
    else:
        insert_events(conn, rows)


def pending_events(conn: Connection) -> list[EventRow] | None:
    """The rows the writer has collected on ``conn`` so far (None outside the writer): a savepoint
    rolled back drops the ones appended after it began."""
    pending: list[EventRow] | None = conn.info.get(_PENDING)
    return pending


@contextmanager
def collected(conn: Connection) -> Iterator[list[EventRow]]:
    """Collect what ``append_events`` is given on ``conn`` and insert it when the block ends
    without an error: the writer wraps each transaction's jobs in this. The caller may drop rows
    from the yielded list (those of a job that failed)."""
    pending: list[EventRow] = []
    conn.info[_PENDING] = pending
    try:
        yield pending
        del conn.info[_PENDING]
        insert_events(conn, pending)
    finally:
        conn.info.pop(_PENDING, None)


_COLUMNS = ("org_id", "event_id", "feed", "type", "region", "ts", "entity_id", "data")


def reserve_event_ids(conn: Connection, count: int) -> int:
    """Take ``count`` ids from the counter (its row stays taken until commit); the first of them.

    On the driver's own cursor, as the profile writes are (``store/rows.py``): built as
    SQLAlchemy statements, this and the insert cost the writer a tenth of a write's time.
    """
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    cursor = conn.connection.cursor()
    try:
        cursor.execute(
            f"UPDATE event_sequence SET last_id = last_id + {mark} WHERE name = {mark} RETURNING last_id",
            (count, _SEQUENCE),
        )
        (last,) = cursor.fetchone() or (None,)
    finally:
        cursor.close()
    if last is None:
        raise RuntimeError("event_sequence has no 'events' row: the schema was not migrated")
    return int(last) - count + 1


def insert_events(conn: Connection, rows: list[EventRow]) -> None:
    """Number ``rows`` from the counter (``reserve_event_ids``) and insert them."""
    if not rows:
        return
    first = reserve_event_ids(conn, len(rows))
    values = [
        (
            r.org_id,
            first + i,
            feed_of(r.type),
            r.type,
            r.region,
            r.ts,
            r.entity_id,
            orjson.dumps(r.data).decode(),
        )
        for i, r in enumerate(rows)
    ]
    insert_rows(conn, "events", _COLUMNS, values)


def take_turns_with_erasures(conn: Connection, org_id: int, *, erasing: bool) -> None:
    """PostgreSQL: a transaction deleting an org's events (``erasing``) and a webhook round's
    commit, which locks events and their waiting rows, take turns on one advisory lock of the
    org (rounds share it). Row locks cannot keep them apart: an erasure deletes events and
    waiting rows of several entities (a profile's, then its CRM people's), in several statements,
    in no order a round could follow, so each held rows the other waited for (a deadlock)."""
    if conn.dialect.name == "postgresql":
        lock = "pg_advisory_xact_lock" if erasing else "pg_advisory_xact_lock_shared"
        conn.execute(sa.text(f"SELECT {lock}(hashtextextended(:k, 0))"), {"k": f"{org_id}:events"})


def forget_events(conn: Connection, org_id: int, entity_ids: list[str]) -> None:
    """Delete the events of erased or deleted entities (they carry their values), including those
    still waiting for this transaction's commit. Their ids are gone from the feeds for good."""
    if not entity_ids:
        return
    take_turns_with_erasures(conn, org_id, erasing=True)
    gone = set(entity_ids)
    pending: list[EventRow] | None = conn.info.get(_PENDING)
    if pending:
        pending[:] = [r for r in pending if not (r.org_id == org_id and r.entity_id in gone)]
    for start in range(0, len(entity_ids), 500):
        chunk = entity_ids[start : start + 500]
        # Locked in event_id order first (PostgreSQL; SQLite has no row locks), the order in which
        # a webhook round locks events FOR SHARE: deleted in index order (by entity, then row
        # position, which two server processes' inserts leave unlike event_id order) the two
        # statements could each hold a row the other waits for, a deadlock.
        doomed = (
            sa.select(events.c.event_id)
            .where(events.c.org_id == org_id, events.c.entity_id.in_(chunk))
            .order_by(events.c.event_id)
            .with_for_update()
        )
        conn.execute(events.delete().where(events.c.org_id == org_id, events.c.event_id.in_(doomed)))
        # Their copies waiting for a webhook endpoint (keyed by the entity's id) go too.
        conn.execute(
            webhook_pending.delete().where(
                webhook_pending.c.org_id == org_id, webhook_pending.c.ordering_key.in_(chunk)
            )
        )


def forget_events_until(conn: Connection, org_id: int, bounds: dict[str, int]) -> int:
    """Delete the events of each profile in ``bounds`` up to its time (epoch ms), but not that
    time's ``profile.unmerged``: the events that carried a person it was one with until the unmerge
    at that time, which is being erased (``unmerge_history``). The unmerge's own event holds the
    profile as it was rebuilt, without that person. Answers how many went."""
    gone: list[int] = []
    for entity_id, until in bounds.items():
        gone += conn.execute(
            sa.select(events.c.event_id).where(
                events.c.org_id == org_id,
                events.c.entity_id == entity_id,
                sa.or_(events.c.ts < until, sa.and_(events.c.ts == until, events.c.type != PROFILE_UNMERGED)),
            )
        ).scalars()
    for start in range(0, len(gone), 500):
        chunk = gone[start : start + 500]
        conn.execute(events.delete().where(events.c.org_id == org_id, events.c.event_id.in_(chunk)))
        conn.execute(
            webhook_pending.delete().where(
                webhook_pending.c.org_id == org_id, webhook_pending.c.event_id.in_(chunk)
            )
        )
    return len(gone)


def read_events(
    conn: Connection,
    org_id: int,
    after: int,
    limit: int,
    *,
    feed: str | None = None,
    region: str | None = None,
    upto: int | None = None,
) -> list[Event]:
    """The org's events after cursor ``after`` (and at most ``upto``), in cursor (= commit) order,
    at most ``limit``."""
    q = sa.select(
        events.c.event_id,
        events.c.org_id,
        events.c.type,
        events.c.region,
        events.c.ts,
        events.c.entity_id,
        events.c.data,
    ).where(events.c.org_id == org_id, events.c.event_id > after)
    if feed is not None:
        q = q.where(events.c.feed == feed)
    if region is not None:
        q = q.where(events.c.region == region)
    if upto is not None:
        q = q.where(events.c.event_id <= upto)
    q = q.order_by(events.c.event_id).limit(limit)
    return [Event(*row) for row in conn.execute(q)]


def newest_event_id(conn: Connection, org_id: int) -> int:
    """The org's newest event id (0: none).

    Every smaller id of the org had committed (or rolled back) by the time this one did, so a
    filtered read up to it that finds nothing more may move its cursor here.
    """
    q = (
        sa.select(events.c.event_id)
        .where(events.c.org_id == org_id)
        .order_by(events.c.event_id.desc())
        .limit(1)
    )
    return int(conn.execute(q).scalar() or 0)


def last_event_id(conn: Connection) -> int:
    """The newest cursor handed out in the database (0: none yet)."""
    return int(
        conn.execute(
            sa.select(event_sequence.c.last_id).where(event_sequence.c.name == _SEQUENCE)
        ).scalar_one()
    )


def event_json(event: Event) -> dict[str, Any]:
    """The event as the feeds and deliveries carry it."""
    out: dict[str, Any] = {"id": str(event.event_id), "type": event.type, "orgId": event.org_id}
    if event.region is not None:
        out["region"] = event.region
    out["ts"] = event.ts
    out["data"] = orjson.loads(event.data)
    return out


def event_bytes(event: Event) -> bytes:
    """``event_json`` as JSON bytes, ``data`` spliced in as stored rather than parsed again."""
    out: dict[str, Any] = {"id": str(event.event_id), "type": event.type, "orgId": event.org_id}
    if event.region is not None:
        out["region"] = event.region
    out["ts"] = event.ts
    out["data"] = orjson.Fragment(event.data)
    return orjson.dumps(out)


def parse_cursor(raw: str | None, field: str = "after") -> int:
    """An event id given back as a cursor; None or absent is the beginning (0)."""
    if raw is None:
        return 0
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or int(raw) >= 2**63:
        raise BadRequest(f"{raw!r} is not an event id (the id or next of a change)", field=field)
    return int(raw)


class EventBell:
    """Wakes waiters in this process when the writer commits events.

    Counters, so a waiter that read nothing at count ``seen`` and only then starts to wait still
    wakes for a commit that landed in between: one for every commit, and one per org for the
    commits that wrote its events, so a wait on one org's events (a feed's watch) sleeps through
    other orgs' commits (with many orgs' feeds followed, every write woke every org's watch).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        # Per org: its commits, plus the rings that did not say whose events they were.
        self._org_counts: dict[int, int] = {}
        self._unsaid = 0
        # (loop, future, org): org None wakes at every ring.
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None], int | None]] = []
        self._listeners: list[Callable[[], None]] = []

    def listen(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (in the ringing thread; it must not block) at every ring: how a
        deliverer in another process is woken (``delivery/process.py``)."""
        with self._lock:
            self._listeners = [*self._listeners, callback]

    def unlisten(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._listeners = [c for c in self._listeners if c != callback]

    @property
    def count(self) -> int:
        return self._count

    def count_of(self, org_id: int) -> int:
        """The rings that may have written ``org_id``'s events (``wait(..., org_id=...)``)."""
        return self._org_counts.get(org_id, 0) + self._unsaid

    def ring(self, org_ids: Collection[int] | None = None) -> None:
        """Called by the writer thread after a commit that wrote events of ``org_ids`` (None: of
        orgs it does not say, which wakes every wait)."""
        with self._lock:
            self._count += 1
            if org_ids is None:
                self._unsaid += 1
                waiters, self._waiters = self._waiters, []
            else:
                for org_id in org_ids:
                    self._org_counts[org_id] = self._org_counts.get(org_id, 0) + 1
                waiters = [w for w in self._waiters if w[2] is None or w[2] in org_ids]
                self._waiters = [w for w in self._waiters if not (w[2] is None or w[2] in org_ids)]
            listeners = self._listeners
        for callback in listeners:
            callback()
        for loop, fut, _ in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(_wake, fut)

    async def wait(self, seen: int, timeout: float, org_id: int | None = None) -> None:
        """Return once the count (``org_id``'s, when given: ``count_of``) differs from ``seen``,
        or after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        waiter = (loop, fut, org_id)
        with self._lock:
            if (self._count if org_id is None else self.count_of(org_id)) != seen:
                return
            self._waiters.append(waiter)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
