"""Webhook delivery on both databases, against a real receiver: signatures, retries with the same
webhook-id, per-profile order, disabling, replay, an outage caught up in order."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from typing import Any

import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

from profilehub.delivery import endpoints
from profilehub.delivery.runner import BackgroundDeliverer, Deliverer
from profilehub.delivery.sender import Outcome
from profilehub.delivery.settings import DEFAULT_RETRY_SCHEDULE, DeliverySettings
from profilehub.delivery.webhooks import Item, RoundResult, commit_round, load_target, round_job
from profilehub.profiles import ProfileService, ProfileWrite
from profilehub.store.database import Database
from profilehub.store.events import forget_events, last_event_id
from profilehub.store.tables import events as event_rows
from profilehub.store.tables import webhook_endpoints, webhook_pending
from tests.conftest import make_org
from tests.webhook_receiver import Received, Receiver, wait_for

ORG = 1234
FAST = DeliverySettings(retry_schedule=(0.1, 0.1, 0.1), timeout_seconds=2, lease_seconds=5, poll_seconds=0.02)
# Short steps, and a last one of 2 hours: the most a Retry-After is honoured for.
LONG_LAST_STEP = DeliverySettings(
    retry_schedule=(0.1, 0.1, 7200), timeout_seconds=2, lease_seconds=5, poll_seconds=0.02
)


class Clock:
    """Wall time plus an offset the test moves forward (a 10-minute outage in no time)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def store(db: Database) -> Database:
    make_org(db, ORG)
    return db


@contextlib.contextmanager
def delivering(
    db: Database, settings: DeliverySettings = FAST, clock: Callable[[], float] = time.time
) -> Iterator[Deliverer]:
    deliverer = Deliverer(db, settings, clock=clock)
    background = BackgroundDeliverer(deliverer)
    background.start()
    try:
        yield deliverer
    finally:
        background.stop()


def add_endpoint(db: Database, url: str, *types: str) -> endpoints.CreatedEndpoint:
    return db.write(
        lambda c: endpoints.create_endpoint(c, ORG, url, list(types), start_after=last_event_id(c))
    )


def write(db: Database, person: str, n: int) -> None:
    [result] = ProfileService(db).write_batch(
        [ProfileWrite(ORG, "EU", {"crm_id": person}, {"profile": {"n": n}})], "test"
    )
    assert not isinstance(result, Exception), result


def state(db: Database, endpoint_id: str) -> endpoints.Endpoint:
    with db.read() as conn:
        return endpoints.get_endpoint(conn, endpoint_id)


def per_person(received: list[Received]) -> dict[str, list[int]]:
    """Each person's `n` values in the order they arrived."""
    out: dict[str, list[int]] = defaultdict(list)
    for r in received:
        profile: dict[str, Any] = r.event["data"]["profile"]
        out[profile["ucid"]].append(profile["profile"]["n"])
    return dict(out)


def test_deliveries_are_signed_and_verify_with_standardwebhooks(store: Database) -> None:
    receiver = Receiver()
    made = add_endpoint(store, receiver.url)
    with delivering(store):
        write(store, "A", 1)
        write(store, "A", 2)
        wait_for("two deliveries", lambda: len(receiver.delivered()) == 2)
    verifier = Webhook(made.secret)
    for r in receiver.delivered():
        event = verifier.verify(r.body, r.headers)
        assert event["id"] == r.webhook_id and event["orgId"] == ORG and event["region"] == "EU"
    first, second = (r.event for r in receiver.delivered())
    assert (first["type"], second["type"]) == ("profile.created", "profile.updated")
    assert int(first["id"]) < int(second["id"])
    tampered = dict(receiver.delivered()[0].headers, **{"webhook-id": second["id"]})
    with pytest.raises(Exception, match="No matching signature"):
        verifier.verify(receiver.delivered()[0].body, tampered)
    assert state(store, made.endpoint.endpoint_id).delivered == 2


def test_a_500_then_a_200_gets_the_same_event_again(store: Database) -> None:
    answers = iter([500, 200])
    receiver = Receiver(lambda _: next(answers, 200))
    add_endpoint(store, receiver.url)
    with delivering(store):
        write(store, "A", 1)
        wait_for("the retry", lambda: len(receiver.delivered()) == 1)
    failed, delivered = receiver.all()
    assert failed.status == 500 and delivered.status == 200
    assert failed.webhook_id == delivered.webhook_id and failed.body == delivered.body


def test_one_profile_stays_in_order_while_others_go_on(store: Database) -> None:
    """A's first event fails for a while: A's later events wait behind it, B's are delivered."""
    stuck = {"on": True}

    def answer(r: Received) -> int:
        n = r.event["data"]["profile"]["profile"]["n"]
        return 503 if stuck["on"] and n == 1 else 200

    receiver = Receiver(answer)
    add_endpoint(store, receiver.url)
    patient = DeliverySettings(
        retry_schedule=(0.2,) * 100, timeout_seconds=2, lease_seconds=5, poll_seconds=0.02
    )
    with delivering(store, patient):
        write(store, "A", 1)
        for n in range(2, 6):
            write(store, "A", n)
            write(store, "B", 100 + n)
        wait_for("B's events", lambda: len(receiver.delivered()) == 4)
        assert {r.event["data"]["profile"]["profile"]["n"] for r in receiver.delivered()} == {
            102,
            103,
            104,
            105,
        }
        stuck["on"] = False
        wait_for("A's events", lambda: len(receiver.delivered()) == 9)
    orders = sorted(per_person(receiver.delivered()).values())
    assert orders == [[1, 2, 3, 4, 5], [102, 103, 104, 105]]


def test_an_endpoint_failing_through_the_schedule_is_disabled_and_keeps_its_events(store: Database) -> None:
    up = {"on": False}
    receiver = Receiver(lambda _: 200 if up["on"] else 500)
    made = add_endpoint(store, receiver.url)
    endpoint_id = made.endpoint.endpoint_id
    with delivering(store):
        write(store, "A", 1)
        write(store, "A", 2)
        wait_for("disabled", lambda: state(store, endpoint_id).state == "disabled")
        # The first attempt and one per step of the schedule, then no more.
        assert len(receiver.all()) == 1 + len(FAST.retry_schedule)
        found = state(store, endpoint_id)
        assert "failed 4 times" in str(found.disabled_reason) and found.pending == 2
        write(store, "A", 3)
        time.sleep(0.3)
        assert len(receiver.all()) == 1 + len(FAST.retry_schedule), "a disabled endpoint gets nothing"
        # The event committed while it is disabled waits for it too, and is counted so.
        assert state(store, endpoint_id).pending == 3
        with store.read() as conn:
            [listed] = endpoints.list_endpoints(conn, made.endpoint.org_id)
        assert listed.pending == 3
        up["on"] = True
        store.write(lambda c: endpoints.set_enabled(c, endpoint_id, True))
        wait_for("everything, in order", lambda: len(receiver.delivered()) == 3)
    assert list(per_person(receiver.delivered()).values()) == [[1, 2, 3]]
    assert state(store, endpoint_id).state == "enabled" and state(store, endpoint_id).pending == 0


def pending_due_in(db: Database, clock: Callable[[], float]) -> list[float]:
    """Seconds from the clock's now until each waiting event's next attempt."""
    with db.read() as conn:
        due = conn.execute(sa.select(webhook_pending.c.next_attempt_ts)).scalars().all()
    return [(ts - clock() * 1000) / 1000 for ts in due]


@pytest.mark.parametrize("asked", ["3600", "RFC-DATE"])
def test_a_429_with_retry_after_is_retried_no_sooner_than_asked(store: Database, asked: str) -> None:
    """A receiver answering 429 with Retry-After (seconds or an HTTP-date) gets the event again
    no sooner, though the schedule's next step is 0.1 s; a 500's Retry-After means nothing."""
    clock = Clock()
    busy = {"status": 429}

    def answer(_: Received) -> tuple[int, dict[str, str]]:
        header = asked if asked != "RFC-DATE" else formatdate(clock() + 3600, usegmt=True)
        return busy["status"], {"Retry-After": header}

    receiver = Receiver(answer)
    add_endpoint(store, receiver.url)
    with delivering(store, LONG_LAST_STEP, clock):
        write(store, "A", 1)
        wait_for("the 429 recorded", lambda: bool(pending_due_in(store, clock)))
        [due] = pending_due_in(store, clock)
        assert 3590 <= due <= 3601
        time.sleep(0.3)
        assert len(receiver.all()) == 1, "retried before the receiver's Retry-After"
        busy["status"] = 500
        clock.offset += 3600
        wait_for("the retry, answered 500", lambda: len(receiver.all()) == 2)
        wait_for("rescheduled", lambda: pending_due_in(store, clock)[0] < 1)
        busy["status"] = 200
        wait_for("the delivery", lambda: len(receiver.delivered()) == 1)
    assert len({r.webhook_id for r in receiver.all()}) == 1


def test_a_retry_after_is_honoured_up_to_the_schedules_longest_step(store: Database) -> None:
    clock = Clock()
    receiver = Receiver(lambda _: (503, {"Retry-After": "999999999"}))
    add_endpoint(store, receiver.url)
    with delivering(store, LONG_LAST_STEP, clock):
        write(store, "A", 1)
        wait_for("the 503 recorded", lambda: bool(pending_due_in(store, clock)))
        [due] = pending_due_in(store, clock)
    assert 7190 <= due <= 7201


def test_replay_sends_the_events_after_a_cursor_again(store: Database) -> None:
    receiver = Receiver()
    made = add_endpoint(store, receiver.url)
    with delivering(store):
        for n in range(1, 5):
            write(store, "A", n)
        wait_for("four", lambda: len(receiver.delivered()) == 4)
        ids = [r.webhook_id for r in receiver.delivered()]
        store.write(lambda c: endpoints.replay_from(c, made.endpoint.endpoint_id, int(ids[1])))
        wait_for("the replay", lambda: len(receiver.delivered()) == 6)
    assert [r.webhook_id for r in receiver.delivered()] == [*ids, *ids[2:]]


def test_an_endpoint_deleted_while_its_round_sends_logs_no_failure(
    store: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """`webhook delete` run while a delivery to the endpoint is under way: the round finds the
    endpoint gone when it records what it sent, records nothing and lets it go, without the
    writer's and the deliverer's tracebacks of a failed round (logged for each deleted endpoint)."""
    made: list[endpoints.CreatedEndpoint] = []

    def answer(_: Received) -> int:
        store.write(lambda c: endpoints.delete_endpoint(c, made[0].endpoint.endpoint_id))
        return 200

    receiver = Receiver(answer)
    made.append(add_endpoint(store, receiver.url))
    with caplog.at_level("INFO"), delivering(store) as deliverer:
        write(store, "A", 1)
        wait_for("the delivery", lambda: len(receiver.all()) == 1)
        wait_for("the endpoint let go", lambda: all(t.done() for t in list(deliverer._tasks.values())))
    assert [r.levelname for r in caplog.records if r.levelno >= 30] == []
    with store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(webhook_pending)).scalar_one() == 0


def _failing_at(store: Database, endpoint_id: str, event_id: int, key: str, now: int) -> None:
    """The endpoint failing since a second ago, ``event_id`` waiting there for a retry in a minute."""
    with store.engine.begin() as conn:
        conn.execute(
            webhook_pending.insert().values(
                org_id=ORG,
                endpoint_id=endpoint_id,
                event_id=event_id,
                ordering_key=key,
                body="{}",
                attempts=1,
                next_attempt_ts=now + 60_000,
                last_error="HTTP 503",
            )
        )
        conn.execute(
            webhook_endpoints.update()
            .where(webhook_endpoints.c.endpoint_id == endpoint_id)
            .values(failing_since=now - 1000)
        )


def test_a_round_recorded_while_an_erasure_deletes_its_events_does_not_deadlock(
    store: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL: an erasure deletes the person's events, then their copies waiting in
    webhook_pending; a deliverer recording a round (an endpoint answering again after failing,
    which makes its waiting events due) read the round's new events FOR SHARE only after it had
    updated those waiting rows. Each then waited for the other: a deadlock, one of the two
    transactions aborted after PostgreSQL's deadlock timeout and run again, with an ERROR
    traceback. The round now locks its events before it touches any waiting row."""
    if store.dialect != "postgresql":
        pytest.skip("SQLite's write transactions do not interleave: no deadlock to have")
    made = add_endpoint(store, "http://127.0.0.1:9/hook")
    endpoint_id = made.endpoint.endpoint_id
    write(store, "A", 1)  # the event that failed: waiting in webhook_pending
    write(store, "A", 2)  # A's next event: queued behind it by the round
    write(store, "B", 3)  # delivered by the round: the endpoint answers again
    with store.read() as conn:
        rows = conn.execute(
            sa.select(event_rows.c.event_id, event_rows.c.entity_id, event_rows.c.data)
            .where(event_rows.c.org_id == ORG)
            .order_by(event_rows.c.event_id)
        ).all()
    (a1, key_a, _), (a2, _, _), (b3, key_b, _) = rows[-3:]
    now = int(time.time() * 1000)
    _failing_at(store, endpoint_id, a1, key_a, now)
    with store.read() as conn:
        target = load_target(conn, ORG, endpoint_id, now)
    assert target is not None
    result = RoundResult(
        new=[Item(a2, key_a, "{}"), Item(b3, key_b, "{}", outcome=Outcome(delivered=True))],
        cursor=b3,
        blocked_keys={key_a},
    )

    def record() -> None:
        store.write(lambda c: commit_round(c, target, result, "owner", FAST, now))

    with caplog.at_level("INFO"), store.engine.connect() as erasure:
        # The erasure's first step: A's events deleted (their rows locked until it commits).
        erasure.execute(event_rows.delete().where(event_rows.c.entity_id == key_a))
        with ThreadPoolExecutor(1) as pool:
            recorded = pool.submit(record)
            wait_for("the round waiting for the erasure", lambda: _waiting_for_a_lock(store))
            # Its second: their waiting copies. The round holds none of them yet.
            erasure.execute(webhook_pending.delete().where(webhook_pending.c.ordering_key == key_a))
            erasure.commit()
            recorded.result()
    assert [r.getMessage() for r in caplog.records if r.levelno >= 40] == []
    with store.read() as conn:
        waiting = conn.execute(sa.select(webhook_pending.c.event_id)).scalars().all()
    assert waiting == []  # A's events erased, B's delivered: nothing waits


def test_rounds_of_two_endpoints_queued_together_do_not_deadlock_with_an_erasure(
    store: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL: the deliverer's writer ran the rounds queued meanwhile in one transaction, so
    the first round's waiting rows (made due: its endpoint answers again) were locked before the
    second round locked its events; an erasure deleting those events, then those rows, closed the
    circle. Each round now commits in a transaction of its own (``SoloJob``)."""
    if store.dialect != "postgresql":
        pytest.skip("SQLite's write transactions do not interleave: no deadlock to have")
    first = add_endpoint(store, "http://127.0.0.1:9/one").endpoint.endpoint_id
    second = add_endpoint(store, "http://127.0.0.1:9/two").endpoint.endpoint_id
    write(store, "A", 1)  # failed at the first endpoint: waiting there
    write(store, "B", 2)  # delivered by the first endpoint's round
    write(store, "A", 3)  # new to the second endpoint's round, locked FOR SHARE by it
    with store.read() as conn:
        rows = conn.execute(
            sa.select(event_rows.c.event_id, event_rows.c.entity_id)
            .where(event_rows.c.org_id == ORG)
            .order_by(event_rows.c.event_id)
        ).all()
    (a1, key_a), (b2, key_b), (a3, _) = rows[-3:]
    now = int(time.time() * 1000)
    _failing_at(store, first, a1, key_a, now)
    with store.read() as conn:
        one, two = (load_target(conn, ORG, e, now) for e in (first, second))
    assert one is not None and two is not None
    rounds = [
        (one, RoundResult(new=[Item(b2, key_b, "{}", outcome=Outcome(delivered=True))], cursor=b2)),
        (two, RoundResult(new=[Item(a3, key_a, "{}")], cursor=a3)),
    ]
    release = threading.Event()
    with caplog.at_level("INFO"), store.engine.connect() as erasure, ThreadPoolExecutor(3) as pool:
        started = threading.Event()
        busy = pool.submit(store.write, lambda c: started.set() or release.wait(30))  # the writer, busy
        wait_for("the writer busy", started.is_set)
        recorded = [pool.submit(store.write, round_job(t, r, "o", FAST, lambda: now)) for t, r in rounds]
        wait_for("both rounds queued", lambda: store.write_queue_depth() == 2)
        erasure.execute(event_rows.delete().where(event_rows.c.entity_id == key_a))
        release.set()
        wait_for("a round waiting for the erasure", lambda: _waiting_for_a_lock(store))
        erasure.execute(webhook_pending.delete().where(webhook_pending.c.ordering_key == key_a))
        erasure.commit()
        for done in [busy, *recorded]:
            done.result()
    assert [r.getMessage() for r in caplog.records if r.levelno >= 40] == []


def test_a_round_and_an_erasure_lock_one_persons_events_in_one_order(
    store: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL: a person's events lie in the table in another order than their ids (two
    server processes insert them, each with ids drawn before): the erasure's DELETE took them
    in the order of its index (row position), the round's FOR SHARE in id order, so each could
    hold the row the other waited for: a deadlock, an ERROR traceback and the round run again.
    Both now lock in id order. A third transaction holding the later event lines both up."""
    if store.dialect != "postgresql":
        pytest.skip("SQLite has no row locks: no deadlock to have")
    endpoint_id = add_endpoint(store, "http://127.0.0.1:9/hook").endpoint.endpoint_id
    # Enough events that PostgreSQL reads events by their indexes, as in production.
    ProfileService(store).write_batch(
        [ProfileWrite(ORG, "EU", {"crm_id": f"other-{i}"}, {"profile": {"n": i}}) for i in range(500)], "test"
    )
    write(store, "A", 1)
    write(store, "A", 2)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE events")
        (low, key), (high, _) = conn.execute(
            sa.select(event_rows.c.event_id, event_rows.c.entity_id)
            .where(event_rows.c.org_id == ORG)
            .order_by(event_rows.c.event_id)
        ).all()[-2:]
        # The earlier event moved after the later one in the table (and in the entity index).
        row = conn.execute(sa.select(event_rows).where(event_rows.c.event_id == low)).mappings().one()
        conn.execute(event_rows.delete().where(event_rows.c.event_id == low))
        conn.execute(event_rows.insert().values(**row))
    now = int(time.time() * 1000)
    with store.read() as conn:
        target = load_target(conn, ORG, endpoint_id, now)
    assert target is not None
    result = RoundResult(new=[Item(low, key, "{}"), Item(high, key, "{}")], cursor=high)

    def erase() -> None:
        with store.engine.connect() as conn:
            forget_events(conn, ORG, [key])
            conn.commit()

    with caplog.at_level("INFO"), store.engine.connect() as holder, ThreadPoolExecutor(2) as pool:
        holder.execute(
            sa.select(event_rows.c.event_id).where(event_rows.c.event_id == high).with_for_update()
        )
        erased = pool.submit(erase)
        wait_for("the erasure waiting", lambda: _lock_waiters(store) == 1)
        recorded = pool.submit(store.write, round_job(target, result, "o", FAST, lambda: now))
        wait_for("the round waiting", lambda: _lock_waiters(store) == 2)
        holder.rollback()
        erased.result()
        recorded.result()
    assert [r.getMessage() for r in caplog.records if r.levelno >= 40] == []
    with store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(webhook_pending)).scalar_one() == 0


def test_a_round_and_an_erasure_of_two_entities_take_turns(
    store: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL: an erasure deletes a profile's events, then (another statement) its CRM
    people's; a round queuing events of both locked the second's before waiting for the first's,
    so each held a row the other waited for: a deadlock. The round now waits for the erasure
    before it locks anything."""
    if store.dialect != "postgresql":
        pytest.skip("SQLite has no row locks: no deadlock to have")
    endpoint_id = add_endpoint(store, "http://127.0.0.1:9/hook").endpoint.endpoint_id
    write(store, "Y", 1)  # the earlier event: the erasure's second statement deletes it
    write(store, "X", 2)  # the later one: its first statement
    with store.read() as conn:
        (low, key_y), (high, key_x) = conn.execute(
            sa.select(event_rows.c.event_id, event_rows.c.entity_id)
            .where(event_rows.c.org_id == ORG)
            .order_by(event_rows.c.event_id)
        ).all()[-2:]
    now = int(time.time() * 1000)
    with store.read() as conn:
        target = load_target(conn, ORG, endpoint_id, now)
    assert target is not None
    result = RoundResult(new=[Item(low, key_y, "{}"), Item(high, key_x, "{}")], cursor=high)
    with caplog.at_level("INFO"), store.engine.connect() as erasure, ThreadPoolExecutor(1) as pool:
        forget_events(erasure, ORG, [key_x])
        recorded = pool.submit(store.write, round_job(target, result, "o", FAST, lambda: now))
        wait_for("the round waiting", lambda: _lock_waiters(store) == 1)
        forget_events(erasure, ORG, [key_y])
        erasure.commit()
        recorded.result()
    assert [r.getMessage() for r in caplog.records if r.levelno >= 40] == []
    with store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(webhook_pending)).scalar_one() == 0


def _lock_waiters(db: Database) -> int:
    with db.read() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )


def _waiting_for_a_lock(db: Database) -> bool:
    with db.read() as conn:
        return bool(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            ).scalar()
        )


def test_only_the_subscribed_event_types_are_sent(store: Database) -> None:
    receiver = Receiver()
    add_endpoint(store, receiver.url, "profile.updated")
    with delivering(store):
        write(store, "A", 1)
        write(store, "A", 2)
        write(store, "B", 3)
        write(store, "B", 4)
        wait_for("the updates", lambda: len(receiver.delivered()) == 2)
        time.sleep(0.2)
    assert [r.event["type"] for r in receiver.all()] == ["profile.updated", "profile.updated"]


def test_a_ten_minute_outage_is_caught_up_in_order(store: Database) -> None:
    """Production's schedule (5 s, 5 min, 30 min, ...) on a clock the test moves: the receiver is
    down while writes go on, ten minutes pass, it comes back, and every event arrives, each
    profile's in order."""
    clock = Clock()
    receiver = Receiver()
    made = add_endpoint(store, receiver.url)
    endpoint_id = made.endpoint.endpoint_id
    settings = DeliverySettings(
        retry_schedule=DEFAULT_RETRY_SCHEDULE, timeout_seconds=2, lease_seconds=5, poll_seconds=0.02
    )
    with delivering(store, settings, clock):
        write(store, "A", 0)
        wait_for("the first", lambda: len(receiver.delivered()) == 1)
        receiver.stop()
        for n in range(1, 11):
            for person in "ABC":
                write(store, person, n)
        wait_for("every event tried or queued", lambda: state(store, endpoint_id).pending == 30)
        assert state(store, endpoint_id).state == "failing"
        clock.offset += 300  # 5 minutes: retries come on their schedule, the receiver is still down
        time.sleep(0.3)
        receiver.start()
        clock.offset += 300
        wait_for("the catch-up", lambda: len(receiver.delivered()) == 31)
    orders = per_person(receiver.delivered())
    assert sorted(orders.values()) == [[0, *range(1, 11)], list(range(1, 11)), list(range(1, 11))]
    found = state(store, endpoint_id)
    assert found.state == "enabled" and found.pending == 0 and found.delivered == 31


def test_erasing_a_profile_drops_its_waiting_events_and_delivers_the_erasure(store: Database) -> None:
    up = {"on": False}
    receiver = Receiver(lambda _: 200 if up["on"] else 500)
    made = add_endpoint(store, receiver.url)
    endpoint_id = made.endpoint.endpoint_id
    with delivering(
        store,
        DeliverySettings(retry_schedule=(0.3,) * 20, timeout_seconds=2, lease_seconds=5, poll_seconds=0.02),
    ):
        write(store, "A", 1)
        write(store, "A", 2)
        wait_for("A's events waiting", lambda: state(store, endpoint_id).pending == 2)
        ProfileService(store).delete(ORG, "EU", {"crm_id": ["A"]}, "test")
        with store.read() as conn:
            bodies = conn.execute(sa.select(webhook_pending.c.body)).scalars().all()
        assert not any('"n":' in b for b in bodies), "an erased profile's values wait for delivery"
        up["on"] = True
        wait_for("the erasure", lambda: len(receiver.delivered()) == 1)
    [erased] = receiver.delivered()
    assert erased.event["type"] == "profile.erased" and "profile" not in erased.event["data"]


def test_a_hanging_endpoint_does_not_hold_up_writes(store: Database) -> None:
    """The receiver takes requests and does not answer until released: writes go on meanwhile."""
    release = threading.Event()

    def answer(_: Received) -> int:
        release.wait(30)
        return 200

    receiver = Receiver(answer)
    add_endpoint(store, receiver.url)
    with delivering(
        store, DeliverySettings(retry_schedule=(0.1,) * 50, timeout_seconds=20, poll_seconds=0.02)
    ):
        write(store, "A", 0)
        wait_for("the first delivery to reach the receiver", lambda: receiver.arrived == 1)
        for n in range(1, 21):
            write(store, f"P{n}", n)  # each returns once committed; none waits for the receiver
        assert receiver.delivered() == [], "the receiver has answered nothing yet"
        release.set()
        wait_for("everything", lambda: len(receiver.delivered()) == 21)
