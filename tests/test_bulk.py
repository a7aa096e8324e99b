"""``POST /cdp/v1/users/_bulk``: per-record answers, the size cap, and batch = one by one."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import OrgFixture, assert_error, make_org

ZERO_UUID = "00000000-0000-0000-0000-000000000000"


def bulk(client: TestClient, org: OrgFixture, records: list[Any]) -> Any:
    return client.post("/cdp/v1/users/_bulk", json=records, headers=org.headers("profile.write"))


def tricky_sequence(org_id: int) -> list[dict[str, Any]]:
    """Creations, case variants, a merge, a refused merge, limits, blocked values and bad records.

    Secondary ids stay within their limit: eviction picks the oldest ``_ts``, and writes in one
    millisecond (as a batch's often are) tie; see docs/bulk.md.
    """

    def w(ids: dict[str, Any], upsert: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        return {"orgId": org_id, "region": "EU", "ids": ids, "upsert": upsert or {}, **extra}

    return [
        w({"email": "ann@x.com", "AdId": "ad-1"}, {"profile": {"first_name": "Ann"}}),
        w({"cellphone": "+4915112345678", "AdId": "ad-2"}, {"consent": {"gdpr": "yes"}}),
        w({"email": " ANN@x.com ", "cellphone": "+49 151 12345678"}, {"profile": {"city": "Berlin"}}),
        w({"email": "bob@x.com", "AdId": "ad-1"}, {"profile": {"first_name": "Bob"}}),
        w({"email": "cat@x.com", "AdId": ZERO_UUID}),
        w({"nonsense_id": "1"}),
        w({}, ucid=str(uuid.uuid4())),
        w({"email": "dan@x.com", "crm_id": "c-1"}),
        w({"crm_id": "c-2", "cellphone": "+447700900123"}),
        w({"email": "dan@x.com", "crm_id": "c-2"}, {"profile": {"note": "refused merge"}}),
        {"orgId": org_id + 1, "region": "EU", "upsert": {}, "ids": {"email": "eve@x.com"}},
        w({"email": "eve@x.com"}, region="MARS"),
        {"orgId": org_id, "region": "EU", "upsert": {}, "ids": {"email": "fay@x.com"}, "unknown_key": 1},
        w({"email": "not-an-email"}),
        w({"email": "ann@x.com", "AdId": "ad-3"}),
        w({"email": "ann@x.com", "AdId": "ad-4"}),
        w({"email": "ann@x.com", "AdId": "ad-5"}, {"profile": {"first_name": None}}),
        w({"AdId": "ad-1"}, {"upsert_of_nothing": {}}),
        w({"AdId": "ad-2"}, {"mkt_preferences": {"sms": "no"}}),
    ]


def canonical(answers: list[tuple[int, dict[str, Any] | None]]) -> list[tuple[int, Any]]:
    """Answers with ucids replaced by their order of first appearance and timestamps dropped."""
    names: dict[str, str] = {}

    def name(ucid: str) -> str:
        return names.setdefault(ucid, f"P{len(names)}")

    out: list[tuple[int, Any]] = []
    for status, profile in answers:
        if profile is None:
            out.append((status, None))
            continue
        ids = {
            ns: sorted(tuple(sorted((k, v) for k, v in rec.items() if k != "_ts")) for rec in recs)
            for ns, recs in profile["ids"].items()
            if ns != "linkedUcid"
        }
        data = {
            c: {k: v for k, v in profile[c].items() if k != "_ts"}
            for c in ("profile", "mkt_preferences", "consent")
        }
        out.append(
            (status, (name(profile["ucid"]), [name(u) for u in profile["ids"]["linkedUcid"]], ids, data))
        )
    return out


def test_batch_resolves_as_the_same_records_one_by_one(app: FastAPI, client: TestClient) -> None:
    singly = make_org(app.state.db, org_id=501)
    batched = make_org(app.state.db, org_id=502)
    one_by_one: list[tuple[int, dict[str, Any] | None]] = []
    for record in tricky_sequence(singly.org_id):
        r = client.post("/cdp/v1/users", json=record, headers=singly.headers("profile.write"))
        one_by_one.append((r.status_code, r.json()[0] if r.status_code == 200 else None))
    r = bulk(client, batched, tricky_sequence(batched.org_id))
    assert r.status_code == 200, r.text
    items = r.json()
    assert [i["index"] for i in items] == list(range(len(items)))
    as_batch = [(i["status"], i.get("profile")) for i in items]
    assert canonical(as_batch) == canonical(one_by_one)
    # The sequence exercises what it claims to: a merge, a refused merge, and errors.
    statuses = [s for s, _ in one_by_one]
    assert {400, 403, 404} <= set(statuses) and statuses.count(200) >= 12
    assert any(p and p["ids"]["linkedUcid"] for _, p in one_by_one)


def test_bad_records_are_answered_by_index_and_the_good_ones_written(
    client: TestClient, org: OrgFixture
) -> None:
    records: list[Any] = [
        {"orgId": org.org_id, "region": "EU", "upsert": {}, "ids": {"email": "one@x.com"}},
        {"orgId": org.org_id, "region": "EU", "upsert": {}, "ids": {"nope": "1"}},
        "not an object",
        {"orgId": org.org_id, "region": "EU"},
        {"orgId": 999, "region": "EU", "upsert": {}, "ids": {"email": "two@x.com"}},
        {"orgId": org.org_id, "region": "EU", "ids": {"email": "three@x.com"}, "upsert": {"bad": {}}},
        {"orgId": "1234", "region": "EU", "upsert": {}, "ids": {"email": "four@x.com"}},
        {
            "orgId": org.org_id,
            "region": "EU",
            "ids": {"email": "five@x.com"},
            "upsert": {"profile": {"a": 1}},
        },
    ]
    r = bulk(client, org, records)
    assert r.status_code == 200, r.text
    items = r.json()
    assert [(i["index"], i["status"]) for i in items] == [
        (0, 200),
        (1, 400),
        (2, 400),
        (3, 400),
        (4, 403),
        (5, 400),
        (6, 400),
        (7, 200),
    ]
    for item in items:
        if item["status"] != 200:
            assert "profile" not in item
            error = item["error"]
            assert error["status"] == item["status"] and error["success"] is False
            assert error["message"] and error["errors"]
    assert "ids.nope" in items[1]["error"]["errors"]
    assert "orgId" in items[4]["error"]["errors"]
    assert "upsert.bad" in items[5]["error"]["errors"]
    assert "orgId" in items[6]["error"]["errors"]
    assert items[7]["profile"]["profile"]["a"] == 1
    found = client.post(
        "/cdp/v1/users/_search",
        json={"orgId": org.org_id, "search": {"email": ["one@x.com", "five@x.com", "two@x.com"]}},
        headers=org.headers("profile.read"),
    ).json()
    assert {p["ucid"] for p in found} == {items[0]["profile"]["ucid"], items[7]["profile"]["ucid"]}


def test_notices_are_reported_per_record(client: TestClient, org: OrgFixture) -> None:
    items = bulk(
        client,
        org,
        [{"orgId": org.org_id, "region": "EU", "upsert": {}, "ids": {"email": "a@x.com", "AdId": ZERO_UUID}}],
    ).json()
    assert [n["code"] for n in items[0]["notices"]] == ["blocked"]


def test_more_than_1000_writes_are_refused(client: TestClient, org: OrgFixture) -> None:
    records = [
        {"orgId": org.org_id, "region": "EU", "upsert": {}, "ids": {"AdId": f"a{n}"}} for n in range(1001)
    ]
    assert_error(bulk(client, org, records), 413, "body")
    assert bulk(client, org, records[:1000]).status_code == 200


def test_the_body_must_be_an_array(client: TestClient, org: OrgFixture) -> None:
    r = client.post(
        "/cdp/v1/users/_bulk",
        json={"orgId": org.org_id, "region": "EU", "upsert": {}, "ids": {"email": "a@x.com"}},
        headers=org.headers("profile.write"),
    )
    assert_error(r, 400, "body")
    assert bulk(client, org, []).json() == []


def test_bulk_needs_profile_write(client: TestClient, org: OrgFixture) -> None:
    r = client.post("/cdp/v1/users/_bulk", json=[], headers=org.headers("profile.read"))
    assert_error(r, 403, "scopes")
    assert_error(client.post("/cdp/v1/users/_bulk", json=[]), 401, "apikey")
