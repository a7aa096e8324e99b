"""One write path for people: concurrent upserts, the bulk endpoint and ``upsert_people_batch``."""

from __future__ import annotations

import threading
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient

from profilehub.app import create_app
from profilehub.config import Settings
from profilehub.crm.people import PersonResult, upsert_people_batch
from profilehub.errors import BadRequest, Conflict, ProfilehubError
from tests.conftest import OrgFixture, assert_error, run_concurrently

BULK = "/v2/crm/people/_bulk"


def test_32_concurrent_upserts_of_one_new_email_make_one_person(
    app: FastAPI, client: TestClient, org: OrgFixture
) -> None:
    def calls(ac: httpx.AsyncClient) -> list[Any]:
        return [
            ac.put(
                "/v2/crm/people?matchingAttribute=email",
                json={"firstName": f"Writer{i}", "emails": ["Same.Person@acme.com"]},
                headers=org.bearer,
            )
            for i in range(32)
        ]

    responses = run_concurrently(app, calls)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 31 + [201], [r.text for r in responses if r.status_code >= 300]
    assert len({r.json()["person"]["id"] for r in responses}) == 1
    listed = client.get("/v2/crm/people", headers=org.bearer).json()
    assert listed["pagination"]["total"] == 1
    assert listed["collection"][0]["emails"] == ["same.person@acme.com"]


def test_two_processes_upserting_one_new_email_make_one_person(
    database_url: str, app: FastAPI, client: TestClient, org: OrgFixture
) -> None:
    """A second database handle (its own writer) stands in for a second server process: the org's
    CRM lock (SQLite's BEGIN IMMEDIATE, PostgreSQL's advisory lock) keeps the upserts apart."""
    other = create_app(Settings(database_url=database_url))
    errors: list[BaseException] = []
    results: list[PersonResult | ProfilehubError] = []

    def writer(handle: FastAPI, first: int) -> None:
        try:
            for n in range(first, 32, 2):
                body = {"firstName": f"W{n}", "customAttributes": {}, "emails": ["both@acme.com"]}
                results.extend(upsert_people_batch(handle.state.db, org.org_id, [body], "email", "test"))
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=writer, args=(h, i)) for i, h in enumerate((app, other))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        other.state.db.close()
    assert not errors, errors
    assert all(isinstance(r, PersonResult) for r in results) and len(results) == 32
    assert sum(1 for r in results if isinstance(r, PersonResult) and r.created) == 1
    assert client.get("/v2/crm/people", headers=org.bearer).json()["pagination"]["total"] == 1


def test_bulk_reports_bad_records_by_index_and_writes_the_good_ones(
    client: TestClient, org: OrgFixture
) -> None:
    client.put(
        "/v2/crm/people", json={"firstName": "Owner", "emails": ["taken@acme.com"]}, headers=org.bearer
    )
    people: list[Any] = [
        {"firstName": "A", "emails": ["a@acme.com"]},
        {"emails": ["nobody@acme.com"]},  # no name
        {"firstName": "C", "emails": ["c@acme.com", "taken@acme.com"]},  # email of another person
        {"firstName": "D", "emails": ["bad address"]},
        "not an object",
        {"firstName": "A again", "emails": ["A@acme.com", "a2@acme.com"]},  # matches record 0
    ]
    r = client.put(f"{BULK}?matchingAttribute=email", json={"people": people}, headers=org.bearer)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is False
    results = body["results"]
    assert [x["index"] for x in results] == list(range(len(people)))
    assert [x["status"] for x in results] == [201, 400, 409, 400, 422, 200]
    assert "firstName" in results[1]["errors"] and "emails" in results[2]["errors"]
    assert "emails.0" in results[3]["errors"] and "body" in results[4]["errors"]
    assert results[5]["person"]["id"] == results[0]["person"]["id"]
    assert results[5]["person"]["emails"] == ["a@acme.com", "a2@acme.com"]
    names = {p["firstName"] for p in client.get("/v2/crm/people", headers=org.bearer).json()["collection"]}
    assert names == {"Owner", "A again"}


def test_bulk_call_level_errors(client: TestClient, org: OrgFixture) -> None:
    r = client.put(
        f"{BULK}?matchingAttribute=nope", json={"people": [{"firstName": "A"}]}, headers=org.bearer
    )
    assert_error(r, 400, "matchingAttribute")
    r = client.put(BULK, json={"people": [{"firstName": "A"}] * 1001}, headers=org.bearer)
    assert_error(r, 422, "people")
    assert client.get("/v2/crm/people", headers=org.bearer).json()["pagination"]["total"] == 0


def test_upsert_people_batch_is_the_importers_entry_point(
    app: FastAPI, client: TestClient, org: OrgFixture
) -> None:
    records: list[dict[str, Any]] = [
        {"firstName": "Jane", "emails": ["jane@acme.com"], "phoneNumber": "+4930123456789"},
        {"firstName": "Jane", "lastName": "Doe", "emails": ["JANE@acme.com"]},
        {"lastName": "Roe", "emails": ["jane@acme.com", "other@acme.com"], "phoneNumber": "+4930123456789"},
    ]
    results = upsert_people_batch(app.state.db, org.org_id, records[:2], "email", "import:test")
    assert [type(r) for r in results] == [PersonResult, PersonResult]
    first, second = (r for r in results if isinstance(r, PersonResult))
    assert first.created and not second.created and second.matches == 1
    assert second.person["id"] == first.person["id"] and second.person["lastName"] == "Doe"
    [third] = upsert_people_batch(app.state.db, org.org_id, records[2:], "phone_number", "import:test")
    assert isinstance(third, PersonResult) and not third.created
    # Matched by phone number, not email: the emails given replace the list.
    assert third.person["emails"] == ["jane@acme.com", "other@acme.com"] and third.person["lastName"] == "Roe"
    [clash] = upsert_people_batch(
        app.state.db, org.org_id, [{"firstName": "X", "emails": ["jane@acme.com"]}], "phone_number", "t"
    )
    assert isinstance(clash, BadRequest) and clash.field == "phoneNumber"
    [dup] = upsert_people_batch(
        app.state.db, org.org_id, [{"firstName": "X", "emails": ["jane@acme.com"]}], None, "t"
    )
    assert isinstance(dup, Conflict) and first.person["id"] in dup.message
    try:
        upsert_people_batch(app.state.db, org.org_id, [{"firstName": "X"}], "nope", "t")
    except ProfilehubError as exc:
        assert exc.field == "matchingAttribute"
    else:
        raise AssertionError("an unknown matching attribute must fail the call")
    assert client.get("/v2/crm/people", headers=org.bearer).json()["pagination"]["total"] == 1
