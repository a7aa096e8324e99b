"""``POST /cdp/v1/users/_explain``: the decision a write would take now, writing nothing, and the
same decision the write then takes (a property over random write sequences, both databases)."""

from __future__ import annotations

import hashlib
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profilehub.errors import ProfilehubError
from profilehub.lineage import NEW_PROFILE, explain
from profilehub.profiles import ProfileService
from profilehub.store.database import Database
from tests.cdp_client import Cdp
from tests.conftest import assert_error, make_org
from tests.test_identity_properties import _new_org, _ucids_in_creation_order, _writes, one_write

EMAIL_HASH = hashlib.sha256(b"ann@example.org").hexdigest()


def _explain(client: TestClient, org: Any, body: dict[str, Any], scopes: str = "profile.read") -> Any:
    return client.post("/cdp/v1/users/_explain", json=body, headers=org.headers(scopes))


def _rows(app: FastAPI) -> dict[str, int]:
    with app.state.db.read() as conn:
        return {
            t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("profiles", "profile_ids", "changes", "profile_writes")
        }


def test_explain_answers_the_merge_a_write_would_make_and_writes_nothing(
    app: FastAPI, client: TestClient
) -> None:
    org = make_org(app.state.db)
    cdp = Cdp(client, org)
    a = cdp.write({"email": "ann@example.org"}, {"profile": {"city": "Oslo"}})
    b = cdp.write({"crm_id": "crm-1"})
    c = cdp.write({"crm_id": "crm-2", "cellphone": "+4930123456"})
    before = _rows(app)
    body = {
        "orgId": org.org_id,
        "region": "EU",
        "ids": {"email": " Ann@Example.org", "crm_id": "crm-1", "cellphone": "+4930123456"},
        "upsert": {"profile": {"city": "Bergen"}},
    }
    r = _explain(client, org, body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["master"] == a["ucid"]
    assert answer["merges"] == [b["ucid"]]  # c holds a second crm_id: over the limit of 1
    matched = {m["ucid"]: m["via"] for m in answer["matches"]}
    assert set(matched) == {a["ucid"], b["ucid"], c["ucid"]}
    assert {"idType": "email_sha256_lowercase", "value": EMAIL_HASH} in matched[a["ucid"]]
    assert matched[b["ucid"]] == [{"idType": "crm_id", "value": "crm-1"}]
    assert {v["idType"] for v in matched[c["ucid"]]} == {
        "cellphone_number_e164_md5",
        "cellphone_number_e164_sha1",
        "cellphone_number_e164_sha256",
    }
    [refused] = answer["refused"]
    assert (
        refused["ucid"] == c["ucid"] and refused["code"] == "merge_refused" and "crm_id" in refused["message"]
    )
    assert {"merge_refused", "id_owned_elsewhere"} <= {n["code"] for n in answer["notices"]}
    assert _rows(app) == before  # nothing written, nothing journaled or logged
    [still] = cdp.search({"ucid": [a["ucid"]]})
    assert still["profile"]["city"] == "Oslo" and still["ids"]["linkedUcid"] == []

    # A write naming nobody known: a new profile (master null), nothing matched.
    r = _explain(client, org, {"orgId": org.org_id, "region": "EU", "ids": {"crm_id": "new"}, "upsert": {}})
    assert r.json() == {"master": None, "matches": [], "merges": [], "refused": [], "notices": []}
    # Named by ucid: matched via the ucid.
    r = _explain(client, org, {"orgId": org.org_id, "region": "EU", "ucid": b["ucid"], "upsert": {}})
    assert r.json()["matches"] == [{"ucid": b["ucid"], "via": [{"idType": "ucid", "value": b["ucid"]}]}]


def test_explain_refuses_what_the_write_refuses(app: FastAPI, client: TestClient) -> None:
    org = make_org(app.state.db)
    other = make_org(app.state.db, org_id=77)
    base = {"orgId": org.org_id, "region": "EU", "ids": {"crm_id": "1"}, "upsert": {}}
    assert_error(_explain(client, org, {**base, "upsert": {"nope": {}}}), 400, "upsert.nope")
    assert_error(_explain(client, org, {**base, "ids": {"shoe_size": "9"}}), 400, "ids.shoe_size")
    assert_error(_explain(client, org, {**base, "region": "MARS"}), 400, "region")
    unknown = "0191e5a0-0000-7000-8000-000000000000"
    assert_error(_explain(client, org, {**base, "ids": {}, "ucid": unknown}), 404, "ucid")
    assert_error(_explain(client, other, base), 403)  # another org's body
    assert_error(_explain(client, org, base, scopes="profile.write"), 403, "scopes")
    r = client.post("/cdp/v1/users/_explain", json=base)
    assert r.status_code == 401


def _notices(answer: dict[str, Any], created_ucid: str | None) -> str:
    """An explanation's notices, the profile it would create named as the write named it."""
    text = repr(answer["notices"])
    return text.replace(NEW_PROFILE, created_ucid) if created_ucid else text


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(one_write, min_size=1, max_size=14))
def test_explain_then_write_take_the_same_decision(db: Database, plan: list[dict[str, Any]]) -> None:
    org_id = _new_org(db)
    service = ProfileService(db)
    for step in plan:
        [write] = _writes(org_id, [step], _ucids_in_creation_order(db, org_id))
        try:
            explained: Any = explain(service, write, "prop")
        except ProfilehubError as exc:
            explained = ("error", exc.status, exc.message)
        [result] = service.write_batch([write], "prop")
        if isinstance(result, ProfilehubError):
            assert explained == ("error", result.status, result.message)
            continue
        assert not isinstance(explained, tuple), explained
        profile = result.profile
        created = profile["ucid"] if result.created else None
        # The same master (or a new profile), the same merges, the same notices: a refused merge,
        # an id kept elsewhere or evicted reads the same in both (ucids included).
        assert explained["master"] == (None if created else profile["ucid"])
        assert len(explained["merges"]) == result.merges
        assert set(explained["merges"]) <= set(profile["ids"]["linkedUcid"])
        assert _notices(explained, created) == repr(result.notices)
        if write.ucid is None:  # (a write naming a ucid may land on it, keeping the rest apart)
            refused = {u for n in result.notices if n["code"] == "merge_refused" for u in n["ucids"]}
            assert {r["ucid"] for r in explained["refused"]} == refused - {profile["ucid"]}
