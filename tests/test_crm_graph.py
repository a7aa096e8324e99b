"""One person across both dialects: CRM people resolve in the org's identity graph (docs/crm.md)."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.cdp_client import Cdp
from tests.conftest import OrgFixture, assert_error, make_org, run_concurrently

PEOPLE = "/v2/crm/people"


def upsert(client: TestClient, org: OrgFixture, body: dict[str, Any]) -> dict[str, Any]:
    r = client.put(f"{PEOPLE}?matchingAttribute=email", json=body, headers=org.bearer)
    assert r.status_code in (200, 201), r.text
    return dict(r.json()["person"])


def digests(email: str) -> dict[str, str]:
    def h(name: str, text: str) -> str:
        return hashlib.new(name, text.encode()).hexdigest()

    return {
        "email_sha256_lowercase": h("sha256", email.lower()),
        "email_sha256_uppercase": h("sha256", email.upper()),
        "email_md5_lowercase": h("md5", email.lower()),
        "email_md5_uppercase": h("md5", email.upper()),
        "email_sha1_lowercase": h("sha1", email.lower()),
    }


def test_a_crm_person_is_found_by_cdp_search_by_email_and_every_derived_hash(
    client: TestClient, org: OrgFixture
) -> None:
    person = upsert(client, org, {"firstName": "Ana", "emails": ["Ana.Lima@Example.com"]})
    assert person["ucid"] is not None
    cdp = Cdp(client, org)
    email = "ana.lima@example.com"
    searches: list[dict[str, list[Any]]] = [
        {"email": ["  ANA.LIMA@example.com "]},  # raw, normalised as a write would be
        *({id_type: [value]} for id_type, value in digests(email).items()),
        {"email": [digests(email)["email_sha256_lowercase"]]},  # by namespace
    ]
    for search in searches:
        [found] = cdp.search(search)
        assert found["ucid"] == person["ucid"], search
        assert [e["crm_person_id"] for e in found["ids"]["crm"]] == [person["id"]]
        assert found["ids"]["crm"][0]["_ts"].isdigit()
    # and the CRM answers the same link on reads
    got = client.get(f"{PEOPLE}/{person['id']}", headers=org.bearer).json()["person"]
    assert got["ucid"] == person["ucid"]
    listed = client.get(PEOPLE, headers=org.bearer).json()["collection"]
    assert [p["ucid"] for p in listed] == [person["ucid"]]


def test_a_person_joins_the_profile_a_cdp_write_made_and_the_phone_number_links_too(
    client: TestClient, org: OrgFixture
) -> None:
    cdp = Cdp(client, org)
    earlier = cdp.write({"email": "bo@example.com"}, {"profile": {"plan": "gold"}})
    person = upsert(
        client, org, {"firstName": "Bo", "emails": ["bo@example.com"], "phoneNumber": "+4930123456"}
    )
    assert person["ucid"] == earlier["ucid"]
    [found] = cdp.search({"cellphone": ["+49 30 123456"]})
    assert found["ucid"] == earlier["ucid"] and found["profile"]["plan"] == "gold"
    # a CDP write by the phone number lands on the same profile
    assert cdp.write({"cellphone": "+4930123456"})["ucid"] == earlier["ucid"]


def test_the_home_region_is_where_people_resolve(app: FastAPI, client: TestClient) -> None:
    from profilehub.orgs import create_org, get_org

    db = app.state.db
    db.write(lambda c: create_org(c, 77, "Home", ["EU", "US"], home_region="us"))
    assert db.write(lambda c: get_org(c, 77)).home_region == "US"
    org = make_org(db, org_id=78, regions=("UK", "EU"))  # default: the first region given
    with db.read() as conn:
        assert get_org(conn, 78).home_region == "UK"
    person = upsert(client, org, {"lastName": "Uk", "emails": ["uk@example.com"]})
    cdp = Cdp(client, org)
    assert cdp.search({"email": ["uk@example.com"]}, regions=["EU"]) == []
    [found] = cdp.search({"email": ["uk@example.com"]}, regions=["UK"])
    assert found["ucid"] == person["ucid"] and found["region"] == "UK"


def test_a_home_region_outside_the_regions_is_refused(app: FastAPI) -> None:
    from profilehub.errors import BadRequest
    from profilehub.orgs import create_org

    with pytest.raises(BadRequest) as refused:
        app.state.db.write(lambda c: create_org(c, 79, "X", ["EU"], home_region="US"))
    assert refused.value.field == "homeRegion"


def test_cdp_writes_cannot_name_a_crm_person(client: TestClient, org: OrgFixture) -> None:
    r = client.post(
        "/cdp/v1/users",
        json={"orgId": org.org_id, "region": "EU", "ids": {"crm_person_id": "x"}, "upsert": {}},
        headers=org.headers(),
    )
    assert_error(r, 400, "ids.crm_person_id")


def test_a_cdp_erasure_deletes_the_linked_people_and_says_how_many(
    client: TestClient, org: OrgFixture
) -> None:
    cdp = Cdp(client, org)
    ana = upsert(client, org, {"firstName": "Ana", "emails": ["ana@example.com"]})
    kept = upsert(client, org, {"firstName": "Kim", "emails": ["kim@example.com"]})
    result = cdp.delete({"email": ["ana@example.com"]})
    assert result["deletedProfiles"] == 1 and result["deletedPeople"] == 1
    assert result["ucids"] == [ana["ucid"]]
    assert client.get(f"{PEOPLE}/{ana['id']}", headers=org.bearer).status_code == 404
    assert client.get(f"{PEOPLE}/{kept['id']}", headers=org.bearer).status_code == 200
    # the email is suppressed (docs/privacy.md); lifted, it is free again for a new person, who
    # gets a new profile
    body = {"firstName": "Ana", "emails": ["ana@example.com"]}
    assert_error(
        client.put(f"{PEOPLE}?matchingAttribute=email", json=body, headers=org.bearer), 409, "emails"
    )
    lifted = client.post(
        "/cdp/v1/users/_unsuppress",
        json={"orgId": org.org_id, "region": "EU", "ids": {"email": ["ana@example.com"]}},
        headers=org.headers(),
    )
    assert lifted.json()["removedFingerprints"] == 5
    again = upsert(client, org, body)
    assert again["id"] != ana["id"] and again["ucid"] not in (None, ana["ucid"])
    # an erasure of a profile without people says 0
    cdp.write({"fpuid": "f-1"})
    assert cdp.delete({"fpuid": ["f-1"]})["deletedPeople"] == 0


def test_crm_delete_removes_the_person_and_its_link_but_keeps_the_profile(
    client: TestClient, org: OrgFixture
) -> None:
    cdp = Cdp(client, org)
    person = upsert(client, org, {"firstName": "Dee", "emails": ["dee@example.com"]})
    assert client.delete(f"{PEOPLE}/{person['id']}", headers=org.bearer).status_code == 200
    [found] = cdp.search({"email": ["dee@example.com"]})
    assert found["ucid"] == person["ucid"]
    assert "crm" not in found["ids"]
    assert cdp.search({"crm_person_id": [person["id"]]}) == []
    # the profile that lost its link is announced, as the search now answers it
    feed = client.get(
        "/cdp/v1/changes", params={"orgId": org.org_id, "limit": 1000}, headers=org.headers()
    ).json()["changes"]
    first, last = feed[0], feed[-1]
    assert last["type"] == "profile.updated" and last["data"]["profile"] == found, last
    assert first["data"]["profile"]["ucid"] == person["ucid"]
    assert found["updated_ts"] >= first["data"]["profile"]["updated_ts"] == first["ts"]
    assert last["ts"] == found["updated_ts"]


def test_a_patch_that_replaces_the_emails_moves_the_link_with_them(
    client: TestClient, org: OrgFixture
) -> None:
    cdp = Cdp(client, org)
    person = upsert(client, org, {"firstName": "Eve", "emails": ["old@example.com"]})
    r = client.patch(f"{PEOPLE}/{person['id']}", json={"emails": ["new@example.com"]}, headers=org.bearer)
    assert r.status_code == 200, r.text
    assert r.json()["person"]["ucid"] == person["ucid"]
    [found] = cdp.search({"email": ["new@example.com"]})
    assert found["ucid"] == person["ucid"]
    assert cdp.search({"email": ["old@example.com"]}) == []


def test_a_person_write_that_keeps_the_identifiers_leaves_the_profile_alone(
    client: TestClient, org: OrgFixture
) -> None:
    """The graph holds identifiers: an update of a person's other fields is the person's event
    only; the profile, its ids' ``_ts`` and its feed move when an email or the phone number does."""
    cdp = Cdp(client, org)
    body = {"firstName": "Flo", "emails": ["flo@example.com"], "phoneNumber": "+4930777000"}
    person = upsert(client, org, body)
    [before] = cdp.search({"email": ["flo@example.com"]})

    def feed() -> list[dict[str, Any]]:
        r = client.get("/cdp/v1/changes", params={"orgId": org.org_id, "limit": 1000}, headers=org.headers())
        return list(r.json()["changes"])

    announced = len(feed())
    for again in (
        {"firstName": "Flora", "emails": ["FLO@example.com"], "jobTitle": "chef"},  # by email
        {**body, "phoneNumber": "+49 30 777000"},  # the same number, written otherwise
    ):
        assert upsert(client, org, again)["ucid"] == person["ucid"]
    r = client.patch(f"{PEOPLE}/{person['id']}", json={"lastName": "Lima"}, headers=org.bearer)
    assert r.status_code == 200, r.text
    assert r.json()["person"]["ucid"] == person["ucid"] and r.json()["person"]["lastName"] == "Lima"
    assert cdp.search({"email": ["flo@example.com"]}) == [before]
    assert len(feed()) == announced
    # new emails are new identifiers: the profile takes them and is announced
    r = client.patch(f"{PEOPLE}/{person['id']}", json={"emails": ["flora@example.com"]}, headers=org.bearer)
    assert r.status_code == 200, r.text
    [after] = cdp.search({"email": ["flora@example.com"]})
    assert after["ucid"] == person["ucid"] and after["updated_ts"] >= before["updated_ts"]
    assert [e["type"] for e in feed()[announced:]] == ["profile.updated"]
    assert feed()[-1]["data"]["profile"] == after


def test_an_email_a_patch_dropped_stays_dropped_when_the_profile_is_unmerged(
    client: TestClient, org: OrgFixture
) -> None:
    """The PATCH's release is journaled with its write, so the unmerge's replay releases it too."""
    cdp = Cdp(client, org)
    eve = upsert(client, org, {"firstName": "Eve", "emails": ["old@example.com"]})
    other = cdp.write({"crm_id": "c-1", "AdId": "ad-1"})
    merged = cdp.write({"crm_id": "c-1", "email": "old@example.com"})
    assert merged["ucid"] == eve["ucid"] and merged["ids"]["linkedUcid"] == [other["ucid"]]
    r = client.patch(f"{PEOPLE}/{eve['id']}", json={"emails": ["new@example.com"]}, headers=org.bearer)
    assert r.status_code == 200, r.text
    assert cdp.search({"email": ["old@example.com"]}) == []
    body = {"orgId": org.org_id, "region": "EU", "ucid": eve["ucid"], "ids": {"crm_id": ["c-1"]}}
    r = client.post("/cdp/v1/users/_unmerge", json=body, headers=org.headers())
    assert r.status_code == 200, r.text
    assert sorted(p["ucid"] for p in r.json()) == sorted([eve["ucid"], other["ucid"]])
    assert cdp.search({"email": ["old@example.com"]}) == []
    [found] = cdp.search({"email": ["new@example.com"]})
    assert found["ucid"] == eve["ucid"] and [c["crm_person_id"] for c in found["ids"]["crm"]] == [eve["id"]]
    assert cdp.search({"crm_id": ["c-1"]})[0]["ucid"] == other["ucid"]


def test_two_people_whose_identifiers_meet_one_profile_stay_two(client: TestClient, org: OrgFixture) -> None:
    first = upsert(
        client, org, {"firstName": "One", "emails": ["one@example.com"], "phoneNumber": "+4930555000"}
    )
    r = client.put(
        f"{PEOPLE}?matchingAttribute=email",
        json={"firstName": "Two", "emails": ["two@example.com"], "phoneNumber": "+4930555000"},
        headers=org.bearer,
    )
    assert r.status_code == 201, r.text
    second = r.json()["person"]
    # the shared phone number belongs to the first person's profile, which holds one person
    assert second["ucid"] is None
    assert "not_linked" in r.headers["X-Profilehub-Notices"]
    [found] = Cdp(client, org).search({"cellphone": ["+4930555000"]})
    assert found["ucid"] == first["ucid"] and [c["crm_person_id"] for c in found["ids"]["crm"]] == [
        first["id"]
    ]


def test_links_stay_inside_their_org(app: FastAPI, client: TestClient, org: OrgFixture) -> None:
    other = make_org(app.state.db, org_id=4321)
    mine = upsert(client, org, {"firstName": "Same", "emails": ["same@example.com"]})
    theirs = upsert(client, other, {"firstName": "Same", "emails": ["same@example.com"]})
    assert mine["ucid"] != theirs["ucid"]
    [found] = Cdp(client, other).search({"email": ["same@example.com"]})
    assert [c["crm_person_id"] for c in found["ids"]["crm"]] == [theirs["id"]]
    assert Cdp(client, other).delete({"email": ["same@example.com"]})["deletedPeople"] == 1
    assert client.get(f"{PEOPLE}/{mine['id']}", headers=org.bearer).status_code == 200
    assert Cdp(client, org).search({"crm_person_id": [mine["id"]]})[0]["ucid"] == mine["ucid"]


def test_concurrent_crm_upserts_and_cdp_writes_of_one_person_make_one_person_and_one_profile(
    app: FastAPI, client: TestClient, org: OrgFixture
) -> None:
    def calls(ac: httpx.AsyncClient) -> list[Any]:
        out = []
        for n in range(32):
            out.append(
                ac.put(
                    f"{PEOPLE}?matchingAttribute=email",
                    json={"firstName": f"N{n}", "emails": ["same.person@example.com"]},
                    headers=org.bearer,
                )
            )
            out.append(
                ac.post(
                    "/cdp/v1/users",
                    json={
                        "orgId": org.org_id,
                        "region": "EU",
                        "ids": {"email": "same.person@example.com", "AdId": f"ad-{n}"},
                        "upsert": {"profile": {"n": n}},
                    },
                    headers=org.headers(),
                )
            )
        return out

    answers = run_concurrently(app, calls)
    assert all(a.status_code in (200, 201) for a in answers), [
        a.text for a in answers if a.status_code >= 300
    ]
    people = client.get(PEOPLE, headers=org.bearer).json()
    assert people["pagination"]["total"] == 1
    [person] = people["collection"]
    found = Cdp(client, org).search({"email": ["same.person@example.com"]})
    assert [p["ucid"] for p in found] == [person["ucid"]]
    assert [c["crm_person_id"] for c in found[0]["ids"]["crm"]] == [person["id"]]
    assert {a.json()["person"]["ucid"] for a in answers if "person" in a.json()} == {person["ucid"]}


def test_an_org_that_disables_the_link_keeps_its_people_out_of_the_graph(
    app: FastAPI, client: TestClient, org: OrgFixture
) -> None:
    from profilehub.identity.strategy import IdClass
    from profilehub.store.strategy_store import set_id_type

    app.state.db.write(lambda c: set_id_type(c, org.org_id, "crm_person_id", id_class=IdClass.DISABLED))
    person = upsert(client, org, {"firstName": "Off", "emails": ["off@example.com"]})
    assert person["ucid"] is None
    assert Cdp(client, org).search({"email": ["off@example.com"]}) == []


# Text that JSON escapes or that is not ASCII: the writer's bulk rows travel to PostgreSQL as JSON.
AWKWARD = 'Zoë "Q" \\ O\'Brien\ttab\nline \x01 😀 ∑'


def test_awkward_text_survives_the_bulk_writes_of_new_and_changed_rows(
    client: TestClient, org: OrgFixture
) -> None:
    created = upsert(client, org, {"firstName": AWKWARD, "emails": ["zoe@example.com"], "jobTitle": "a"})
    changed = upsert(client, org, {"lastName": AWKWARD, "emails": ["zoe@example.com"], "jobTitle": AWKWARD})
    assert changed["id"] == created["id"]
    got = client.get(f"{PEOPLE}/{created['id']}", headers=org.bearer).json()["person"]
    assert (got["firstName"], got["lastName"], got["jobTitle"]) == (AWKWARD, AWKWARD, AWKWARD)
    found = client.get(PEOPLE, params={"search": "o'brien"}, headers=org.bearer).json()["collection"]
    assert [p["id"] for p in found] == [created["id"]]
    cdp = Cdp(client, org)
    cdp.write({"email": "zoe@example.com"}, {"profile": {"nick": AWKWARD}})
    [profile] = cdp.search({"email": ["zoe@example.com"]})
    assert profile["profile"]["nick"] == AWKWARD
    assert profile["ucid"] == created["ucid"]
