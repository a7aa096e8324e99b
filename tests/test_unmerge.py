"""``POST /cdp/v1/users/_unmerge`` over HTTP on both databases: a merged person rebuilt from its
journal as if the listed ids had never linked; bad input refused and nothing changed; writes
racing an unmerge."""

from __future__ import annotations

import json
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from profilehub.lineage import journal
from profilehub.store.changes import history
from profilehub.store.tables import profiles
from tests.cdp_client import Cdp, id_values
from tests.conftest import OrgFixture, assert_error, make_org, run_concurrently

EMAIL = "ann@example.org"


def _unmerge(client: TestClient, org: OrgFixture, ucid: str, ids: Any, **extra: Any) -> httpx.Response:
    scopes = extra.pop("scopes", "profile.write")
    body = {"orgId": org.org_id, "region": "EU", "ucid": ucid, "ids": ids, **extra}
    return client.post("/cdp/v1/users/_unmerge", json=body, headers=org.headers(scopes))


def _merged_person(cdp: Cdp) -> tuple[dict[str, Any], dict[str, Any]]:
    """A (email, an AdId, a city) and B (crm_id, another AdId, consent), merged by a write that
    carried A's email and B's crm_id."""
    a = cdp.write({"email": EMAIL, "AdId": "ad-a"}, {"profile": {"city": "Oslo"}})
    b = cdp.write({"crm_id": "crm-1", "AdId": "ad-b"}, {"consent": {"email": "yes"}})
    merged = cdp.write({"email": EMAIL, "crm_id": "crm-1"}, {"profile": {"tier": "gold"}})
    assert merged["ucid"] == a["ucid"] and merged["ids"]["linkedUcid"] == [b["ucid"]]
    assert merged["consent"]["email"] == "yes" and id_values(merged, "AdId") == ["ad-a", "ad-b"]
    return a, b


def test_unmerging_the_id_that_linked_gives_the_merged_profile_back(app: FastAPI, client: TestClient) -> None:
    org = make_org(app.state.db)
    cdp = Cdp(client, org)
    a, b = _merged_person(cdp)

    # Named by the merged-away ucid: its profile comes first.
    r = _unmerge(client, org, b["ucid"], {"crm_id": ["crm-1"]})
    assert r.status_code == 200, r.text
    assert "X-Profilehub-Notices" not in r.headers  # it changed something
    got_b, got_a = r.json()
    assert got_b["ucid"] == b["ucid"] and got_a["ucid"] == a["ucid"]
    assert id_values(got_b, "crm_id") == ["crm-1"] and id_values(got_b, "AdId") == ["ad-b"]
    assert got_b["consent"]["email"] == "yes" and "tier" not in got_b["profile"]
    assert got_b["created_ts"] == b["created_ts"] and got_b["ids"]["linkedUcid"] == []
    # The merging write landed on A through the email, so its attribute stays there; its crm_id
    # stays with B, the profile it first attached to.
    assert got_a["profile"]["city"] == "Oslo" and got_a["profile"]["tier"] == "gold"
    assert id_values(got_a, "crm_id") == [] and id_values(got_a, "AdId") == ["ad-a"]
    assert got_a["consent"] == {} and got_a["ids"]["linkedUcid"] == []

    # The store agrees: each id finds its own profile again, and B is a master once more.
    [found_b] = cdp.search({"crm_id": ["crm-1"]})
    [found_a] = cdp.search({"email": [EMAIL]})
    assert (found_b, found_a) == (got_b, got_a)
    assert (
        client.get(f"/cdp/v1/users/{b['ucid']}", params={"orgId": org.org_id}, headers=org.headers()).json()
        == got_b
    )
    # Each profile's journal is its own writes; the history records the unmerge.
    assert [e["upsert"] for e in journal(app.state.profiles, org.org_id, b["ucid"])] == [
        {"consent": {"email": "yes"}}
    ]
    assert len(journal(app.state.profiles, org.org_id, a["ucid"])) == 2
    with app.state.db.read() as conn:
        log = history(conn, org.org_id, entity="profile", entity_id=b["ucid"])
    [entry] = [c for c in log if c["action"] == "unmerge"]
    assert entry["detail"]["idTypes"] == ["crm_id"] and entry["detail"]["ucids"] == [a["ucid"], b["ucid"]]

    # The change feed has one profile.unmerged event per resulting profile, the profile as answered.
    feed = client.get("/cdp/v1/changes", params={"orgId": org.org_id, "limit": 1000}, headers=org.headers())
    events = [e for e in feed.json()["changes"] if e["type"] == "profile.unmerged"]
    assert [e["data"]["profile"] for e in events] == [got_b, got_a]
    assert {e["data"]["unmergedFrom"] for e in events} == {a["ucid"]}

    # A write with both ids merges them again, as before; unmerging is not a block.
    again = cdp.write({"email": EMAIL, "crm_id": "crm-1"})
    assert again["ucid"] == a["ucid"] and again["ids"]["linkedUcid"] == [b["ucid"]]


def test_unmerging_the_other_side_moves_the_merging_write_with_it(app: FastAPI, client: TestClient) -> None:
    org = make_org(app.state.db)
    cdp = Cdp(client, org)
    a, b = _merged_person(cdp)
    # By the raw email (it stands for its hashes), named by the master.
    r = _unmerge(client, org, a["ucid"], {"email": [" Ann@Example.org "]})
    assert r.status_code == 200, r.text
    got_a, got_b = r.json()
    assert got_a["ucid"] == a["ucid"] and got_b["ucid"] == b["ucid"]
    # Now the merging write found B through its crm_id; A's email stayed with A.
    assert got_a["profile"] == {"city": "Oslo", "_ts": got_a["profile"]["_ts"]}
    assert got_b["profile"]["tier"] == "gold" and id_values(got_b, "email_sha256_lowercase") == []
    assert len(id_values(got_a, "email_sha256_lowercase")) == 1


def test_a_write_carrying_only_unmerged_ids_stays_with_their_profile_and_goes_with_its_erasure(
    app: FastAPI, client: TestClient
) -> None:
    org = make_org(app.state.db)
    cdp = Cdp(client, org)
    a, b = _merged_person(cdp)
    # After the merge, a write by B's crm_id alone: it carries no id of its own.
    cdp.write({"crm_id": "crm-1"}, {"profile": {"nickname": "Bee"}})
    r = _unmerge(client, org, a["ucid"], {"crm_id": ["crm-1"]})
    assert r.status_code == 200, r.text
    # Two profiles, each found by an id: the crm_id-only write is B's again, not a third profile
    # holding no id (findable by no search, left behind by an erasure by crm_id).
    got_a, got_b = r.json()
    assert (got_a["ucid"], got_b["ucid"]) == (a["ucid"], b["ucid"])
    assert got_b["profile"]["nickname"] == "Bee" and "nickname" not in got_a["profile"]
    [found_b] = cdp.search({"crm_id": ["crm-1"]})
    assert found_b == got_b

    # Erasing B by its crm_id leaves nothing of it: no profile holds "Bee" any more.
    cdp.delete({"crm_id": ["crm-1"]})
    with app.state.db.read() as conn:
        data = conn.execute(sa.select(profiles.c.data).where(profiles.c.org_id == org.org_id)).scalars().all()
    assert data and not any("Bee" in str(d) for d in data)
    assert cdp.search({"email": [EMAIL]})[0]["ucid"] == a["ucid"]


def test_unmerging_an_id_that_merged_nothing_leaves_the_person_whole(
    app: FastAPI, client: TestClient
) -> None:
    org = make_org(app.state.db)
    cdp = Cdp(client, org)
    first = cdp.write({"email": EMAIL}, {"consent": {"email": "yes"}})
    cdp.write({"email": EMAIL}, {"profile": {"city": "Oslo"}})
    cdp.write({"email": EMAIL}, {"consent": {"email": "no"}})
    r = _unmerge(client, org, first["ucid"], {"email": [EMAIL]})
    assert r.status_code == 200, r.text
    # One profile, found by the email, with the later denial: no write split off without ids.
    [only] = r.json()
    assert only["ucid"] == first["ucid"] and only["consent"]["email"] == "no"
    assert only["profile"]["city"] == "Oslo"
    assert cdp.search({"email": [EMAIL]}) == [only]
    # Nothing changed, and the answer says so: no unmerge in the history, no profile.unmerged event
    # telling subscribers the person was split.
    [notice] = json.loads(r.headers["X-Profilehub-Notices"])
    assert notice["code"] == "nothing_unmerged" and notice["field"] == "ids", notice
    with app.state.db.read() as conn:
        log = history(conn, org.org_id, entity="profile", entity_id=first["ucid"])
    assert [c["action"] for c in log if c["action"] == "unmerge"] == []
    feed = client.get("/cdp/v1/changes", params={"orgId": org.org_id, "limit": 1000}, headers=org.headers())
    assert [e for e in feed.json()["changes"] if e["type"] == "profile.unmerged"] == []


def test_bad_unmerges_are_refused_and_change_nothing(app: FastAPI, client: TestClient) -> None:
    org = make_org(app.state.db)
    other = make_org(app.state.db, org_id=77)
    cdp = Cdp(client, org)
    a, b = _merged_person(cdp)
    stranger = cdp.write({"crm_id": "crm-9"})
    before = cdp.search({"ucid": [a["ucid"], stranger["ucid"]]})

    unknown = "0191e5a0-0000-7000-8000-000000000000"
    assert_error(_unmerge(client, org, unknown, {"crm_id": ["crm-1"]}), 404, "ucid")
    assert_error(_unmerge(client, org, a["ucid"], {"crm_id": ["crm-1"]}, region="UK"), 404, "ucid")
    body = assert_error(
        _unmerge(client, org, a["ucid"], {"crm_id": ["crm-9"], "AdId": ["ad-b"]}), 400, "ids.crm_id"
    )
    assert "crm-9" in body["message"] and "ad-b" not in body["message"]
    assert_error(_unmerge(client, org, a["ucid"], {"shoe_size": ["9"]}), 400, "ids.shoe_size")
    assert_error(_unmerge(client, org, a["ucid"], {}), 400, "ids")
    assert_error(_unmerge(client, org, a["ucid"], {"crm_id": []}), 400, "ids.crm_id")
    assert_error(_unmerge(client, org, "not-a-ucid", {"crm_id": ["crm-1"]}), 400, "ucid")
    assert_error(_unmerge(client, org, a["ucid"], {"crm_id": ["crm-1"]}, region="MARS"), 400, "region")
    assert_error(
        _unmerge(client, org, a["ucid"], {"crm_id": ["crm-1"]}, scopes="profile.read"), 403, "scopes"
    )
    assert_error(_unmerge(client, other, a["ucid"], {"crm_id": ["crm-1"]}, orgId=org.org_id), 403, "orgId")
    # The other org cannot reach this person by its ucid either.
    assert_error(_unmerge(client, other, a["ucid"], {"crm_id": ["crm-1"]}), 404, "ucid")
    r = client.post(
        "/cdp/v1/users/_unmerge", json={"orgId": org.org_id, "region": "EU", "ucid": a["ucid"], "ids": {}}
    )
    assert r.status_code == 401

    # A journal cut short by retention: B's first write is gone, so the person cannot be rebuilt.
    with app.state.db.engine.begin() as conn:
        conn.execute(
            sa.text("DELETE FROM profile_writes WHERE org_id = :o AND ucid = :u"),
            {"o": org.org_id, "u": b["ucid"]},
        )
    body = assert_error(_unmerge(client, org, a["ucid"], {"crm_id": ["crm-1"]}), 409, "ucid")
    assert b["ucid"] in body["message"]
    assert cdp.search({"ucid": [a["ucid"], stranger["ucid"]]}) == before


def test_writes_racing_an_unmerge_are_all_kept(app: FastAPI, client: TestClient) -> None:
    org = make_org(app.state.db)
    cdp = Cdp(client, org)
    a, b = _merged_person(cdp)
    n = 24

    def calls(ac: httpx.AsyncClient) -> list[Any]:
        writes = [
            ac.post(
                "/cdp/v1/users",
                json={
                    "orgId": org.org_id,
                    "region": "EU",
                    "ids": {"email": EMAIL},
                    "upsert": {"profile": {f"k{i}": i}},
                },
                headers=org.headers(),
            )
            for i in range(n)
        ]
        body = {"orgId": org.org_id, "region": "EU", "ucid": a["ucid"], "ids": {"crm_id": ["crm-1"]}}
        unmerge = ac.post("/cdp/v1/users/_unmerge", json=body, headers=org.headers())
        return [*writes[: n // 2], unmerge, *writes[n // 2 :]]

    answers = run_concurrently(app, calls)
    assert [r.status_code for r in answers] == [200] * (n + 1), [
        r.text for r in answers if r.status_code != 200
    ]
    [found_a] = cdp.search({"email": [EMAIL]})
    [found_b] = cdp.search({"crm_id": ["crm-1"]})
    # Whichever writes came before the unmerge were replayed, the rest landed after it: all are on A.
    assert {f"k{i}" for i in range(n)} <= set(found_a["profile"]) and found_a["ucid"] == a["ucid"]
    assert found_b["ucid"] == b["ucid"] and found_b["ids"]["linkedUcid"] == []
    assert len(journal(app.state.profiles, org.org_id, a["ucid"])) == 2 + n
    assert json.dumps(found_b).count("ad-b") == 1
