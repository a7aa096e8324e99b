"""Pull feeds of change events: the events after a cursor, waiting a while when there are none.

Shared by ``GET /cdp/v1/changes`` and ``GET /v2/crm/changes``; knows nothing of HTTP. A wait
holds no database connection: each look is a short read, and between looks the wait sleeps on the
writer's ``EventBell`` (a commit of this process wakes it at once) or ``POLL_SECONDS`` (commits of
other processes, which ring no bell here).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
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
    while True:
        seen = db.event_bell.count
        found, last = await asyncio.to_thread(_look, db, org_id, feed, query, region)
        left = deadline - time.monotonic()
        if found or left <= 0 or _stopping or (gone is not None and await gone()):
            break
        await db.event_bell.wait(seen, min(POLL_SECONDS, left))
    return (
        b'{"changes":['
        + b",".join(event_bytes(e) for e in found)
        + b'],"next":'
        + orjson.dumps(str(last))
        + b"}"
    )


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
