"""`profilehub deliver` as real processes: two at once deliver each event once, `kill -9` mid-stream
loses nothing, `--nats` publishes every event to JetStream, and `profilehub serve` delivers in the
background from a process of its own, which ends with it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.js.errors
import pytest
import sqlalchemy as sa

from profilehub.delivery import endpoints
from profilehub.delivery.process import DelivererProcess
from profilehub.profiles import ProfileService, ProfileWrite
from profilehub.store.database import Database
from profilehub.store.events import last_event_id
from profilehub.store.tables import webhook_endpoints
from tests.conftest import child_pids, make_org, running_in_ci
from tests.serve_process import VENV_BIN, serve
from tests.webhook_receiver import Receiver, wait_for

NATS_URL = os.environ.get("PROFILEHUB_TEST_NATS", "nats://127.0.0.1:4222")
FAST_ENV = {
    "PROFILEHUB_DELIVERY_POLL_SECONDS": "0.05",
    "PROFILEHUB_WEBHOOK_RETRY_SCHEDULE": "0.1,0.1,0.1",
}


@contextlib.contextmanager
def deliver(database_url: str, log_dir: Path, *args: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    log = log_dir / f"deliver-{uuid.uuid4().hex[:6]}.log"
    env = {**os.environ, "PROFILEHUB_DATABASE_URL": database_url, **FAST_ENV, **env}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(VENV_BIN / "profilehub"), "deliver", *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"deliver did not stop on SIGTERM: {log.read_text()}")


def write_many(db: Database, org_id: int, count: int, people: int = 10) -> None:
    service = ProfileService(db)
    for start in range(0, count, 50):
        batch = [
            ProfileWrite(org_id, "EU", {"crm_id": f"P{n % people}"}, {"profile": {"n": n}})
            for n in range(start, min(start + 50, count))
        ]
        assert not any(isinstance(r, Exception) for r in service.write_batch(batch, "test"))


def test_two_deliverers_deliver_each_event_once(database_url: str, tmp_path: Path) -> None:
    db = Database(database_url)
    try:
        make_org(db)
        receivers = [Receiver() for _ in range(4)]
        for r in receivers:
            db.write(
                lambda c, url=r.url: endpoints.create_endpoint(c, 1234, url, start_after=last_event_id(c))
            )
        with deliver(database_url, tmp_path), deliver(database_url, tmp_path):
            write_many(db, 1234, 200)
            for r in receivers:
                wait_for(
                    "every event at every endpoint",
                    lambda r=r: len({x.webhook_id for x in r.delivered()}) == 200,
                )
        for r in receivers:
            counts = Counter(x.webhook_id for x in r.all())
            assert set(counts.values()) == {1}, "an event was delivered twice"
    finally:
        db.close()


def test_deliver_says_what_it_does_and_nothing_of_the_schema(database_url: str, tmp_path: Path) -> None:
    db = Database(database_url)
    db.close()
    with deliver(database_url, tmp_path):
        [log] = tmp_path.glob("deliver-*.log")
        wait_for("deliver to start", lambda: "Ctrl-C stops" in log.read_text())
    lines = log.read_text().splitlines()
    assert any(line.startswith("delivering webhooks as ") for line in lines), lines
    assert not [line for line in lines if "alembic" in line], lines


def test_kill_9_mid_stream_loses_nothing(database_url: str, tmp_path: Path) -> None:
    db = Database(database_url)
    try:
        make_org(db)
        receiver = Receiver()
        db.write(lambda c: endpoints.create_endpoint(c, 1234, receiver.url, start_after=last_event_id(c)))
        write_many(db, 1234, 400)
        # A short lease, so the second deliverer takes over soon after the first one dies.
        with deliver(database_url, tmp_path, PROFILEHUB_DELIVERY_LEASE_SECONDS="2") as first:
            wait_for("deliveries under way", lambda: len(receiver.delivered()) >= 20)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        got_before = len({x.webhook_id for x in receiver.delivered()})
        assert got_before < 400, "killed too late to show anything"
        with deliver(database_url, tmp_path, PROFILEHUB_DELIVERY_LEASE_SECONDS="2"):
            wait_for(
                "every event after the restart",
                lambda: len({x.webhook_id for x in receiver.delivered()}) == 400,
            )
        by_person: dict[str, list[int]] = {}
        for x in receiver.delivered():
            profile = x.event["data"]["profile"]
            seen = by_person.setdefault(profile["ucid"], [])
            if profile["profile"]["n"] not in seen:
                seen.append(profile["profile"]["n"])
        assert all(ns == sorted(ns) for ns in by_person.values()), "a profile's events out of order"
    finally:
        db.close()


def test_serve_delivers_in_the_background(database_url: str, tmp_path: Path) -> None:
    db = Database(database_url)
    try:
        org = make_org(db)
        receiver = Receiver()
        made = db.write(
            lambda c: endpoints.create_endpoint(c, 1234, receiver.url, start_after=last_event_id(c))
        )
    finally:
        db.close()
    import httpx

    # Polling every 2 minutes: the webhook can only arrive in time through the server's wake-up.
    with serve(database_url, tmp_path, **{**FAST_ENV, "PROFILEHUB_DELIVERY_POLL_SECONDS": "120"}) as served:
        r = httpx.post(
            f"{served.base}/cdp/v1/users",
            json={"orgId": 1234, "region": "EU", "ids": {"crm_id": "S-1"}, "upsert": {"profile": {"n": 1}}},
            headers=org.headers(),
        )
        assert r.status_code == 200, r.text
        wait_for("the webhook", lambda: len(receiver.delivered()) == 1)
        [child] = child_pids(served.proc.pid)
        assert b"profilehub.delivery.process" in Path(f"/proc/{child}/cmdline").read_bytes()
        # However the server ends, its deliverer ends too, and hands its lease back on the way.
        served.stop(signal.SIGKILL)
        wait_for("the deliverer process to end", lambda: not running(child))
    event = receiver.delivered()[0].event
    assert event["type"] == "profile.created" and event["data"]["profile"]["ucid"] == r.json()[0]["ucid"]
    db = Database(database_url)
    try:
        with db.read() as conn:
            assert endpoints.get_endpoint(conn, made.endpoint.endpoint_id).delivered == 1
            owner = conn.execute(sa.select(webhook_endpoints.c.lease_owner)).scalar()
        assert owner is None, "the lease was not handed back"
    finally:
        db.close()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_stops_serve_and_its_deliverers_without_an_error(tmp_path: Path, workers: str) -> None:
    """A terminal's Ctrl-C reaches the whole process group: the deliverer processes leave their
    stop to their server (which ends them through the pipe), instead of ending first and being
    reported as a deliverer that died."""
    with serve(f"sqlite:///{tmp_path / 'ctrl-c.db'}", tmp_path, "--workers", workers) as served:
        wait_for(
            "the deliverers",
            lambda: (
                sum(b"profilehub.delivery.process" in _cmdline(p) for p in _tree(served.proc.pid))
                == int(workers)
            ),
        )
        os.killpg(served.proc.pid, signal.SIGINT)
        assert served.proc.wait(timeout=60) == 0
    log = served.log.read_text()
    assert "deliverer process" in log and "started" in log
    assert "ended" not in log and '"level":"error"' not in log and "Traceback" not in log, log


def _tree(pid: int) -> list[int]:
    """``pid``'s descendants."""
    found, todo = [], [pid]
    while todo:
        kids = child_pids(todo.pop())
        found += kids
        todo += kids
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_serve_starts_another_deliverer_when_its_own_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server's side of its deliverer process, without the server: SQLite alone, as this is
    # about processes, not storage.
    url = f"sqlite:///{tmp_path / 'restart.db'}"
    db = Database(url)
    deliverer = DelivererProcess(db.event_bell, grace_seconds=15)
    deliverer.RESTART_SECONDS = 0.1
    try:
        make_org(db)
        receiver = Receiver()
        db.write(lambda c: endpoints.create_endpoint(c, 1234, receiver.url, start_after=last_event_id(c)))
        for name, value in {**FAST_ENV, "PROFILEHUB_DATABASE_URL": url}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("PROFILEHUB_DELIVERY_LEASE_SECONDS", "1")  # the dead one's runs out soon
        deliverer.start()
        write_many(db, 1234, 1)
        wait_for("the first event", lambda: len(receiver.delivered()) == 1)
        assert deliverer.process is not None
        first = deliverer.process.pid
        os.kill(first, signal.SIGKILL)
        wait_for(
            "another deliverer", lambda: deliverer.process is not None and deliverer.process.pid != first
        )
        write_many(db, 1234, 1)
        wait_for("the second event", lambda: len({r.webhook_id for r in receiver.delivered()}) == 2)
    finally:
        deliverer.stop()
        db.close()
    assert deliverer.process is not None and deliverer.process.poll() is not None


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its new parent to reap it has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _nats_reachable() -> bool:
    async def probe() -> bool:
        try:
            nc = await nats.connect(
                NATS_URL, connect_timeout=2, max_reconnect_attempts=0, allow_reconnect=False
            )
        except Exception:
            return False
        await nc.close()
        return True

    return asyncio.run(probe())


def test_deliver_nats_publishes_every_event_to_jetstream(database_url: str, tmp_path: Path) -> None:
    if not _nats_reachable():
        if running_in_ci():
            pytest.fail(f"CI=true and no NATS server at {NATS_URL} (scripts/test starts nats-server -js)")
        pytest.skip(f"NATS UNAVAILABLE at {NATS_URL}: test not run (install nats-server)")
    org_id = 10_000 + uuid.uuid4().int % 10**9  # the broker outlives test runs; subjects are per org
    db = Database(database_url)
    try:
        make_org(db, org_id)
        write_many(db, org_id, 30, people=3)
        with db.read() as conn:
            expected = last_event_id(conn)
    finally:
        db.close()

    async def consume() -> list[nats.aio.msg.Msg]:
        nc = await nats.connect(NATS_URL)
        js = nc.jetstream()
        got: list[nats.aio.msg.Msg] = []
        deadline = asyncio.get_running_loop().time() + 30
        while True:  # the deliverer creates the stream when it starts
            try:
                sub = await js.subscribe(f"profilehub.{org_id}.>", ordered_consumer=True)
                break
            except nats.js.errors.NotFoundError:
                assert asyncio.get_running_loop().time() < deadline, "no stream for profilehub.>"
                await asyncio.sleep(0.1)
        while len(got) < 30 and asyncio.get_running_loop().time() < deadline:
            with contextlib.suppress(TimeoutError):
                got.append(await sub.next_msg(timeout=1))
        await nc.close()
        return got

    with deliver(database_url, tmp_path, "--nats", NATS_URL, "--no-webhooks"):
        messages = asyncio.run(consume())
    assert len(messages) == 30
    assert [m.subject for m in messages[:1]] == [f"profilehub.{org_id}.profile.created"]
    ids = [int(json.loads(m.data)["id"]) for m in messages]
    assert ids == sorted(ids) and ids[-1] == expected
    assert all(
        m.headers and m.headers["Nats-Msg-Id"] == f"{org_id}:{json.loads(m.data)['id']}" for m in messages
    )


def test_the_deliverer_process_logs_under_its_modules_name(tmp_path: Path) -> None:
    """serve's JSON log names each line's logger; the deliverer process's own lines named
    ``__main__`` (the module run with ``python -m``), which no filter on ``profilehub.*`` finds."""
    with serve(f"sqlite:///{tmp_path / 'logger.db'}", tmp_path) as served:

        def started() -> list[dict[str, object]]:
            lines = [json.loads(line) for line in served.log.read_text().splitlines() if line.startswith("{")]
            return [
                line for line in lines if str(line["msg"]).startswith("delivery: delivering webhooks as ")
            ]

        # A guard against a hang: the child loads the deliverer first (seconds on a busy machine).
        wait_for("the deliverer's first line", lambda: bool(started()), timeout=120)
        [line] = started()
    assert line["logger"] == "profilehub.delivery.process", line
