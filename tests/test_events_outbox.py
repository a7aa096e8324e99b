"""The outbox: every change commits its event with it, in order, and nothing that rolled back.

Through the services (the HTTP feeds are in test_events_feeds.py), on both databases.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.crm import companies, records
from profilehub.crm.objects import add_attribute, create_object
from profilehub.crm.people import PersonResult, delete_person_job, people_upsert_job, upsert_people_batch
from profilehub.profiles import ProfileService, ProfileWrite, WriteResult
from profilehub.store.database import Database, then
from profilehub.store.events import Event, event_json, read_events
from tests.conftest import make_org

ORG = 1234
OTHER = 99


def _events(
    db: Database, org_id: int = ORG, after: int = 0, limit: int = 1000, feed: str | None = None
) -> list[dict[str, Any]]:
    with db.read() as conn:
        return [event_json(e) for e in read_events(conn, org_id, after, limit, feed=feed)]


def _all_event_text(db: Database) -> str:
    with db.read() as conn:
        return " ".join(str(tuple(r)) for r in conn.execute(sa.text("SELECT * FROM events")))


def _write(service: ProfileService, ids: dict[str, Any], upsert: dict[str, Any]) -> WriteResult:
    [result] = service.write_batch([ProfileWrite(ORG, "EU", ids, upsert)], "test")
    assert isinstance(result, WriteResult), result
    return result


def test_profile_writes_merges_and_erasures_are_events_in_order(db: Database) -> None:
    make_org(db, ORG)
    service = ProfileService(db)
    a = _write(service, {"email": "ann@example.com"}, {"profile": {"name": "Ann"}})
    b = _write(service, {"cellphone": "+4915100000001"}, {"profile": {"city": "Bonn"}})
    same = _write(service, {"email": "ann@example.com"}, {"profile": {"age": 41}})
    merged = _write(service, {"email": "ann@example.com", "cellphone": "+4915100000001"}, {})

    events = _events(db)
    assert [e["type"] for e in events] == [
        "profile.created",
        "profile.created",
        "profile.updated",
        "profile.merged",
    ]
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == 4
    for e, answer in zip(events, (a, b, same, merged), strict=True):
        assert set(e) == {"id", "type", "orgId", "region", "ts", "data"}
        assert e["orgId"] == ORG and e["region"] == "EU"
        assert e["data"]["profile"] == answer.profile  # the profile as the write answered it
        assert e["ts"] == answer.profile["updated_ts"]
    assert events[3]["data"]["mergedUcids"] == [b.profile["ucid"]]
    assert "mergedUcids" not in events[2]["data"]

    erased = service.delete(ORG, "EU", {"ucid": [a.profile["ucid"]]}, "test")
    [event] = _events(db)  # the erased person's earlier events go with it
    assert event["type"] == "profile.erased" and int(event["id"]) > ids[-1]
    assert event["data"] == {"ucids": [a.profile["ucid"], b.profile["ucid"]]}
    assert erased["ucids"] == [a.profile["ucid"]]


def test_erasure_leaves_no_value_in_the_events(db: Database) -> None:
    make_org(db, ORG)
    service = ProfileService(db)
    email = "Erase.Me@Example.com"
    written = _write(service, {"email": email}, {"profile": {"secretword": "xyzzy-plugh"}})
    service.delete(ORG, "EU", {"email": [email]}, "test")
    # The events written before the erasure go with it: what remains is the erasure, by ucid.
    assert [e["type"] for e in _events(db)] == ["profile.erased"]
    text = _all_event_text(db)
    digest = hashlib.sha256(email.lower().encode()).hexdigest()
    for value in (email, email.lower(), digest, "xyzzy-plugh", "secretword"):
        assert value not in text
    assert written.profile["ucid"] in text


def test_a_rolled_back_write_leaves_no_event(db: Database) -> None:
    make_org(db, ORG)

    def fail(conn: Connection, value: Any) -> Any:
        raise RuntimeError("the transaction fails after the write")

    with pytest.raises(RuntimeError):
        job = people_upsert_job(
            ProfileService(db), ORG, [{"firstName": "Rolled", "lastName": "Back"}], None, "t"
        )
        db.write(then(job, fail))
    assert _events(db) == []
    # A refused record of a batch has no event; its neighbours have theirs.
    results = upsert_people_batch(
        db, ORG, [{"firstName": "Ok"}, {"emails": ["bad"]}, {"lastName": "Fine"}], None, "t"
    )
    assert [type(r).__name__ for r in results] == ["PersonResult", "BadRequest", "PersonResult"]
    events = _events(db)
    assert [e["data"]["person"]["firstName"] or e["data"]["person"]["lastName"] for e in events] == [
        "Ok",
        "Fine",
    ]


def test_crm_changes_are_events_with_their_answers(db: Database) -> None:
    make_org(db, ORG)
    [created] = upsert_people_batch(db, ORG, [{"firstName": "Bo", "emails": ["bo@example.com"]}], None, "t")
    [updated] = upsert_people_batch(
        db, ORG, [{"emails": ["bo@example.com"], "jobTitle": "CTO"}], "emails", "t"
    )
    company = db.write(companies.upsert_company_job(ORG, {"name": "Acme", "domain": "acme.com"}, None, "t"))
    [cy] = upsert_people_batch(db, ORG, [{"firstName": "Cy", "companyId": company.body["id"]}], None, "t")
    renamed = db.write(companies.patch_company_job(ORG, company.body["id"], {"name": "Acme Inc"}, "t"))
    db.write(
        lambda c: create_object(c, ORG, {"slug": "deals", "singularName": "Deal", "pluralName": "Deals"}, "t")
    )
    db.write(lambda c: add_attribute(c, ORG, "deals", {"label": "Title", "type": "text"}, "t"))
    deal = db.write(records.upsert_record_job(ORG, "deals", {"title": "Big"}, None, "t"))
    bigger = db.write(records.patch_record_job(ORG, "deals", deal.body["id"], {"title": "Bigger"}, "t"))
    assert (
        isinstance(created, PersonResult)
        and isinstance(updated, PersonResult)
        and isinstance(cy, PersonResult)
    )

    # Bo's emails made the profile Bo is linked to (docs/crm.md): a CDP feed event; the update that
    # kept Bo's emails left the profile alone.
    profile_events = _events(db, feed="cdp")
    assert [e["type"] for e in profile_events] == ["profile.created"]
    linked = profile_events[-1]["data"]["profile"]
    assert linked["ucid"] == updated.person["ucid"]
    assert [c["crm_person_id"] for c in linked["ids"]["crm"]] == [created.person["id"]]

    events = _events(db, feed="crm")
    assert [e["type"] for e in events] == [
        "person.created",
        "person.updated",
        "company.created",
        "person.created",
        "company.updated",
        "record.created",
        "record.updated",
    ]
    assert all(set(e) == {"id", "type", "orgId", "ts", "data"} and e["orgId"] == ORG for e in events)
    answers = [
        {"person": created.person},
        {"person": updated.person},
        {"company": company.body},
        {"person": cy.person},
        {"company": renamed.body},
        {"record": deal.body},
        {"record": bigger.body},
    ]
    assert [e["data"] for e in events] == answers

    db.write(companies.delete_company_job(ORG, company.body["id"], "t"))
    db.write(delete_person_job(ProfileService(db), ORG, created.person["id"], "t"))
    db.write(records.delete_record_job(ORG, "deals", deal.body["id"], "t"))
    events = _events(db, feed="crm")
    # What was deleted leaves its own events only: the earlier ones held its values.
    assert [e["type"] for e in events] == [
        "person.created",  # Cy
        "company.deleted",
        "person.updated",  # Cy lost the deleted company
        "person.deleted",
        "record.deleted",
    ]
    assert events[0]["data"] == {"person": cy.person}
    assert events[1]["data"] == {"id": company.body["id"]}
    assert events[2]["data"]["person"]["id"] == cy.person["id"]
    assert events[2]["data"]["person"]["company"] is None
    assert events[3]["data"] == {"id": created.person["id"]}
    assert events[4]["data"] == {"id": deal.body["id"], "objectSlug": "deals"}
    assert "bo@example.com" not in _all_event_text(db) and "Bigger" not in _all_event_text(db)


def test_cursors_page_through_one_orgs_events(db: Database) -> None:
    make_org(db, ORG)
    make_org(db, OTHER)
    service = ProfileService(db)
    for n in range(5):
        _write(service, {"email": f"p{n}@example.com"}, {})
        service.write_batch([ProfileWrite(OTHER, "EU", {"email": f"p{n}@example.com"}, {})], "t")
    with db.read() as conn:
        pages: list[list[Event]] = []
        after = 0
        while page := read_events(conn, ORG, after, 2):
            pages.append(page)
            after = page[-1].event_id
        others = read_events(conn, OTHER, 0, 100)
    assert [len(p) for p in pages] == [2, 2, 1]
    mine = [e for p in pages for e in p]
    assert {e.org_id for e in mine} == {ORG} and {e.org_id for e in others} == {OTHER}
    assert len(others) == 5
    # One cursor for the database: the two orgs' ids interleave and never repeat.
    assert sorted({e.event_id for e in mine} | {e.event_id for e in others}) == list(range(1, 11))


def test_a_reader_following_concurrent_writers_misses_no_event(database_url: str) -> None:
    """Two writers (two handles, as two processes) of one org in two regions commit at once; a
    reader following the org's feed by cursor meanwhile ends with every event. Were ids drawn
    before commit, a later commit of a smaller id would fall behind the reader's cursor."""
    writers = [Database(database_url), Database(database_url)]
    reader = writers[0]
    make_org(reader, ORG)
    done = threading.Event()

    def write(db: Database, region: str) -> None:
        service = ProfileService(db)
        for n in range(40):
            writes = [
                ProfileWrite(ORG, region, {"email": f"{region}{n}-{i}@example.com"}, {}) for i in range(3)
            ]
            service.write_batch(writes, "t")

    threads = [
        threading.Thread(target=write, args=(db, region))
        for db, region in zip(writers, ("EU", "UK"), strict=True)
    ]
    try:
        for t in threads:
            t.start()
        followed: list[int] = []
        after = 0
        while not done.is_set():
            if not any(t.is_alive() for t in threads):
                done.set()  # one more look after the last commit
            with reader.read() as conn:
                page = read_events(conn, ORG, after, 1000)
            followed += [e.event_id for e in page]
            after = page[-1].event_id if page else after
        with reader.read() as conn:
            stored = [e.event_id for e in read_events(conn, ORG, 0, 1000)]
    finally:
        for t in threads:
            t.join()
        for db in writers:
            db.close()
    assert len(stored) == 240
    assert followed == stored
