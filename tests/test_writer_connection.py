"""The writer's connection is not pinged before each batch; losing it must still cost no write."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.profiles import ProfileService, ProfileWrite
from profilehub.store.database import Database, OnceJob
from profilehub.store.faults import FaultKind, classify
from tests.conftest import make_org


def test_writes_go_on_after_the_server_drops_the_writer_connection(db: Database) -> None:
    if db.dialect != "postgresql":
        pytest.skip("SQLite has no server connection to lose; PostgreSQL run covers this")
    make_org(db)
    service = ProfileService(db)
    [first] = service.write_batch([ProfileWrite(1234, "EU", {"email": "a@x.com"})], "test")
    pid = db.write(lambda c: c.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
    with db.read() as conn:
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
    # The next batch finds its connection dead, and is retried on a new one.
    [again] = service.write_batch([ProfileWrite(1234, "EU", {"email": "a@x.com", "AdId": "d-1"})], "test")
    assert not isinstance(first, Exception) and not isinstance(again, Exception)
    assert again.profile["ucid"] == first.profile["ucid"]
    assert db.write(lambda c: c.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()) != pid


def test_a_step_outside_transactions_runs_in_its_turn(db: Database) -> None:
    """``on_writer_connection`` (what switches SQLite's journal for a backfill): after every write
    queued before it, before any queued after, never inside a transaction."""
    order: list[str] = []
    running, gate = threading.Event(), threading.Event()
    # the writer is busy with a batch of this one job: what follows queues up behind it
    blocker = db.submit(lambda c: (running.set(), gate.wait(10)))
    running.wait(10)
    before = [db.submit(lambda c, n=n: order.append(f"write {n}")) for n in range(3)]
    with ThreadPoolExecutor(1) as pool:
        step = pool.submit(db.on_writer_connection, lambda c: order.append(f"step {c.in_transaction()}"))
        deadline = time.monotonic() + 10
        while db.write_queue_depth() < 4 and time.monotonic() < deadline:  # the step queued behind them
            time.sleep(0.001)
        after = db.submit(lambda c: order.append("write after"))
        gate.set()
        step.result(timeout=10)
    for fut in [blocker, *before, after]:
        fut.result(timeout=10)
    assert order == ["write 0", "write 1", "write 2", "step False", "write after"]


def test_a_job_run_once_whose_connection_the_server_drops_fails_naming_it(db: Database) -> None:
    """A bulk import's transaction (``OnceJob``) whose connection the server drops mid-way (a
    restart): its caller gets the database's own error, classified as unreachable, after one run,
    not SQLAlchemy's "Can't reconnect until invalid transaction is rolled back" that the dropped
    connection leaves behind (which the CLI showed as a traceback)."""
    if db.dialect != "postgresql":
        pytest.skip("SQLite has no server connection to lose; PostgreSQL run covers this")
    make_org(db)
    runs = 0

    def dropped(conn: Connection) -> None:
        nonlocal runs
        runs += 1
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        with db.read() as other:
            other.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        conn.exec_driver_sql("SELECT 1")

    with pytest.raises(sa.exc.OperationalError) as refused:
        db.write(OnceJob(dropped))
    assert classify(refused.value).kind is FaultKind.UNREACHABLE, refused.value
    assert runs == 1
    assert db.write(lambda c: c.exec_driver_sql("SELECT 1").scalar_one()) == 1  # the writer goes on
