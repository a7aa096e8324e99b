"""Delivering one endpoint's events: new events from its cursor, failed ones on their schedule.

Per endpoint the database holds a cursor (every event up to it is delivered, skipped as another
type, or pending) and the pending events (``webhook_pending``). Events of one ordering key (a
profile, a person...) go out one at a time, in event order: while a key has a pending event, its
later events queue behind it. A round sends, then commits what happened in one transaction that
first renews the lease; a deliverer that dies before that commit leaves the cursor where it was,
and the next one sends those events again with the same ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from standardwebhooks.webhooks import Webhook

from profilehub.delivery import leases
from profilehub.delivery.endpoints import BEHIND
from profilehub.delivery.event_types import ordering_key
from profilehub.delivery.sender import Outcome, WebhookSender
from profilehub.delivery.settings import DeliverySettings
from profilehub.errors import Conflict
from profilehub.store.database import Database, SoloJob
from profilehub.store.events import event_bytes, read_events, take_turns_with_erasures
from profilehub.store.tables import events as event_rows
from profilehub.store.tables import webhook_endpoints, webhook_pending

log = logging.getLogger(__name__)
# Events of one key sent in one round before the round commits (the rest stay pending, due now).
CHAIN_LIMIT = 100
# What a round did: nothing; something; a whole batch of new events (more may wait: no pause).
IDLE, DONE, MORE = 0, 1, 2


@dataclass
class Target:
    """What a round needs of the endpoint row."""

    org_id: int
    endpoint_id: str
    url: str
    secret: str
    event_types: frozenset[str]
    cursor: int
    failing_since: int | None
    disabled: bool
    # Whether events wait in webhook_pending (then new events of their keys queue behind them),
    # and whether any is due now (then the round retries first): read with the row, so a healthy
    # endpoint's round costs no query of that table.
    has_pending: bool = True
    has_due: bool = True
    lease_owner: str | None = None
    signer: Webhook = field(init=False)

    def __post_init__(self) -> None:
        self.signer = Webhook(self.secret)

    @property
    def key(self) -> dict[str, object]:
        return {"org_id": self.org_id, "endpoint_id": self.endpoint_id}

    def wants(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


@dataclass
class Item:
    """One event of a round: sent (or not) in its key's order."""

    event_id: int
    key: str
    body: str
    attempts: int = 0  # failed attempts before this round
    outcome: Outcome | None = None  # None: not attempted this round


@dataclass
class RoundResult:
    """What a round did, committed in one transaction by ``commit_round``."""

    new: list[Item] = field(default_factory=list)  # events read after the cursor (retry: empty)
    retried: list[Item] = field(default_factory=list)  # pending rows attempted this round
    cursor: int | None = None
    blocked_keys: set[str] = field(default_factory=set)


def load_target(conn: Connection, org_id: int, endpoint_id: str, now: int) -> Target | None:
    mine = (webhook_pending.c.org_id == org_id, webhook_pending.c.endpoint_id == endpoint_id)
    row = conn.execute(
        sa.select(
            webhook_endpoints,
            sa.exists().where(*mine).label("has_pending"),
            sa.exists().where(*mine, webhook_pending.c.next_attempt_ts <= now).label("has_due"),
        ).where(webhook_endpoints.c.org_id == org_id, webhook_endpoints.c.endpoint_id == endpoint_id)
    ).first()
    if row is None:
        return None
    return Target(
        org_id=row.org_id,
        endpoint_id=row.endpoint_id,
        url=row.url,
        secret=row.secret,
        event_types=frozenset(t for t in row.event_types.split(",") if t),
        cursor=int(row.cursor),
        failing_since=row.failing_since,
        disabled=row.disabled_ts is not None,
        has_pending=bool(row.has_pending),
        has_due=bool(row.has_due),
        lease_owner=row.lease_owner,
    )


def _pending_where(target: Target) -> tuple[sa.ColumnElement[bool], ...]:
    return (webhook_pending.c.org_id == target.org_id, webhook_pending.c.endpoint_id == target.endpoint_id)


def due_heads(conn: Connection, target: Target, now: int, limit: int) -> list[Item]:
    """Pending events due now that are first of their key (at most one per key)."""
    earlier = webhook_pending.alias("earlier")
    rows = conn.execute(
        sa.select(
            webhook_pending.c.event_id,
            webhook_pending.c.ordering_key,
            webhook_pending.c.body,
            webhook_pending.c.attempts,
        )
        .where(
            *_pending_where(target),
            webhook_pending.c.next_attempt_ts <= now,
            ~sa.exists().where(
                earlier.c.org_id == webhook_pending.c.org_id,
                earlier.c.endpoint_id == webhook_pending.c.endpoint_id,
                earlier.c.ordering_key == webhook_pending.c.ordering_key,
                earlier.c.event_id < webhook_pending.c.event_id,
            ),
        )
        .order_by(webhook_pending.c.event_id)
        .limit(limit)
    )
    return [Item(r.event_id, r.ordering_key, r.body, r.attempts) for r in rows]


def queued_behind(conn: Connection, target: Target, heads: list[Item], per_key: int) -> list[Item]:
    """The events waiting behind each head, in order, up to ``per_key`` of each key."""
    out: list[Item] = []
    for head in heads:
        rows = conn.execute(
            sa.select(webhook_pending.c.event_id, webhook_pending.c.body, webhook_pending.c.attempts)
            .where(
                *_pending_where(target),
                webhook_pending.c.ordering_key == head.key,
                webhook_pending.c.event_id > head.event_id,
            )
            .order_by(webhook_pending.c.event_id)
            .limit(per_key)
        )
        out += [Item(r.event_id, head.key, r.body, r.attempts) for r in rows]
    return out


def pending_keys(conn: Connection, target: Target, keys: Iterable[str]) -> set[str]:
    wanted = sorted(set(keys))
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        found |= set(
            conn.execute(
                sa.select(webhook_pending.c.ordering_key)
                .where(
                    *_pending_where(target), webhook_pending.c.ordering_key.in_(wanted[start : start + 500])
                )
                .distinct()
            ).scalars()
        )
    return found


def new_items(conn: Connection, target: Target, limit: int) -> tuple[list[Item], int | None, bool]:
    """Events after the cursor this endpoint wants, the cursor past all read (None: none), and
    whether ``limit`` events were read (more may wait)."""
    events = read_events(conn, target.org_id, target.cursor, limit)
    if not events:
        return [], None, False
    items = [
        Item(e.event_id, ordering_key(e), event_bytes(e).decode()) for e in events if target.wants(e.type)
    ]
    return items, events[-1].event_id, len(events) >= limit


async def send_in_key_order(
    items: list[Item],
    target: Target,
    sender: WebhookSender,
    concurrency: int,
    deadline: float,
    clock: Callable[[], float],
) -> None:
    """Send each key's items one after another, keys side by side (at most ``concurrency``); a
    key stops at its first failure (its later items wait behind it) or at ``deadline``."""
    chains: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        chains[item.key].append(item)
    gate = asyncio.Semaphore(concurrency)

    async def send_chain(chain: list[Item]) -> None:
        async with gate:
            for item in chain:
                if time.monotonic() > deadline:
                    return
                item.outcome = await sender.post(
                    target.url, target.signer, str(item.event_id), item.body, clock()
                )
                if not item.outcome.delivered:
                    return

    await asyncio.gather(*(send_chain(chain) for chain in chains.values()))


def next_attempt(attempts: int, schedule: tuple[float, ...], now_ms: int) -> int | None:
    """When to try an event again after its ``attempts``-th failure; None: the schedule is spent."""
    if attempts > len(schedule):
        return None
    return now_ms + int(schedule[attempts - 1] * 1000)


def _retry_at(item: Item, attempts: int, schedule: tuple[float, ...], now_ms: int) -> int:
    """``next_attempt`` for a failed item, no sooner than its answer's ``Retry-After`` asked
    (honoured up to the schedule's longest step, so a receiver cannot park an event for days);
    now when the schedule is spent (the endpoint is being disabled)."""
    when = next_attempt(attempts, schedule, now_ms)
    if when is None:
        return now_ms
    wait = item.outcome.retry_after if item.outcome is not None else None
    if wait is not None and schedule:
        when = max(when, now_ms + int(min(wait, max(schedule)) * 1000))
    return when


def commit_round(
    conn: Connection,
    target: Target,
    result: RoundResult,
    owner: str,
    settings: DeliverySettings,
    now_ms: int,
) -> None:
    """Record a round: renew the lease (or stop with ``LeaseLost`` before writing anything),
    delete delivered events, reschedule failed ones, queue the rest, move the cursor."""
    delivered = [i for i in [*result.retried, *result.new] if i.outcome is not None and i.outcome.delivered]
    failed = [i for i in [*result.retried, *result.new] if i.outcome is not None and not i.outcome.delivered]
    retried_ids = {i.event_id for i in result.retried}
    where = _pending_where(target)
    exhausted: Item | None = None
    for item in failed:
        if next_attempt(item.attempts + 1, settings.retry_schedule, now_ms) is None:
            exhausted = exhausted or item

    # Before any row is locked: an erasure in progress finishes first (its events and waiting
    # rows deleted), or waits for this commit.
    take_turns_with_erasures(conn, target.org_id, erasing=False)
    # The endpoint's row first, in one statement that also renews the lease and checks that the
    # cursor is where the round read it: a healthy round's commit is this statement (and the turn above).
    values: dict[str, object] = {"lease_until": now_ms + int(settings.lease_seconds * 1000)}
    if result.cursor is not None:
        values["cursor"] = result.cursor
    if delivered:
        values["delivered"] = webhook_endpoints.c.delivered + len(delivered)
    if failed:
        values["last_error"] = _error(failed[-1])
        if target.failing_since is None:
            values["failing_since"] = now_ms
    elif delivered and target.failing_since is not None:
        values["failing_since"] = None
    if exhausted is not None:
        values["disabled_ts"] = now_ms
        values["disabled_reason"] = (
            f"event {exhausted.event_id} failed {exhausted.attempts + 1} times over the retry schedule "
            f"(last: {_error(exhausted)}); its events wait: enable the endpoint to deliver them"
        )
    row = webhook_endpoints.c
    update = webhook_endpoints.update().where(
        row.org_id == target.org_id, row.endpoint_id == target.endpoint_id
    )
    if result.cursor is not None:
        # A replay hands the lease back as it moves the cursor; a round that read from the moved
        # cursor (the check below) may take it again with its commit, unless another has.
        values["lease_owner"] = owner
        update = update.where(
            row.cursor == target.cursor, sa.or_(row.lease_owner == owner, row.lease_owner.is_(None))
        )
    else:
        update = update.where(row.lease_owner == owner)
    if not conn.execute(update.values(**values)).rowcount:
        # Nothing written: the endpoint was deleted while the round ran (its waiting events with
        # it), another deliverer holds the lease now, or the cursor was moved (a replay) and the
        # round's reading is stale (what it sent was sent once more). Each way the round records
        # nothing; a deleted endpoint is no failure, and the next round finds it gone and lets go.
        cursor = _cursor(conn, target)
        if cursor is None:
            return
        if result.cursor is not None and cursor != target.cursor:
            raise StaleRound("the cursor moved during the round", field="cursor")
        raise leases.LeaseLost(f"lease of {target.key} lost", field="lease")
    # What is now first of its key: the first failure, else the first not attempted.
    heads: dict[str, Item] = {}
    for item in [*result.retried, *result.new]:
        if (item.outcome is None or not item.outcome.delivered) and item.key not in heads:
            heads[item.key] = item
    # New events not delivered: queued (a failed or unattempted first of its key is the head).
    # Read (and on PostgreSQL locked, below) before any waiting row is touched: an erasure
    # deletes events first, then their waiting rows, so a round that held waiting rows while
    # it waited for the erasure's events would deadlock with it.
    queued = []
    rows: list[dict[str, object]] = []
    for item in result.new:
        if item.outcome is not None and item.outcome.delivered:
            continue
        head = heads.get(item.key) is item and item.key not in result.blocked_keys
        when = BEHIND
        if head:
            when = now_ms
            if item.outcome is not None:
                when = _retry_at(item, 1, settings.retry_schedule, now_ms)
        queued.append(
            {
                "org_id": target.org_id,
                "endpoint_id": target.endpoint_id,
                "event_id": item.event_id,
                "ordering_key": item.key,
                "body": item.body,
                "attempts": 1 if item.outcome is not None else 0,
                "next_attempt_ts": when,
                "last_error": _error(item),
            }
        )
    if queued:
        present = set(
            conn.execute(
                sa.select(webhook_pending.c.event_id).where(
                    *where, webhook_pending.c.event_id.in_([q["event_id"] for q in queued])
                )
            ).scalars()
        )  # a replay reads events that may still be pending: those stay as they are
        rows = [q for q in queued if q["event_id"] not in present]
        if rows:
            # An erasure may have deleted some of these events since the round read them: their
            # values must not wait here. The survivors are read FOR SHARE (PostgreSQL), so an
            # erasure of them waits for this commit and then deletes these rows with them
            # (events first, then their waiting copies: ``store.events.forget_events``); SQLite's
            # write transactions do not interleave.
            alive = set(
                conn.execute(
                    sa.select(event_rows.c.event_id)
                    .where(
                        event_rows.c.org_id == target.org_id,
                        event_rows.c.event_id.in_([r["event_id"] for r in rows]),
                    )
                    .order_by(event_rows.c.event_id)  # an erasure locks them in this order too
                    .with_for_update(read=True)
                ).scalars()
            )
            rows = [r for r in rows if r["event_id"] in alive]
    if not failed and delivered and target.failing_since is not None:
        # The endpoint answers again: everything waiting is due now, in order.
        conn.execute(
            webhook_pending.update()
            .where(*where, webhook_pending.c.next_attempt_ts != BEHIND)
            .values(next_attempt_ts=now_ms)
        )

    gone = [i.event_id for i in delivered if i.event_id in retried_ids]
    for start in range(0, len(gone), 500):
        conn.execute(
            webhook_pending.delete().where(*where, webhook_pending.c.event_id.in_(gone[start : start + 500]))
        )

    for item in failed:
        when = _retry_at(item, item.attempts + 1, settings.retry_schedule, now_ms)
        if item.event_id in retried_ids:
            conn.execute(
                webhook_pending.update()
                .where(*where, webhook_pending.c.event_id == item.event_id)
                .values(attempts=item.attempts + 1, next_attempt_ts=when, last_error=_error(item))
            )
    # A key whose head was delivered in a retry and whose next event waits behind it: due now,
    # unless this round already set its state (attempted it, or will queue it below).
    for key in {i.key for i in delivered if i.event_id in retried_ids} - set(heads):
        conn.execute(
            webhook_pending.update()
            .where(
                *where,
                webhook_pending.c.ordering_key == key,
                webhook_pending.c.event_id
                == sa.select(sa.func.min(webhook_pending.c.event_id))
                .where(*where, webhook_pending.c.ordering_key == key)
                .scalar_subquery(),
            )
            .values(next_attempt_ts=now_ms)
        )
    if result.retried:
        for item in result.retried:
            if item.outcome is None and heads.get(item.key) is item:
                conn.execute(
                    webhook_pending.update()
                    .where(*where, webhook_pending.c.event_id == item.event_id)
                    .values(next_attempt_ts=now_ms)
                )
    if rows:
        conn.execute(webhook_pending.insert(), rows)


def round_job(
    target: Target, result: RoundResult, owner: str, settings: DeliverySettings, now_ms: Callable[[], int]
) -> SoloJob:
    """The writer job recording a round, in a transaction of its own: rounds of several endpoints
    batched in one transaction would lock one round's waiting rows before the next round's events,
    the order an erasure's deletes take the other way round (a deadlock)."""
    return SoloJob(lambda conn: commit_round(conn, target, result, owner, settings, now_ms()))


class StaleRound(Conflict):
    """The endpoint's cursor was moved (a replay) while the round ran: nothing is committed."""


def _cursor(conn: Connection, target: Target) -> int | None:
    """The endpoint's cursor; None when the endpoint was deleted."""
    cursor = conn.execute(
        sa.select(webhook_endpoints.c.cursor).where(
            webhook_endpoints.c.org_id == target.org_id,
            webhook_endpoints.c.endpoint_id == target.endpoint_id,
        )
    ).scalar_one_or_none()
    return None if cursor is None else int(cursor)


def _error(item: Item) -> str | None:
    return None if item.outcome is None else item.outcome.error


class EndpointRounds:
    """The rounds of one endpoint, for the deliverer holding its lease."""

    def __init__(
        self,
        db: Database,
        org_id: int,
        endpoint_id: str,
        owner: str,
        sender: WebhookSender,
        settings: DeliverySettings,
        clock: Callable[[], float],
    ) -> None:
        self.db = db
        self.org_id = org_id
        self.endpoint_id = endpoint_id
        self.owner = owner
        self.sender = sender
        self.settings = settings
        self.clock = clock

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def _read(self, query: Callable[[Connection], object]) -> object:
        def run() -> object:
            with self.db.read() as conn:
                return query(conn)

        return await asyncio.to_thread(run)

    async def round(self) -> int | None:
        """One round: retries due, then new events. ``MORE`` if it read a full batch (the next
        round should not wait), ``DONE`` if it did something, ``IDLE`` if not, None when the
        endpoint is gone or disabled (the caller lets its lease go)."""
        look = await asyncio.to_thread(self._look)
        if look.target is None or look.target.disabled:
            return None
        if look.target.lease_owner not in (None, self.owner):
            # Another deliverer took the endpoint (after a replay handed the lease back, or ours
            # ran out): stop before sending what it sends.
            raise leases.LeaseLost(f"lease of {look.target.key} lost", field="lease")
        did = IDLE
        if look.target.has_due:
            did = await self._retries(look.target)
            # What was read with the target may be blocked behind what the retries left waiting.
            look = await asyncio.to_thread(self._look)
            if look.target is None or look.target.disabled:
                return None
        return max(await self._new(look), did)

    def _look(self) -> Look:
        """The endpoint's row and the events after its cursor, with one connection (each taken
        from the pool costs a round trip of its own)."""
        with self.db.read() as conn:
            target = load_target(conn, self.org_id, self.endpoint_id, self._now_ms())
            if target is None or target.disabled:
                return Look(target)
            items, cursor, full = new_items(conn, target, self.settings.batch_size)
            blocked = set()
            if items and target.has_pending:
                blocked = pending_keys(conn, target, (i.key for i in items))
            return Look(target, items, cursor, full, blocked)

    def _deadline(self) -> float:
        # Half the lease: the round's commit renews it long before it runs out.
        return time.monotonic() + self.settings.lease_seconds / 2

    async def _retries(self, target: Target) -> int:
        now = self._now_ms()

        def load() -> list[Item]:
            with self.db.read() as conn:
                heads = due_heads(conn, target, now, self.settings.batch_size)
                return heads + queued_behind(conn, target, heads, CHAIN_LIMIT - 1) if heads else []

        items = await asyncio.to_thread(load)
        if not items:
            return IDLE
        await send_in_key_order(
            items, target, self.sender, self.settings.concurrency, self._deadline(), self.clock
        )
        result = RoundResult(retried=items)
        await self.db.awrite(round_job(target, result, self.owner, self.settings, self._now_ms))
        return DONE

    async def _new(self, look: Look) -> int:
        target = look.target
        if target is None or look.cursor is None:
            return IDLE
        await send_in_key_order(
            [i for i in look.items if i.key not in look.blocked],
            target,
            self.sender,
            self.settings.concurrency,
            self._deadline(),
            self.clock,
        )
        result = RoundResult(new=look.items, cursor=look.cursor, blocked_keys=look.blocked)
        await self.db.awrite(round_job(target, result, self.owner, self.settings, self._now_ms))
        return MORE if look.full else DONE


@dataclass
class Look:
    """What a round reads first: the endpoint (None: deleted) and its new events."""

    target: Target | None
    items: list[Item] = field(default_factory=list)
    cursor: int | None = None  # past every event read (None: none)
    full: bool = False  # a whole batch was read: more may wait
    blocked: set[str] = field(default_factory=set)  # keys with events pending: theirs queue


def event_body(event_json: dict[str, object]) -> str:
    """An event as delivered (for tests and tools that build one by hand)."""
    return orjson.dumps(event_json).decode()
