"""Pull feeds of change events: the events after a cursor, waiting a while when there are none.

Shared by ``GET /cdp/v1/changes`` and ``GET /v2/crm/changes``; knows nothing of HTTP. A wait
holds no database connection. Its first look is its own (a short read); then it waits on its org's
``_Watch``, one per org and event loop while anyone waits: a single task that reads the org's
newest event id after each commit of this process that wrote the org's events (the writer's
``EventBell``; other orgs' commits leave it asleep) and every ``POLL_SECONDS`` (commits of other
processes ring no bell here). A wait reads its page only when that id has passed its cursor, and
waits of the same page share one read: so a write wakes hundreds of waits at a cost of a few
reads, not one each (which queued on the thread pool).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import orjson

from profilehub.errors import BadRequest
from profilehub.store.database import Database
from profilehub.store.events import Event, event_bytes, newest_event_id, parse_cursor, read_events

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_WAIT_SECONDS = 30
POLL_SECONDS = 1.0
# Set when the server begins to shut down: waits then answer within POLL_SECONDS instead of
# holding the shutdown for up to MAX_WAIT_SECONDS.
_stopping = False
_NUMBER = re.compile(r"^[0-9]{1,6}(\.[0-9]{1,3})?$")


@dataclass(frozen=True)
class FeedQuery:
    after: int
    limit: int
    wait: float


def parse_query(after: str | None, limit: str | None, wait: str | None) -> FeedQuery:
    """The feed's query parameters, each refused by name when out of range."""
    if limit is None:
        count = DEFAULT_LIMIT
    elif limit.isascii() and limit.isdigit() and len(limit) <= 6 and 1 <= int(limit) <= MAX_LIMIT:
        count = int(limit)
    else:
        raise BadRequest(f"{limit!r} is not a whole number from 1 to {MAX_LIMIT}", field="limit")
    if wait is None:
        seconds = 0.0
    elif _NUMBER.match(wait) and float(wait) <= MAX_WAIT_SECONDS:
        seconds = float(wait)
    else:
        raise BadRequest(f"{wait!r} is not a number of seconds from 0 to {MAX_WAIT_SECONDS}", field="wait")
    return FeedQuery(parse_cursor(after, "after"), count, seconds)


async def pull(
    db: Database,
    org_id: int,
    feed: str,
    query: FeedQuery,
    *,
    region: str | None = None,
    gone: Callable[[], Awaitable[bool]] | None = None,
) -> bytes:
    """The answer ``{"changes": [event, …], "next": "<id>"}`` as JSON bytes; ``region`` (as
    stored) keeps one region's events. ``gone`` says whether the asker has left: a wait then
    stops looking (its answer goes nowhere)."""
    deadline = time.monotonic() + query.wait
    # Its own look, not the watch's: it must see every write that committed before the request.
    found, last = await asyncio.to_thread(_look, db, org_id, feed, query, region)
    if not found and query.wait > 0:
        found, last = await _wait(db, org_id, feed, region, query.limit, last, deadline, gone)
    return (
        b'{"changes":['
        + b",".join(event_bytes(e) for e in found)
        + b'],"next":'
        + orjson.dumps(str(last))
        + b"}"
    )


async def _wait(
    db: Database,
    org_id: int,
    feed: str,
    region: str | None,
    limit: int,
    cursor: int,
    deadline: float,
    gone: Callable[[], Awaitable[bool]] | None,
) -> tuple[list[Event], int]:
    """The first page after ``cursor`` once the org's watch sees one may exist; an empty one at
    the deadline, at shutdown or when the asker has gone."""
    with _watching(db, org_id) as watch:
        while True:
            seen = watch.looks
            # Checked before the first wait too: the watch may have seen an event since this
            # wait's own look.
            if watch.failed or watch.newest > cursor:
                # Moves the cursor past the other feeds' (or regions') events even when there is
                # none of this one's: the page is what a new look from the old cursor would answer.
                found, cursor = await watch.page(feed, region, cursor, limit)
                if found:
                    return found, cursor
            left = deadline - time.monotonic()
            if left <= 0 or _stopping or (gone is not None and await gone()):
                return [], cursor
            # At most POLL_SECONDS, so shutdown and a gone asker are noticed even while the
            # watch's look is slow.
            await watch.next_look(seen, min(POLL_SECONDS, left))


def stop_waiting() -> None:
    """Let every wait of this process answer what it has (the server is shutting down)."""
    global _stopping
    _stopping = True


def _look(
    db: Database,
    org_id: int,
    feed: str,
    query: FeedQuery,
    region: str | None,
) -> tuple[list[Event], int]:
    """The page, and the cursor after it: past the org's events of other feeds or regions too, so
    a feed that is quiet while another is busy does not read the same rows again at each look.

    The org's newest id is read first, and the page only up to it: an event of this feed that
    commits in between has a greater id and waits for the next look.
    """
    with db.read() as conn:
        newest = newest_event_id(conn, org_id)
        if newest <= query.after:
            return [], query.after
        found = read_events(conn, org_id, query.after, query.limit, feed=feed, region=region, upto=newest)
    return found, found[-1].event_id if len(found) == query.limit else newest


class _Watch:
    """The org's newest event id, read for every wait of one event loop on the org: by one task,
    after each commit of this process and at least every ``POLL_SECONDS``."""

    def __init__(self, db: Database, org_id: int) -> None:
        self.db = db
        self.org_id = org_id
        self.newest = 0
        self.failed = False  # the last look raised: each wait reads for itself (and raises)
        self.waits = 0
        self.looks = 0  # how many looks were made: what a wait checked against
        self._looked = asyncio.Event()
        # The pages read since the last look, by (feed, region, after, limit): waits at the same
        # cursor (all those a write just woke, typically) take one read between them.
        self._pages: dict[tuple[str, str | None, int, int], asyncio.Future[tuple[list[Event], int]]] = {}
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            seen = self.db.event_bell.count_of(self.org_id)
            try:
                self.newest = await asyncio.to_thread(_newest, self.db, self.org_id)
                self.failed = False
            except Exception:
                self.failed = True
            self._pages = {}
            self.looks += 1
            looked, self._looked = self._looked, asyncio.Event()
            looked.set()
            await self.db.event_bell.wait(seen, POLL_SECONDS, self.org_id)

    async def next_look(self, seen: int, timeout: float) -> None:
        """Return once the watch has looked since its look number ``seen``, or after ``timeout``
        seconds. A look made while the wait was reading its page (or asking whether its asker
        has gone) counts: waiting for the one after it missed the event that look saw until
        the next commit or second."""
        if self.looks != seen:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._looked.wait(), timeout)

    async def page(self, feed: str, region: str | None, after: int, limit: int) -> tuple[list[Event], int]:
        """``_look``'s page after ``after``, read after the watch's last look."""
        key = (feed, region, after, limit)
        read = self._pages.get(key)
        if read is None:
            query = FeedQuery(after, limit, 0)
            read = asyncio.ensure_future(asyncio.to_thread(_look, self.db, self.org_id, feed, query, region))
            self._pages[key] = read
        # Shielded: a wait cancelled while reading does not cancel the read the others await.
        return await asyncio.shield(read)

    def close(self) -> None:
        self._task.cancel()


# While anyone waits: per event loop (each TestClient portal, each server process has its own).
_watches: dict[tuple[asyncio.AbstractEventLoop, Database, int], _Watch] = {}


@contextlib.contextmanager
def _watching(db: Database, org_id: int) -> Iterator[_Watch]:
    key = (asyncio.get_running_loop(), db, org_id)
    watch = _watches.get(key)
    if watch is None:
        watch = _watches[key] = _Watch(db, org_id)
    watch.waits += 1
    try:
        yield watch
    finally:
        watch.waits -= 1
        if not watch.waits:
            del _watches[key]
            watch.close()


def _newest(db: Database, org_id: int) -> int:
    with db.read() as conn:
        return newest_event_id(conn, org_id)
