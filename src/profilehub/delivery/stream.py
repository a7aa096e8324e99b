"""Publishing every event to NATS JetStream (``profilehub deliver --nats nats://HOST:4222``).

Subject ``profilehub.<orgId>.<type>`` in a stream (default ``PROFILEHUB``, subjects
``profilehub.>``) created when missing. Each message carries ``Nats-Msg-Id: <orgId>:<event
id>`` (the org too: event ids restart in another database, say a staging copy, that publishes
to the same broker), so JetStream drops a repeat within its duplicate window (2 minutes by
default): a deliverer that
died after publishing and before committing its cursor publishes those events again, and the
stream keeps one copy. Per org, one deliverer at a time publishes (a lease on ``stream_cursors``),
in event order, and commits the cursor once JetStream has acknowledged the batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError, NoStreamResponseError, NotFoundError
from sqlalchemy.engine import Connection

from profilehub.delivery import leases
from profilehub.delivery.settings import DEFAULT_STREAM
from profilehub.errors import Conflict, ServiceUnavailable
from profilehub.store.events import event_bytes, read_events
from profilehub.store.tables import stream_cursors

log = logging.getLogger(__name__)
CONNECT_SECONDS = 10
# How long a batch's acknowledgements may take once it is sent. nats-py never times out a
# ``publish_async`` acknowledgement: one lost with a broker that died (or refused by a stream's
# limits, which nats-py reports only to the error callback) left the org's publishing waiting
# forever. Past this the batch is sent again, and JetStream drops the copies it already holds.
ACK_SECONDS = 10
RECONNECTED_POLL_SECONDS = 0.1
SUBJECT_PREFIX = "profilehub"


class StreamUnavailable(ServiceUnavailable):
    """The broker cannot be reached, or the stream cannot be made (another covers its subjects)."""


class StreamRemade(Conflict):
    """The stream was made again (deleted while publishing), or the org's cursor moved back by the
    deliverer that made it, while a round was under way: nothing is committed; the round starts
    over from the cursor."""


def subject(org_id: int, event_type: str) -> str:
    return f"{SUBJECT_PREFIX}.{org_id}.{event_type}"


async def _broker_error(exc: Exception) -> None:
    # One line, not nats-py's default traceback per failed (re)connect.
    log.warning("NATS: %s", exc)


def covers_ours(stream_subject: str) -> bool:
    """Whether a stream taking ``stream_subject`` takes every subject we publish (``profilehub.>``)."""
    tokens = stream_subject.split(".")
    return tokens == [">"] or (tokens[0] in (SUBJECT_PREFIX, "*") and tokens[1:] == [">"])


def msg_id(org_id: int, event_id: int) -> str:
    return f"{org_id}:{event_id}"


async def _make_or_check(js: JetStreamContext, stream: str) -> bool:
    """Make the stream when missing (whether this call made it), or check that the one there takes
    our subjects: a stream of that name made by someone else for other subjects would refuse every
    event (no stream answers for profilehub.…): ``StreamUnavailable`` says so rather than fail
    each round, and the stream is left as it is."""
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        try:
            await js.add_stream(name=stream, subjects=[f"{SUBJECT_PREFIX}.>"])
            return True
        except BadRequestError as exc:
            try:
                info = await js.stream_info(stream)  # another deliverer made it meanwhile
            except NotFoundError:
                raise StreamUnavailable(
                    f"--stream: cannot create JetStream stream {stream!r}: {exc.description}"
                ) from exc
    taken = info.config.subjects or []
    if not any(covers_ours(s) for s in taken):
        raise StreamUnavailable(
            f"--stream: JetStream stream {stream!r} exists with subjects {', '.join(taken) or '(none)'}, "
            f"not {SUBJECT_PREFIX}.>: name a stream for {SUBJECT_PREFIX}.>, or add that subject to it"
        )
    return False


class JetStreamPublisher:
    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        stream: str,
        *,
        created: bool = False,
        restart: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.nc = nc
        self.js = js
        self.stream = stream
        # Whether this connection made the stream: then it holds nothing yet, whatever the
        # cursors say (a stream deleted, or a broker's store wiped, since they moved).
        self.created = created
        self.restart = restart
        # Bumped each time this deliverer makes the stream again; held while it does, so that no
        # org's round sends a batch read from a cursor before the restart into the new stream
        # (its events would come ahead of the earlier ones the restart sends again).
        self.generation = 0
        self._remaking = asyncio.Lock()

    @property
    def name(self) -> str:
        """The cursor row's name: one cursor per stream, whichever server it is reached on."""
        return f"nats:{self.stream}"

    @classmethod
    async def connect(
        cls, url: str, stream: str = DEFAULT_STREAM, restart: Callable[[str], Awaitable[None]] | None = None
    ) -> JetStreamPublisher:
        """Connect, and make the stream when it is missing (``created``). ``restart(name)`` is
        awaited when the stream has to be made again while publishing (deleted meanwhile): it moves
        every org's cursor on ``name`` back to the first event, as the caller does at start when
        ``created``."""
        nc = NATS()
        # Once connected it reconnects forever (a broker restart pauses publishing; the cursor
        # waits), but a broker unreachable at start is an error to report, not to wait out.
        try:
            await asyncio.wait_for(
                nc.connect(
                    servers=[url],
                    connect_timeout=5,
                    max_reconnect_attempts=-1,
                    name="profilehub-deliver",
                    error_cb=_broker_error,
                ),
                CONNECT_SECONDS,
            )
        except TimeoutError:
            raise StreamUnavailable(f"--nats: no NATS server answers at {url}") from None
        js = nc.jetstream()
        try:
            created = await _make_or_check(js, stream)
        except StreamUnavailable:
            await nc.close()
            raise
        return cls(nc, js, stream, created=created, restart=restart)

    async def ready(self) -> int:
        """The stream's generation once no remaking is under way: a round reads its cursor after
        this, and publishes and commits only while the generation stays the same."""
        async with self._remaking:
            return self.generation

    def check(self, generation: int) -> None:
        """Raise ``StreamRemade`` when the stream was made again (or is being made) since
        ``generation``: the batch's cursor is stale, and nothing of it is to be sent or committed."""
        if self._remaking.locked() or generation != self.generation:
            raise StreamRemade(f"JetStream stream {self.stream!r} made again; the round starts over")

    async def publish(self, org_id: int, batch: list[tuple[int, str, bytes]], generation: int = 0) -> None:
        """Publish (event id, type, body) in order; returns once JetStream acknowledged all.

        Raises ``StreamUnavailable`` when an acknowledgement is refused or does not come within
        ``ACK_SECONDS``: the caller keeps its cursor and publishes the batch again; and
        ``StreamRemade`` when the stream was made again since ``generation`` (``ready``), or is
        found deleted and made again now: the caller reads its cursor again."""
        # While the broker is away nats-py would buffer the messages and, batch after batch
        # sent again, overflow its buffer: wait for the reconnect instead, as the docs promise.
        while not self.nc.is_connected:
            await asyncio.sleep(RECONNECTED_POLL_SECONDS)
        acks: list[asyncio.Future[Any]] = []
        try:
            for event_id, event_type, body in batch:
                # Before each message: another org's round may have found the stream deleted.
                self.check(generation)
                acks.append(
                    await self.js.publish_async(
                        subject(org_id, event_type),
                        body,
                        stream=self.stream,
                        headers={"Nats-Msg-Id": msg_id(org_id, event_id)},
                    )
                )
        except StreamRemade:
            for ack in acks:
                ack.cancel()
            raise
        if not acks:
            return
        try:
            done, waiting = await asyncio.wait(acks, timeout=ACK_SECONDS, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            # An ack left waiting holds one of nats-py's 4000 slots for good: cancelling frees it.
            for ack in acks:
                ack.cancel()
        refused = next((f.exception() for f in done if not f.cancelled() and f.exception()), None)
        if isinstance(refused, NoStreamResponseError):
            # No stream takes our subjects (JetStream's 503, no responders): deleted, or given
            # other subjects, while we publish.
            await self._remake(generation, refused)
        if refused is not None:
            raise StreamUnavailable(
                f"JetStream stream {self.stream!r} refused an event: {refused}"
            ) from refused
        if waiting:
            raise StreamUnavailable(
                f"JetStream did not acknowledge {len(waiting)} of {len(batch)} events within "
                f"{ACK_SECONDS} s (broker lost or stream at its limits); publishing them again"
            )

    async def _remake(self, generation: int, refused: Exception) -> None:
        """Make the stream again if it is gone, as at start, and have every org start over from
        its first event (``StreamRemade``); a stream there with other subjects is refused as at
        start. One round does it; the others, refused alike, find it done."""
        async with self._remaking:
            if generation != self.generation:
                raise StreamRemade(f"JetStream stream {self.stream!r} made again; the round starts over")
            if not await _make_or_check(self.js, self.stream):
                return  # there again (another deliverer made it): the caller retries as for any refusal
            if self.restart is not None:
                await self.restart(self.name)
            self.generation += 1
            log.warning(
                "JetStream stream %r was deleted while publishing (%s); made it again for %s.>: "
                "every org publishes again from its first retained event",
                self.stream,
                refused,
                SUBJECT_PREFIX,
            )
        raise StreamRemade(f"JetStream stream {self.stream!r} made again; the round starts over")

    async def close(self) -> None:
        # Drained when connected (what was published is flushed); while the broker is away
        # nats-py refuses to drain, and that error skipped handing the leases back at a stop.
        if self.nc.is_connected:
            await self.nc.drain()
        else:
            await self.nc.close()


def restart_cursors(conn: Connection, name: str) -> None:
    """A stream just made starts with every org's first retained event, as the docs promise: the
    cursors of a stream of that name deleted before would skip what it had held.

    Each reset moves every cursor, to one below the start (below its last reset when it had not
    moved since): every event id is above it, so the org reads from its first event as from 0, and
    a batch another deliverer read before the reset (sent to the deleted stream) finds its cursor
    moved and is not committed (``commit_batch``). Reset to 0, an org that had published nothing
    kept its cursor, and that batch was committed: lost from the new stream."""
    cursor = stream_cursors.c.cursor
    conn.execute(
        stream_cursors.update()
        .where(stream_cursors.c.stream == name)
        .values(cursor=sa.case((cursor > 0, -1), else_=cursor - 1), published=0)
    )


def ensure_cursor(conn: Connection, org_id: int, name: str) -> None:
    """The org's cursor row for this stream, from the first event on (a new stream gets them all)."""
    where = (stream_cursors.c.org_id == org_id, stream_cursors.c.stream == name)
    if conn.execute(sa.select(stream_cursors.c.cursor).where(*where)).first() is None:
        try:
            with conn.begin_nested():
                conn.execute(
                    stream_cursors.insert().values(org_id=org_id, stream=name, cursor=0, published=0)
                )
        except sa.exc.IntegrityError:
            pass  # another deliverer inserted it at the same moment


def read_batch(
    conn: Connection, org_id: int, name: str, limit: int
) -> tuple[int, list[tuple[int, str, bytes]]]:
    cursor = int(
        conn.execute(
            sa.select(stream_cursors.c.cursor).where(
                stream_cursors.c.org_id == org_id, stream_cursors.c.stream == name
            )
        ).scalar_one()
    )
    events = read_events(conn, org_id, cursor, limit)
    return cursor, [(e.event_id, e.type, event_bytes(e)) for e in events]


def commit_batch(
    conn: Connection, org_id: int, name: str, owner: str, until: int, read: int, cursor: int, published: int
) -> None:
    """Move the org's cursor from ``read`` (where the batch was read) to ``cursor``. Not when it
    moved meanwhile (``StreamRemade``): a deliverer that made the stream again set it back to the
    start, and the batch, sent to the old stream, is to be sent again from there."""
    key: dict[str, Any] = {"org_id": org_id, "stream": name}
    leases.renew(conn, stream_cursors, key, owner, until)
    moved = conn.execute(
        stream_cursors.update()
        .where(
            stream_cursors.c.org_id == org_id,
            stream_cursors.c.stream == name,
            stream_cursors.c.cursor == read,
        )
        .values(cursor=cursor, published=stream_cursors.c.published + published)
    ).rowcount
    if not moved:
        raise StreamRemade(f"the cursor of org {org_id} on {name} moved back; publishing again from it")
