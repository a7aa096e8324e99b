"""Idempotency-Key on the write routes: the first answer replayed for 24 h with nothing written
again, a changed request refused with 422, concurrent requests under one key written once (in one
process and across two), the key kept with its write and forgotten with an erased person."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from profilehub.app import create_app
from profilehub.config import Settings
from profilehub.store.tables import changes, idempotency_keys
from tests.conftest import OrgFixture, assert_error, make_org, run_concurrently


def change_count(app: FastAPI, org: OrgFixture) -> int:
    with app.state.db.read() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).select_from(changes).where(changes.c.org_id == org.org_id)
            ).scalar_one()
        )


def write_body(org: OrgFixture, email: str = "idem@example.com", city: str = "Oslo") -> dict[str, Any]:
    return {
        "orgId": org.org_id,
        "region": "EU",
        "ids": {"email": email},
        "upsert": {"profile": {"city": city}},
    }


def keyed(org: OrgFixture, key: str) -> dict[str, str]:
    return {**org.headers(), "Idempotency-Key": key}


def same_answer(first: httpx.Response, again: httpx.Response) -> None:
    assert again.status_code == first.status_code
    assert again.content == first.content
    for name in ("content-type", "x-profilehub-notices", "x-profilehub-matches"):
        assert again.headers.get(name) == first.headers.get(name), name
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers


def test_a_replayed_cdp_write_answers_the_first_answer_and_writes_nothing(
    app: FastAPI, client: TestClient, org: OrgFixture
) -> None:
    first = client.post("/cdp/v1/users", json=write_body(org), headers=keyed(org, "k-1"))
    assert first.status_code == 200, first.text
    written = change_count(app, org)
    again = client.post("/cdp/v1/users", json=write_body(org), headers=keyed(org, "k-1"))
    same_answer(first, again)
    assert change_count(app, org) == written
    # The same write without the key is written again (so the count above could have moved).
    assert (
        client.post("/cdp/v1/users", json=write_body(org, city="Bergen"), headers=org.headers()).status_code
        == 200
    )
    assert change_count(app, org) > written


def test_the_same_key_with_another_request_is_a_422(
    app: FastAPI, client: TestClient, org: OrgFixture
) -> None:
    assert client.post("/cdp/v1/users", json=write_body(org), headers=keyed(org, "k-2")).status_code == 200
    written = change_count(app, org)
    changed = client.post("/cdp/v1/users", json=write_body(org, city="Bergen"), headers=keyed(org, "k-2"))
    assert_error(changed, 422, "Idempotency-Key")
    bulk = client.post("/cdp/v1/users/_bulk", json=[write_body(org)], headers=keyed(org, "k-2"))
    assert_error(bulk, 422, "Idempotency-Key")
    assert change_count(app, org) == written
    assert_error(
        client.post("/cdp/v1/users", json=write_body(org), headers=keyed(org, "x" * 256)),
        400,
        "Idempotency-Key",
    )


def test_bulk_and_crm_writes_replay(app: FastAPI, client: TestClient, org: OrgFixture) -> None:
    calls: list[tuple[str, str, Any, dict[str, str]]] = [
        (
            "POST",
            "/cdp/v1/users/_bulk",
            [write_body(org, f"b{i}@example.com") for i in range(3)],
            org.headers(),
        ),
        (
            "PUT",
            "/v2/crm/people?matchingAttribute=email",
            {"firstName": "Ada", "emails": ["ada@example.com"]},
            org.bearer,
        ),
        ("POST", "/v2/crm/people", {"firstName": "Bo", "emails": ["bo@example.com"]}, org.bearer),
        (
            "PUT",
            "/v2/crm/people/_bulk",
            {"people": [{"firstName": "Cy", "emails": ["cy@example.com"]}]},
            org.bearer,
        ),
        (
            "PUT",
            "/v2/crm/companies?matchingAttribute=domain",
            {"name": "Acme", "domain": "acme.com"},
            org.bearer,
        ),
        ("POST", "/v2/crm/companies", {"name": "Beta", "domain": "beta.com"}, org.bearer),
    ]
    for n, (method, url, body, headers) in enumerate(calls):
        hdrs = {**headers, "Idempotency-Key": f"call-{n}"}
        first = client.request(method, url, json=body, headers=hdrs)
        assert first.status_code in (200, 201), (url, first.text)
        written = change_count(app, org)
        again = client.request(method, url, json=body, headers=hdrs)
        same_answer(first, again)
        assert change_count(app, org) == written, url
    # A POST create replayed made one person, not two.
    people = client.get("/v2/crm/people", params={"search": "Bo"}, headers=org.bearer).json()["collection"]
    assert [p["firstName"] for p in people] == ["Bo"]


def test_concurrent_requests_with_one_key_write_once(app: FastAPI, org: OrgFixture) -> None:
    body = write_body(org, "race@example.com")
    before = change_count(app, org)
    answers = run_concurrently(
        app,
        lambda ac: [ac.post("/cdp/v1/users", json=body, headers=keyed(org, "race")) for _ in range(12)],
    )
    statuses = sorted(r.status_code for r in answers)
    assert set(statuses) <= {200, 409} and 200 in statuses, statuses
    for r in answers:
        if r.status_code == 409:
            assert_error(r, 409, "Idempotency-Key")
            assert r.headers["Retry-After"] == "1"
    ok = [r for r in answers if r.status_code == 200]
    assert all(r.content == ok[0].content for r in ok)
    # One write: what a single write of a new person logs.
    single = change_count(app, org) - before
    other = write_body(org, "solo@example.com")
    with TestClient(app) as client:
        mark = change_count(app, org)
        assert client.post("/cdp/v1/users", json=other, headers=org.headers()).status_code == 200
        assert single == change_count(app, org) - mark


def test_two_processes_answering_one_key_at_once_write_once(database_url: str) -> None:
    """Two app instances on one database (two server processes): both may start the write, one
    commits, the other is rolled back and answers the first's answer."""
    settings = Settings(database_url=database_url)
    apps = [create_app(settings), create_app(settings)]
    try:
        org = make_org(apps[0].state.db)
        bodies = [write_body(org, f"two{i}@example.com") for i in range(6)]

        async def main() -> list[httpx.Response]:
            clients = [
                httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://test", timeout=60)
                for a in apps
            ]
            try:
                sends = [
                    c.post("/cdp/v1/users", json=b, headers=keyed(org, f"two-{i}"))
                    for i, b in enumerate(bodies)
                    for c in clients
                ]
                return list(await asyncio.gather(*sends))
            finally:
                for c in clients:
                    await c.aclose()

        before = change_count(apps[0], org)
        answers = asyncio.run(main())
        assert [r.status_code for r in answers] == [200] * 12, [
            r.text for r in answers if r.status_code != 200
        ]
        for i in range(6):
            a, b = answers[2 * i], answers[2 * i + 1]
            assert a.json() == b.json()  # one profile, one answer
        with TestClient(apps[0]) as client:
            mark = change_count(apps[0], org)
            assert (
                client.post(
                    "/cdp/v1/users", json=write_body(org, "x@example.com"), headers=org.headers()
                ).status_code
                == 200
            )
            per_write = change_count(apps[0], org) - mark
        assert change_count(apps[0], org) - per_write - before == 6 * per_write
    finally:
        for a in apps:
            a.state.db.close()


def test_a_key_saved_by_another_process_during_the_write_rolls_back_only_that_write(
    app: FastAPI, org: OrgFixture, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The moment two server processes meet on one key, made deterministic: the key's answer is
    saved by 'the other process' after this one looked it up and before its write commits. This
    request answers the saved answer and its write is rolled back, while another client's write
    sent at once commits: the key's clash is this write's own outcome, not a database failure
    (which logged a traceback as an ERROR and ran the writer's whole transaction again, every job
    in it one by one, this write included)."""
    body = write_body(org, "clash@example.com")
    keys = app.state.idempotency
    real_lookup = keys.lookup
    first = {"done": False}

    def lookup_missing_once(conn: sa.Connection, org_id: int, key: str) -> Any:
        if not first["done"]:  # the gate's lookup: the other process has not committed yet
            first["done"] = True
            return None
        return real_lookup(conn, org_id, key)

    with TestClient(app) as client:
        saved = client.post("/cdp/v1/users", json=body, headers=keyed(org, "clash"))
        assert saved.status_code == 200
        mark = change_count(app, org)
        solo = client.post("/cdp/v1/users", json=write_body(org, "solo@example.com"), headers=org.headers())
        assert solo.status_code == 200
        per_write = change_count(app, org) - mark  # what one write of a new person logs
        # 'The other process' wrote first; this one now runs the same request under the key.
        before = change_count(app, org)
        monkeypatch.setattr(keys, "lookup", lookup_missing_once)
        other = write_body(org, "neighbour@example.com")
        with caplog.at_level("INFO"):
            answers = run_concurrently(
                app,
                lambda ac: [
                    ac.post("/cdp/v1/users", json=body, headers=keyed(org, "clash")),
                    ac.post("/cdp/v1/users", json=other, headers=org.headers()),
                ],
            )
    again, neighbour = answers
    same_answer(saved, again)
    assert neighbour.status_code == 200
    assert [r.getMessage() for r in caplog.records if r.levelno >= 40] == []
    # Only the neighbour's write is in the change log: the clashing one was rolled back.
    assert change_count(app, org) - before == per_write


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_key_expires_after_24_hours(app: FastAPI, client: TestClient, org: OrgFixture) -> None:
    clock = Clock(1_800_000_000.0)
    app.state.idempotency.clock = clock
    first = client.post("/cdp/v1/users", json=write_body(org), headers=keyed(org, "day"))
    assert first.status_code == 200
    clock.now += 24 * 3600 - 1
    assert (
        client.post("/cdp/v1/users", json=write_body(org), headers=keyed(org, "day")).headers.get(
            "Idempotent-Replayed"
        )
        == "true"
    )
    assert_error(
        client.post("/cdp/v1/users", json=write_body(org, city="Rome"), headers=keyed(org, "day")), 422
    )
    clock.now += 2
    written = change_count(app, org)
    later = client.post("/cdp/v1/users", json=write_body(org, city="Rome"), headers=keyed(org, "day"))
    assert later.status_code == 200 and "Idempotent-Replayed" not in later.headers
    assert later.json()[0]["profile"]["city"] == "Rome"
    assert change_count(app, org) > written
    with app.state.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(idempotency_keys)).scalar_one() == 1


def test_keys_are_per_org(app: FastAPI, client: TestClient, org: OrgFixture) -> None:
    other = make_org(app.state.db, org_id=4321)
    assert client.post("/cdp/v1/users", json=write_body(org), headers=keyed(org, "shared")).status_code == 200
    theirs = client.post("/cdp/v1/users", json=write_body(other), headers=keyed(other, "shared"))
    assert theirs.status_code == 200 and "Idempotent-Replayed" not in theirs.headers


def test_an_erased_person_is_not_kept_in_saved_answers(
    app: FastAPI, client: TestClient, org: OrgFixture
) -> None:
    first = client.post(
        "/cdp/v1/users", json=write_body(org, "gone@example.com"), headers=keyed(org, "erase")
    )
    ucid = first.json()[0]["ucid"]
    erase = {"orgId": org.org_id, "region": "EU", "ids": {"ucid": [ucid]}}
    assert client.post("/cdp/v1/users/_delete", json=erase, headers=org.headers()).status_code == 200
    with app.state.db.read() as conn:
        bodies = conn.execute(sa.select(idempotency_keys.c.body)).scalars().all()
    assert not any(ucid in b for b in bodies)
    crm = client.put(
        "/v2/crm/people?matchingAttribute=email",
        json={"firstName": "Gone", "emails": ["gone.crm@example.com"]},
        headers={**org.bearer, "Idempotency-Key": "crm-erase"},
    )
    person_id = crm.json()["person"]["id"]
    assert client.delete(f"/v2/crm/people/{person_id}", headers=org.bearer).status_code == 200
    with app.state.db.read() as conn:
        bodies = conn.execute(sa.select(idempotency_keys.c.body)).scalars().all()
    assert not any(person_id in b for b in bodies) and not any("gone.crm" in b for b in bodies)


@pytest.mark.parametrize("key", ["", "caf\u00e9", "a\tb"])
def test_a_bad_key_is_a_400_naming_the_header(client: TestClient, org: OrgFixture, key: str) -> None:
    headers: dict[str, Any] = {**org.headers(), "Idempotency-Key": key.encode()}
    r = client.post("/cdp/v1/users", json=write_body(org), headers=headers)
    assert_error(r, 400, "Idempotency-Key")
    assert json.loads(r.text)["status"] == 400


def test_a_replay_is_counted_under_its_route(client: TestClient, org: OrgFixture) -> None:
    from tests.test_metrics import scrape, value

    for _ in range(2):
        r = client.put(
            "/v2/crm/people?matchingAttribute=email",
            json={"firstName": "M", "emails": ["m@example.com"]},
            headers={**org.bearer, "Idempotency-Key": "metrics"},
        )
        assert r.status_code == 201
    samples = scrape(client)
    assert (
        value(samples, "profilehub_http_requests_total", method="PUT", route="/v2/crm/people", status="201")
        == 2
    )
