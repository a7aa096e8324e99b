"""Every job in a writer batch is all-or-nothing by the database (a savepoint each), not by the
convention that jobs refuse before they write (issue 11): a job that fails after writing leaves
nothing of itself, while its batch neighbours commit."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Connection

from profilehub import profiles
from profilehub.crm import people
from profilehub.errors import BadRequest
from profilehub.identity.resolve import PreparedWrite
from profilehub.orgs import create_org
from profilehub.store.database import Database, GroupJob, OnceJob
from profilehub.store.events import EventRow, append_events
from profilehub.store.faults import FaultKind, classify
from profilehub.store.tables import changes, events, orgs
from tests.cdp_client import Cdp
from tests.conftest import OrgFixture


class Batched:
    """A database whose writer is held by a first job while the jobs under test queue behind it,
    so that they run as one batch; ``sizes`` are the batches it ran."""

    def __init__(self, url: str) -> None:
        self.sizes: list[int] = []
        self.db = Database(url, on_batch=lambda size, _queued: self.sizes.append(size))

    def run_together(self, jobs: list[Callable[[Connection], Any]]) -> list[Future[Any]]:
        started, release = threading.Event(), threading.Event()

        def hold(_: Connection) -> None:
            started.set()
            release.wait(30)

        held = self.db.submit(hold)
        assert started.wait(30)
        futures = [self.db.submit(job) for job in jobs]
        assert self.db.write_queue_depth() == len(jobs)
        release.set()
        held.result(30)
        for future in futures:
            future.exception(30)  # wait for each, whichever way it ended
        assert self.sizes[-1] == len(jobs), self.sizes  # they did run as one batch
        return futures

    def org_ids(self) -> set[int]:
        with self.db.read() as conn:
            return {row.org_id for row in conn.execute(sa.select(orgs.c.org_id))}

    def event_orgs(self) -> set[int]:
        with self.db.read() as conn:
            return {row.org_id for row in conn.execute(sa.select(events.c.org_id))}


@pytest.fixture
def batched(database_url: str) -> Iterator[Batched]:
    b = Batched(database_url)
    yield b
    b.db.close()


def _org(org_id: int, fail_after_insert: bool = False) -> Callable[[Connection], int]:
    def job(conn: Connection) -> int:
        create_org(conn, org_id, f"Org {org_id}", ["EU"])
        append_events(conn, [EventRow(org_id, "person.created", 1, f"p{org_id}", {})])
        if fail_after_insert:
            raise BadRequest("refused after its insert (injected)", field="name")
        return org_id

    return job


def test_a_job_that_fails_after_writing_leaves_nothing_while_its_neighbours_commit(batched: Batched) -> None:
    before, doomed, after = batched.run_together([_org(701), _org(702, fail_after_insert=True), _org(703)])
    assert before.result() == 701 and after.result() == 703
    assert isinstance(doomed.exception(), BadRequest)
    assert batched.org_ids() >= {701, 703} and 702 not in batched.org_ids()
    # Nor does its change event: nothing that rolled back is delivered.
    assert batched.event_orgs() == {701, 703}


def _insert_orgs(conn: Connection, payloads: list[tuple[int, bool]]) -> list[int]:
    """A group job: every payload's org in one call, failing after the inserts if one is bad."""
    for org_id, _ in payloads:
        create_org(conn, org_id, f"Org {org_id}", ["EU"])
    if any(bad for _, bad in payloads):
        raise BadRequest("one of the group is refused after the inserts (injected)", field="name")
    return [org_id for org_id, _ in payloads]


def test_a_group_that_fails_after_writing_commits_its_good_jobs_alone(batched: Batched) -> None:
    jobs = [GroupJob(_insert_orgs, (org_id, org_id == 712)) for org_id in (711, 712, 713)]
    first, doomed, last = batched.run_together(list(jobs))
    assert (first.result(), last.result()) == (711, 713)
    assert isinstance(doomed.exception(), BadRequest)
    assert batched.org_ids() >= {711, 713} and 712 not in batched.org_ids()


def test_a_profile_write_refused_after_it_applied_leaves_nothing_of_itself(
    client: TestClient, org: OrgFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write whose identity resolution fails after it changed the batch's state (a fault injected
    after it applied) is undone, and the writes after it in the same ``_bulk`` resolve without it."""
    applied = profiles.apply_write

    def apply_then_fail(storage: Any, strategy: Any, write: PreparedWrite, now: int) -> Any:
        outcome = applied(storage, strategy, write, now)
        if "explode" in (write.upsert.get("profile") or {}):
            raise BadRequest("refused after it applied (injected)", field="upsert.profile.explode")
        return outcome

    monkeypatch.setattr(profiles, "apply_write", apply_then_fail)
    records = [
        {"ids": {"email": "ann@x.com"}, "upsert": {"profile": {"n": 1}}},
        {"ids": {"email": "bob@x.com", "crm_id": "C-7"}, "upsert": {"profile": {"explode": True}}},
        {"ids": {"email": "cy@x.com", "crm_id": "C-7"}, "upsert": {"profile": {"n": 3}}},
    ]
    r = client.post(
        "/cdp/v1/users/_bulk",
        json=[{"orgId": org.org_id, "region": "EU", **rec} for rec in records],
        headers=org.headers(),
    )
    assert [item["status"] for item in r.json()] == [200, 400, 200], r.text
    cdp = Cdp(client, org)
    assert cdp.search({"email": ["bob@x.com"]}) == []
    [cy] = cdp.search({"crm_id": ["C-7"]})
    assert [p["ucid"] for p in cdp.search({"email": ["cy@x.com"]})] == [cy["ucid"]]
    assert cy["profile"]["n"] == 3 and "explode" not in cy["profile"], cy
    assert [p["profile"]["n"] for p in cdp.search({"email": ["ann@x.com"]})] == [1]


def test_a_crm_person_refused_after_it_was_saved_leaves_nothing_of_itself(
    client: TestClient, org: OrgFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A person whose write fails after it changed the people batch (a fault injected after its
    rows were saved) is undone by the batch's savepoint: no person, no email taken, no change row
    or event, no link; the people after it in the same bulk call are written as if it had never
    been sent (the last one takes its email)."""
    # The person's answer is made after its rows were saved: the last step of its write.
    view = people.person_view

    def view_then_fail(rec: Any, *args: Any) -> Any:
        if rec.values.get("first_name") == "Explode":
            raise BadRequest("refused after it was saved (injected)", field="firstName")
        return view(rec, *args)

    monkeypatch.setattr(people, "person_view", view_then_fail)
    bodies = [
        {"firstName": "Ann", "emails": ["ann@x.com"]},
        {"firstName": "Explode", "emails": ["boom@x.com"]},
        {"firstName": "Cy", "emails": ["boom@x.com", "cy@x.com"]},
    ]
    r = client.put(
        "/v2/crm/people/_bulk?matchingAttribute=email", json={"people": bodies}, headers=org.bearer
    )
    assert [x["status"] for x in r.json()["results"]] == [201, 400, 201], r.text
    listed = client.get("/v2/crm/people", headers=org.bearer).json()["collection"]
    assert sorted(p["firstName"] for p in listed) == ["Ann", "Cy"]
    [cy] = [p for p in listed if p["firstName"] == "Cy"]
    assert cy["emails"] == ["boom@x.com", "cy@x.com"] and cy["ucid"] is not None
    [profile] = Cdp(client, org).search({"email": ["boom@x.com"]})
    assert [c["crm_person_id"] for c in profile["ids"]["crm"]] == [cy["id"]]
    feed = client.get("/v2/crm/changes", params={"limit": 1000}, headers=org.bearer).json()["changes"]
    assert sorted(e["data"]["person"]["firstName"] for e in feed) == ["Ann", "Cy"]
    with client.app.state.db.read() as conn:  # type: ignore[attr-defined]
        logged = conn.execute(sa.select(changes.c.entity_id).where(changes.c.entity == "crm_person")).all()
    assert sorted(row.entity_id for row in logged) == sorted(p["id"] for p in listed)


@pytest.mark.parametrize("through", ["statement", "driver cursor"])
def test_a_job_that_fills_the_sqlite_file_fails_once_naming_the_full_disk(
    tmp_path: Path, through: str
) -> None:
    """SQLite ends the whole transaction itself when the file cannot grow (SQLITE_FULL), savepoint
    and all: the job's error is the full disk, met once, not the "no such savepoint" of rolling
    back a savepoint that is gone (which the writer took for a passing fault and ran the job again:
    a bulk import redid its whole transaction into the same full disk). The same when the job
    writes through the driver's own cursor (the bulk path's loads), whose errors SQLAlchemy never
    saw: the caller gets SQLAlchemy's error all the same, classified."""
    db = Database(f"sqlite:///{tmp_path / 'small.db'}")
    transactions: list[object] = []
    sa.event.listen(db._writer_engine, "begin", transactions.append)

    def fill(conn: Connection) -> None:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
        # The file may grow by ~40 pages, as a disk with that much left would let it.
        conn.exec_driver_sql(f"PRAGMA max_page_count = {pages + 40}")
        if through == "statement":
            for org_id in range(800, 1800):
                create_org(conn, org_id, "x" * 3000, ["EU"])
        else:
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            cursor.executemany(
                "INSERT INTO changes (org_id, change_id, ts, actor, entity, entity_id, action, detail) "
                "VALUES (1, ?, 1, 'a', 'e', 'i', 'x', ?)",
                [(f"c{n}", "x" * 3000) for n in range(1000)],
            )

    with pytest.raises(sa.exc.OperationalError) as refused:
        db.write(fill)
    assert classify(refused.value).kind is FaultKind.DISK_FULL, refused.value
    assert len(transactions) == 1
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(orgs)).scalar_one() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(changes)).scalar_one() == 0
    db.close()


def passing_fault() -> sa.exc.OperationalError:
    """A database fault another attempt may not meet (SQLite's I/O error: neither a full disk nor a
    read-only file)."""
    raw = sqlite3.OperationalError("disk I/O error")
    raw.sqlite_errorname = "SQLITE_IOERR"  # as the driver sets it
    return sa.exc.OperationalError("INSERT …", None, raw)


def test_a_job_that_runs_once_is_not_run_again_after_a_passing_fault(tmp_path: Path) -> None:
    """The writer runs a job again after a fault that may pass (a plain write is cheap to redo);
    a ``OnceJob`` (a bulk import's transaction: minutes of work) it runs once, and its caller
    gets the fault at once."""
    db = Database(f"sqlite:///{tmp_path / 'store.db'}")
    runs = {"plain": 0, "once": 0}

    def failing(name: str) -> Callable[[Connection], None]:
        def job(_: Connection) -> None:
            runs[name] += 1
            raise passing_fault()

        return job

    with pytest.raises(sa.exc.OperationalError):
        db.write(failing("plain"))
    with pytest.raises(sa.exc.OperationalError) as refused:
        db.write(OnceJob(failing("once")))
    assert classify(refused.value).kind is FaultKind.UNAVAILABLE
    assert runs["plain"] > 1 and runs["once"] == 1, runs
    db.close()
