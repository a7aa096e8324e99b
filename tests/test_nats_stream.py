"""`profilehub deliver --nats` against a NATS server of the test's own (started, stopped, frozen
at will; the machine's broker is left alone): a stream at its limits or a broker lost mid-batch
holds publishing back and loses nothing, a stream of another shape is refused (at start and while
running), a stream deleted while running is made again, and a standby deliverer waits without
writing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import sqlalchemy as sa

from profilehub.config import DeliverySettings
from profilehub.delivery import leases
from profilehub.delivery.runner import Deliverer
from profilehub.delivery.stream import StreamRemade, commit_batch, ensure_cursor, read_batch, restart_cursors
from profilehub.store.database import Database
from profilehub.store.tables import stream_cursors
from tests.conftest import make_org, running_in_ci
from tests.serve_process import VENV_BIN
from tests.test_deliver_processes import FAST_ENV, deliver, write_many
from tests.webhook_receiver import wait_for


class NatsServer:
    """A ``nats-server -js`` on a free port, its store in ``folder`` (kept across restarts)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for("nats-server to listen", self._listening)

    def _listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)  # a frozen server must run to die
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[NatsServer]:
    if shutil.which("nats-server") is None:
        if running_in_ci():
            pytest.fail("CI=true and no nats-server on PATH")
        pytest.skip("NATS-SERVER UNAVAILABLE: test not run (install nats-server)")
    server = NatsServer(tmp_path / "jetstream")
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.kill()


def run(url: str, job: Any) -> Any:
    async def main() -> Any:
        nc = await nats.connect(url)
        try:
            return await job(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(main())


def stored(url: str, org_id: int) -> list[int]:
    """The event ids the stream holds for the org, in stream order ([] when there is no stream)."""

    async def read(js: Any) -> list[int]:
        try:
            info = await js.stream_info("PROFILEHUB")
        except nats.js.errors.NotFoundError:
            return []
        ids: list[int] = []
        if not info.state.messages:
            return ids
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                msg = await js.get_msg("PROFILEHUB", seq)
                if msg.subject.startswith(f"profilehub.{org_id}."):
                    ids.append(int(json.loads(msg.data or b"{}")["id"]))
        return ids

    result: list[int] = run(url, read)
    return result


def _org_with_events(database_url: str, count: int) -> None:
    db = Database(database_url)
    try:
        make_org(db)
        write_many(db, 1234, count, people=3)
    finally:
        db.close()


def test_a_full_stream_holds_publishing_back_until_its_limit_is_raised(
    database_url: str, tmp_path: Path, broker: NatsServer
) -> None:
    run(
        broker.url,
        lambda js: js.add_stream(name="PROFILEHUB", subjects=["profilehub.>"], max_msgs=10, discard="new"),
    )
    _org_with_events(database_url, 30)
    with deliver(database_url, tmp_path, "--nats", broker.url, "--no-webhooks"):
        wait_for("the stream to fill", lambda: len(stored(broker.url, 1234)) == 10)

        run(
            broker.url,
            lambda js: js.update_stream(
                name="PROFILEHUB", subjects=["profilehub.>"], max_msgs=-1, discard="new"
            ),
        )
        # nats-py reported the refusals only to its error callback: publishing waited for their
        # acknowledgements for good, and the events after the tenth were never published.
        wait_for("the rest once the limit is raised", lambda: len(stored(broker.url, 1234)) == 30, timeout=60)
    assert stored(broker.url, 1234) == list(range(1, 31)), "an event repeated, lost or out of order"


@contextlib.contextmanager
def _ten_published(
    database_url: str, tmp_path: Path, broker: NatsServer
) -> Iterator[tuple[Database, subprocess.Popen[bytes]]]:
    """Org 1234 with 10 events, a ``deliver --nats`` that has published them all: (db, process)."""
    db = Database(database_url)
    try:
        make_org(db)
        write_many(db, 1234, 10, people=3)
        with deliver(database_url, tmp_path, "--nats", broker.url, "--no-webhooks") as proc:
            wait_for("the first events published", lambda: len(stored(broker.url, 1234)) == 10)
            yield db, proc
    finally:
        db.close()


def _server_unread_bytes(port: int) -> int:
    """Bytes waiting in the (frozen) server's sockets on ``port``: what the deliverer sent it."""
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port:
            total += int(fields[4].split(":")[1], 16)
    return total


def test_a_broker_lost_mid_batch_loses_no_event(
    database_url: str, tmp_path: Path, broker: NatsServer
) -> None:
    with _ten_published(database_url, tmp_path, broker) as (db, _):
        assert broker.proc is not None
        broker.proc.send_signal(signal.SIGSTOP)
        unread = _server_unread_bytes(broker.port)
        write_many(db, 1234, 20, people=3)
        # Sent, never read: the server dies with the batch in its socket, no ack ever comes.
        wait_for("the batch sent", lambda: _server_unread_bytes(broker.port) > unread)
        broker.kill()
        broker.start()
        wait_for("every event after the restart", lambda: len(stored(broker.url, 1234)) == 30, timeout=60)
    assert stored(broker.url, 1234) == list(range(1, 31)), "an event repeated, lost or out of order"


def test_a_stream_of_that_name_on_other_subjects_is_refused_at_start(
    database_url: str, broker: NatsServer
) -> None:
    run(broker.url, lambda js: js.add_stream(name="PROFILEHUB", subjects=["orders.>"]))
    db = Database(database_url)
    db.close()
    done = subprocess.run(
        [str(VENV_BIN / "profilehub"), "deliver", "--nats", broker.url, "--no-webhooks"],
        env={"PROFILEHUB_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin", **FAST_ENV},
        capture_output=True,
        timeout=60,
    )
    # It ran on, failing every round with a traceback twice a second and publishing nothing.
    assert done.returncode != 0
    err = done.stderr.decode()
    assert "--stream" in err and "orders.>" in err and "profilehub.>" in err, err


def test_a_stream_deleted_between_runs_is_made_again_with_every_event(
    database_url: str, tmp_path: Path, broker: NatsServer
) -> None:
    _org_with_events(database_url, 10)
    with deliver(database_url, tmp_path, "--nats", broker.url, "--no-webhooks"):
        wait_for("the events published", lambda: len(stored(broker.url, 1234)) == 10)
    run(broker.url, lambda js: js.delete_stream("PROFILEHUB"))
    with deliver(database_url, tmp_path, "--nats", broker.url, "--no-webhooks"):
        # The org's cursor stayed at 10: the new stream got none of the retained events.
        wait_for("the events in the new stream", lambda: len(stored(broker.url, 1234)) == 10)
    assert stored(broker.url, 1234) == list(range(1, 11))


def test_a_stop_while_the_broker_is_away_hands_the_stream_lease_back(
    database_url: str, tmp_path: Path, broker: NatsServer
) -> None:
    db = Database(database_url)
    try:
        make_org(db)
        write_many(db, 1234, 5, people=3)
        with deliver(database_url, tmp_path, "--nats", broker.url, "--no-webhooks") as proc:
            wait_for("the events published", lambda: len(stored(broker.url, 1234)) == 5)
            broker.kill()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        # It ended on nats-py's "connection reconnecting" traceback, keeping its lease: another
        # deliverer had to wait for it to run out.
        assert proc.returncode == 0
        with db.read() as conn:
            owners = conn.execute(sa.select(stream_cursors.c.lease_owner)).scalars().all()
        assert owners == [None]
    finally:
        db.close()


def _log_of(tmp_path: Path) -> str:
    return "\n".join(log.read_text() for log in tmp_path.glob("deliver-*.log"))


def test_a_stream_deleted_while_deliver_runs_is_made_again_with_every_event(
    database_url: str, tmp_path: Path, broker: NatsServer
) -> None:
    with _ten_published(database_url, tmp_path, broker) as (db, _):
        run(broker.url, lambda js: js.delete_stream("PROFILEHUB"))
        write_many(db, 1234, 5, people=3)
        # Every round failed ("no response from stream") until the next start, the stream gone.
        wait_for("every event in the new stream", lambda: len(stored(broker.url, 1234)) == 15)
    assert stored(broker.url, 1234) == list(range(1, 16)), "an event repeated, lost or out of order"
    said = [line for line in _log_of(tmp_path).splitlines() if "made it again" in line]
    assert len(said) == 1 and "'PROFILEHUB' was deleted" in said[0], said


def test_a_stream_given_other_subjects_while_deliver_runs_is_refused_not_made_again(
    database_url: str, tmp_path: Path, broker: NatsServer
) -> None:
    with _ten_published(database_url, tmp_path, broker) as (db, proc):
        run(broker.url, lambda js: js.update_stream(name="PROFILEHUB", subjects=["orders.>"]))
        write_many(db, 1234, 5, people=3)
        # Said as at start, naming the subjects, rather than "no response from stream".
        wait_for("the refusal in the log", lambda: "exists with subjects orders.>" in _log_of(tmp_path))
        info = run(broker.url, lambda js: js.stream_info("PROFILEHUB"))
        assert info.config.subjects == ["orders.>"] and info.state.messages == 10, "made again"
        assert proc.poll() is None
        run(broker.url, lambda js: js.update_stream(name="PROFILEHUB", subjects=["profilehub.>"]))
        wait_for("the rest once the subject is back", lambda: len(stored(broker.url, 1234)) == 15)
    assert stored(broker.url, 1234) == list(range(1, 16))
    assert "made it again" not in _log_of(tmp_path)


def test_a_standby_deliverer_writes_nothing_while_the_leases_are_held_and_takes_over_when_they_run_out(
    database_url: str, tmp_path: Path, broker: NatsServer
) -> None:
    db = Database(database_url)
    org_ids = [1234, 1235, 1236]
    try:
        for org_id in org_ids:
            make_org(db, org_id)
            write_many(db, org_id, 5, people=3)
        with deliver(
            database_url,
            tmp_path,
            "--nats",
            broker.url,
            "--no-webhooks",
            PROFILEHUB_DELIVERY_LEASE_SECONDS="2",
        ) as holder:
            wait_for("the events published", lambda: all(len(stored(broker.url, o)) == 5 for o in org_ids))
            batches: list[int] = []
            polls: list[float] = []

            def clock() -> float:
                polls.append(time.time())
                return polls[-1]

            standby_db = Database(database_url, on_batch=lambda size, _queued: batches.append(size))
            standby = Deliverer(
                standby_db,
                DeliverySettings(poll_seconds=0.05, lease_seconds=2),
                nats_url=broker.url,
                webhooks=False,
                clock=clock,
            )
            stop = asyncio.Event()
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_until_complete, args=(standby.run(stop),))
            thread.start()
            try:
                wait_for("the standby to look for leases 20 times", lambda: len(polls) >= 40)
                # It wrote each org's lease claim (and looked for its cursor) in a transaction of
                # its own on every poll, forever, changing nothing while the holder lived.
                assert batches == [], f"the standby wrote {sum(batches)} times"
                holder.send_signal(signal.SIGKILL)
                holder.wait(timeout=10)
                for org_id in org_ids:
                    write_many(db, org_id, 5, people=3)
                wait_for(
                    "the standby to publish the rest once the leases ran out",
                    lambda: all(len(stored(broker.url, o)) == 10 for o in org_ids),
                )
            finally:
                loop.call_soon_threadsafe(stop.set)
                thread.join(30)
                loop.close()
                standby_db.close()
        for org_id in org_ids:
            ids = stored(broker.url, org_id)
            assert len(ids) == 10 and ids == sorted(set(ids)), "an event repeated, lost or out of order"
    finally:
        db.close()


@pytest.mark.parametrize("published_before", [False, True])
def test_a_batch_read_before_another_deliverer_remade_the_stream_is_not_committed(
    database_url: str, published_before: bool
) -> None:
    """Two deliverers: one reads an org's batch and publishes it to the stream, the other finds the
    stream deleted, makes it again and sets every org back to its first event. The first one's
    commit must then fail (its batch went to the deleted stream), also for an org that had
    published nothing yet, whose cursor the reset left as it was: that batch was lost."""
    db = Database(database_url)
    try:
        make_org(db)
        write_many(db, 1234, 6, people=2)
        db.write(lambda c: ensure_cursor(c, 1234, "PROFILEHUB"))
        _, every = db.write(lambda c: read_batch(c, 1234, "PROFILEHUB", 100))
        assert len(every) == 6
        key = {"org_id": 1234, "stream": "PROFILEHUB"}
        assert db.write(lambda c: leases.take(c, stream_cursors, key, "d1", 0, 2**62))
        if published_before:
            read, batch = db.write(lambda c: read_batch(c, 1234, "PROFILEHUB", 3))
            db.write(lambda c: commit_batch(c, 1234, "PROFILEHUB", "d1", 2**62, read, batch[-1][0], 3))
        for _ in range(2):  # a second re-making while the batch is out fails it too
            read, batch = db.write(lambda c: read_batch(c, 1234, "PROFILEHUB", 3))
            db.write(lambda c: restart_cursors(c, "PROFILEHUB"))  # the other deliverer
            with pytest.raises(StreamRemade):
                db.write(
                    lambda c, read=read, last=batch[-1][0]: commit_batch(
                        c, 1234, "PROFILEHUB", "d1", 2**62, read, last, 3
                    )
                )
            # Read again from where the reset left it: every event, from the first.
            _, again = db.write(lambda c: read_batch(c, 1234, "PROFILEHUB", 100))
            assert [e[0] for e in again] == [e[0] for e in every]
    finally:
        db.close()
