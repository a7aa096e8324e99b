"""SPEC "Resolution of one write", rule by rule, through the HTTP API on both databases."""

from __future__ import annotations

import hashlib

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from profilehub.identity.strategy import IdClass
from profilehub.store.strategy_store import set_id_type
from tests.cdp_client import Cdp, id_values
from tests.conftest import OrgFixture, make_org


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def cdp(client: TestClient, org: OrgFixture) -> Cdp:
    return Cdp(client, org)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"email": "jane@acme.com"}, {"email": "jane@acme.com"}),
        ({"email": "jane@acme.com"}, {"email": "  JANE@Acme.COM "}),
        ({"email": "jane@acme.com"}, {"email_sha256_lowercase": sha256("jane@acme.com")}),
        ({"email": "jane@acme.com"}, {"email_sha256_lowercase": sha256("jane@acme.com").upper()}),
        ({"email": "jane@acme.com"}, {"email_md5_lowercase": hashlib.md5(b"jane@acme.com").hexdigest()}),
        ({"email": "jane@acme.com"}, {"email_sha256_uppercase": sha256("JANE@ACME.COM")}),
        ({"cellphone": "+49 30 1234 5678"}, {"cellphone": "+493012345678"}),
        ({"cellphone": "+493012345678"}, {"cellphone_number_e164_sha256": sha256("+493012345678")}),
        ({"crm_id": "C-1"}, {"crm_id": " C-1 "}),
        ({"AdId": "6d92078a-8246-4ba4-ae5b-76104861e7dc"}, {"AdId": "6d92078a-8246-4ba4-ae5b-76104861e7dc"}),
    ],
    ids=[
        "same",
        "case-space",
        "raw-vs-sha256",
        "upper-hex",
        "md5",
        "sha256-upper",
        "phone-format",
        "phone-hash",
        "trim",
        "adid",
    ],
)
def test_the_same_identity_resolves_to_one_profile(
    cdp: Cdp, first: dict[str, str], second: dict[str, str]
) -> None:
    a = cdp.write(first, {"profile": {"a": 1}})
    b = cdp.write(second, {"profile": {"b": 2}})
    assert a["ucid"] == b["ucid"]
    assert b["profile"]["a"] == 1 and b["profile"]["b"] == 2


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"email": "jane@acme.com"}, {"email": "john@acme.com"}),
        ({"crm_id": "C-1"}, {"crm_id": "c-1"}),
        ({"cellphone": "+493012345678"}, {"cellphone": "+493012345679"}),
    ],
)
def test_different_identities_stay_apart(cdp: Cdp, first: dict[str, str], second: dict[str, str]) -> None:
    assert cdp.write(first)["ucid"] != cdp.write(second)["ucid"]


def test_raw_email_is_hashed_into_derived_types_and_dropped(cdp: Cdp) -> None:
    p = cdp.write({"email": " Jane@Acme.com"})
    assert id_values(p, "email_sha256_lowercase") == [sha256("jane@acme.com")]
    assert id_values(p, "email_sha256_uppercase") == [sha256("JANE@ACME.COM")]
    assert id_values(p, "email_md5_lowercase") == [hashlib.md5(b"jane@acme.com").hexdigest()]
    assert id_values(p, "email_sha1_lowercase") == [hashlib.sha1(b"jane@acme.com").hexdigest()]
    assert id_values(p, "email") == []
    assert "jane@acme.com" not in str(p).lower()


def test_raw_values_kept_when_org_opts_in(app: FastAPI, client: TestClient) -> None:
    org = make_org(app.state.db, org_id=77, keep_raw_ids=True)
    p = Cdp(client, org).write({"email": "Jane@Acme.com", "cellphone": "+44 20 7946 0018"})
    assert id_values(p, "email") == ["jane@acme.com"]
    assert id_values(p, "cellphone") == ["+442079460018"]
    assert id_values(p, "cellphone_number_e164_sha256") == [sha256("+442079460018")]


@pytest.mark.parametrize(
    "blocked",
    [
        "",
        "null",
        "undefined",
        "0",
        "-1",
        "00000000-0000-0000-0000-000000000000",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        "d41d8cd98f00b204e9800998ecf8427e",
        "D41D8CD98F00B204E9800998ECF8427E",
    ],
)
def test_blocked_values_never_match(cdp: Cdp, blocked: str) -> None:
    id_type = (
        "email_md5_lowercase"
        if len(blocked) == 32
        else ("email_sha256_lowercase" if len(blocked) == 64 else "AdId")
    )
    a = cdp.write({"crm_id": "A", id_type: blocked})
    b = cdp.write({"crm_id": "B", id_type: blocked})
    assert a["ucid"] != b["ucid"]
    assert id_values(a, id_type) == []
    assert "blocked" in cdp.notice_codes()


def test_a_write_with_only_blocked_ids_is_refused(client: TestClient, org: OrgFixture) -> None:
    r = client.post(
        "/cdp/v1/users",
        json={"orgId": 1234, "region": "EU", "ids": {"AdId": "0"}, "upsert": {}},
        headers=org.headers(),
    )
    assert r.status_code == 400 and "ids" in r.json()["message"]


def test_org_blocks_a_value_of_its_own(app: FastAPI, cdp: Cdp) -> None:
    from profilehub.store.strategy_store import block_value

    app.state.db.write(lambda c: block_value(c, 1234, "Test@Test.com", "*"))
    a = cdp.write({"crm_id": "A", "email_sha256_lowercase": "test@test.com"})
    b = cdp.write({"crm_id": "B", "email_sha256_lowercase": "TEST@test.com"})
    assert a["ucid"] != b["ucid"]


def test_matching_several_profiles_merges_into_the_first_created(cdp: Cdp) -> None:
    first = cdp.write({"email": "jane@acme.com"}, {"profile": {"name": "Jane"}})
    second = cdp.write({"AdId": "ad-1"}, {"profile": {"city": "Berlin"}, "consent": {"gdpr": "yes"}})
    third = cdp.write({"crm_id": "C-9"})
    merged = cdp.write({"email": "jane@acme.com", "AdId": "ad-1", "crm_id": "C-9"})
    assert merged["ucid"] == first["ucid"]
    assert merged["created_ts"] == first["created_ts"]
    assert merged["ids"]["linkedUcid"] == [second["ucid"], third["ucid"]]
    assert merged["profile"]["name"] == "Jane" and merged["profile"]["city"] == "Berlin"
    assert merged["consent"]["gdpr"] == "yes"
    assert id_values(merged, "AdId") == ["ad-1"] and id_values(merged, "crm_id") == ["C-9"]
    # Merged-away ucids keep resolving to the master, for search and for writes.
    [found] = cdp.search({"ucid": [second["ucid"]]})
    assert found["ucid"] == first["ucid"]
    again = cdp.write(ucid=third["ucid"], upsert={"profile": {"vip": True}})
    assert again["ucid"] == first["ucid"] and again["profile"]["vip"] is True
    # Each id is owned once: searching any of them gives the one master.
    for key, value in (("AdId", "ad-1"), ("crm_id", "C-9"), ("email", "jane@acme.com")):
        assert [p["ucid"] for p in cdp.search({key: [value]})] == [first["ucid"]]


def test_a_merge_over_a_primary_limit_is_not_made(cdp: Cdp) -> None:
    jane = cdp.write({"email": "jane@acme.com", "crm_id": "C-1"})
    john = cdp.write({"email": "john@acme.com"})
    result = cdp.write({"crm_id": "C-1", "email": "john@acme.com"}, {"profile": {"x": 1}})
    assert result["ucid"] == jane["ucid"]
    assert "merge_refused" in cdp.notice_codes()
    assert result["ids"]["linkedUcid"] == []
    assert id_values(result, "email_sha256_lowercase") == [sha256("jane@acme.com")]
    [still_john] = cdp.search({"email": ["john@acme.com"]})
    assert still_john["ucid"] == john["ucid"] and still_john["profile"] == {}


def test_a_second_primary_value_is_not_attached(cdp: Cdp) -> None:
    p = cdp.write({"crm_id": "C-1"})
    again = cdp.write({"email": "new@acme.com"}, ucid=p["ucid"])
    assert again["ucid"] == p["ucid"]
    other = cdp.write({"crm_id": "C-2"}, ucid=p["ucid"])
    assert other["ucid"] == p["ucid"]
    assert id_values(other, "crm_id") == ["C-1"]
    assert "id_limit" in cdp.notice_codes()
    assert cdp.search({"crm_id": ["C-2"]}) == []


def test_secondary_ids_over_the_limit_evict_the_oldest(cdp: Cdp) -> None:
    for n in range(7):
        p = cdp.write({"crm_id": "C-1", "AdId": f"ad-{n}"})
    assert sorted(id_values(p, "AdId")) == [f"ad-{n}" for n in range(2, 7)]
    assert "id_evicted" in cdp.notice_codes()
    assert cdp.search({"AdId": ["ad-0"]}) == []
    # The evicted value is free again: a new write with it makes a new profile.
    assert cdp.write({"AdId": "ad-0"})["ucid"] != p["ucid"]


def test_an_id_sent_again_is_stored_with_its_new_time_and_stays_from_eviction(cdp: Cdp) -> None:
    import time

    first = cdp.write({"crm_id": "C-1", "AdId": "ad-kept"})
    for n in range(4):
        cdp.write({"crm_id": "C-1", "AdId": f"ad-{n}"})
    time.sleep(0.005)
    cdp.write({"crm_id": "C-1", "AdId": "ad-kept"})  # seen again: now the newest AdId
    [stored] = cdp.search({"crm_id": ["C-1"]})  # read back from the database
    stamps = {entry["AdId"]: int(entry["_ts"]) for entry in stored["ids"]["maid"]}
    assert stamps["ad-kept"] > int(first["ids"]["maid"][0]["_ts"])
    assert stamps["ad-kept"] == max(stamps.values())
    p = cdp.write({"crm_id": "C-1", "AdId": "ad-new"})  # over the limit of 5: the oldest goes
    assert sorted(id_values(p, "AdId")) == ["ad-1", "ad-2", "ad-3", "ad-kept", "ad-new"]


def test_org_can_change_class_priority_and_limit(app: FastAPI, cdp: Cdp) -> None:
    app.state.db.write(lambda c: set_id_type(c, 1234, "crm_id", max_per_profile=2))
    p = cdp.write({"crm_id": "C-1"})
    p = cdp.write({"crm_id": "C-2"}, ucid=p["ucid"])
    assert sorted(id_values(p, "crm_id")) == ["C-1", "C-2"]
    app.state.db.write(lambda c: set_id_type(c, 1234, "AdId", id_class=IdClass.DISABLED))
    q = cdp.write({"crm_id": "C-1", "AdId": "ad-1"})
    assert id_values(q, "AdId") == [] and "disabled" in cdp.notice_codes()


def test_org_can_add_an_id_type(app: FastAPI, client: TestClient, cdp: Cdp, org: OrgFixture) -> None:
    r = client.post(
        "/cdp/v1/users",
        headers=org.headers(),
        json={"orgId": 1234, "region": "EU", "upsert": {}, "ids": {"icoms_account_uid": "41063074106"}},
    )
    assert r.status_code == 400 and "icoms_account_uid" in r.json()["message"]
    assert "email_sha256_lowercase" in r.json()["message"]  # the known idTypes are listed
    app.state.db.write(lambda c: set_id_type(c, 1234, "icoms_account_uid", priority=7))
    p = cdp.write({"icoms_account_uid": "41063074106"})
    assert p["ids"]["icoms_account_uid"][0]["icoms_account_uid"] == "41063074106"


def test_null_removes_an_attribute_and_last_write_wins(cdp: Cdp) -> None:
    cdp.write({"crm_id": "C-1"}, {"profile": {"a": 1, "b": 2}, "mkt_preferences": {"sms": "yes"}})
    p = cdp.write({"crm_id": "C-1"}, {"profile": {"a": None, "b": 3}})
    assert "a" not in p["profile"] and p["profile"]["b"] == 3
    assert p["mkt_preferences"]["sms"] == "yes"
    p = cdp.write({"crm_id": "C-1"}, {"mkt_preferences": None})
    assert set(p["mkt_preferences"]) == {"_ts"}


def test_timestamps_are_epoch_ms(cdp: Cdp) -> None:
    import time

    before = int(time.time() * 1000)
    p = cdp.write({"crm_id": "C-1"}, {"consent": {"gdpr": "yes"}})
    after = int(time.time() * 1000)
    assert before <= p["created_ts"] <= p["updated_ts"] <= after
    assert before <= int(p["consent"]["_ts"]) <= after
    assert before <= int(p["ids"]["crm"][0]["_ts"]) <= after


def test_regions_never_share_identities(cdp: Cdp) -> None:
    eu = cdp.write({"email": "jane@acme.com"}, region="EU")
    uk = cdp.write({"email": "jane@acme.com"}, region="UK")
    assert eu["ucid"] != uk["ucid"] and uk["region"] == "UK"
    assert [p["ucid"] for p in cdp.search({"email": ["jane@acme.com"]}, regions=["UK"])] == [uk["ucid"]]
    assert len(cdp.search({"email": ["jane@acme.com"]})) == 2


def test_unknown_ucid_alone_is_404(client: TestClient, org: OrgFixture) -> None:
    r = client.post(
        "/cdp/v1/users",
        headers=org.headers(),
        json={
            "orgId": 1234,
            "region": "EU",
            "ucid": "d7a6bc75-2c87-4650-91dc-c212771866c9",
            "upsert": {"profile": {"a": 1}},
        },
    )
    assert r.status_code == 404 and r.json()["message"].startswith("ucid")


def test_search_by_namespace_and_delete_erases_everything(cdp: Cdp) -> None:
    a = cdp.write({"email": "jane@acme.com", "AdId": "ad-1"})
    b = cdp.write({"crm_id": "C-1"})
    cdp.write({"crm_id": "C-1", "AdId": "ad-1"})  # merges b into a
    assert [p["ucid"] for p in cdp.search({"maid": ["ad-1"]})] == [a["ucid"]]
    result = cdp.delete({"email": ["jane@acme.com", "nobody@acme.com"]})
    assert result.pop("receiptId")
    assert result.pop("suppressedIds") > 0
    assert result == {
        "ucids": [a["ucid"]],
        "deletedProfiles": 1,
        "profilesNotFound": ["nobody@acme.com"],
        "deletedPeople": 0,
    }
    assert cdp.search({"ucid": [a["ucid"], b["ucid"]], "crm_id": ["C-1"], "AdId": ["ad-1"]}) == []
    # The erased person's ids are suppressed: a write carrying only them writes nothing (409)...
    refused = cdp.client.post(
        "/cdp/v1/users",
        json={"orgId": cdp.org.org_id, "region": "EU", "ids": {"crm_id": "C-1"}, "upsert": {}},
        headers=cdp.org.headers(),
    )
    assert refused.status_code == 409, refused.text
    assert cdp.search({"crm_id": ["C-1"]}) == []
    # ...until the suppression is lifted: then a new write creates a new person.
    lifted = cdp.client.post(
        "/cdp/v1/users/_unsuppress",
        json={"orgId": cdp.org.org_id, "region": "EU", "ids": {"crm_id": ["C-1"]}},
        headers=cdp.org.headers(),
    )
    assert lifted.status_code == 200, lifted.text
    assert cdp.write({"crm_id": "C-1"})["ucid"] not in (a["ucid"], b["ucid"])


def test_delete_by_ucid(cdp: Cdp) -> None:
    a = cdp.write({"crm_id": "C-1"})
    assert cdp.delete({"ucid": [a["ucid"]]})["deletedProfiles"] == 1
    again = cdp.delete({"ucid": [a["ucid"]]})
    assert again.pop("receiptId")
    assert again == {
        "ucids": [],
        "deletedProfiles": 0,
        "profilesNotFound": [a["ucid"]],
        "deletedPeople": 0,
        "suppressedIds": 0,
    }


def test_history_records_what_was_refused(app: FastAPI, cdp: Cdp) -> None:
    from profilehub.store.changes import history

    p = cdp.write({"crm_id": "C-1", "AdId": "0"}, {"profile": {"x": 1}})
    with app.state.db.read() as conn:
        [change] = history(conn, 1234, entity="profile", entity_id=p["ucid"])
    assert change["action"] == "create" and change["actor"].startswith("apikey:phk_1234_")
    assert change["detail"]["attributes"] == {"profile": ["x"]}
    assert [n["code"] for n in change["detail"]["notices"]] == ["blocked"]


def test_searching_a_namespace_with_a_digest_finds_the_hashed_ids(cdp: Cdp) -> None:
    p = cdp.write({"email": "jane@acme.com"})
    assert [f["ucid"] for f in cdp.search({"email": [sha256("jane@acme.com")]})] == [p["ucid"]]
    assert [f["ucid"] for f in cdp.search({"email": ["JANE@acme.com"]})] == [p["ucid"]]
    assert cdp.search({"email": ["someone@else.com"]}) == []


def test_an_id_type_named_like_a_namespace_does_not_hide_the_namespace(app: FastAPI, cdp: Cdp) -> None:
    p = cdp.write({"AdId": "ad-1"})
    app.state.db.write(lambda c: set_id_type(c, 1234, "maid", id_class=IdClass.SECONDARY, max_per_profile=5))
    q = cdp.write({"maid": "m-1"})
    assert [f["ucid"] for f in cdp.search({"maid": ["ad-1"]})] == [p["ucid"]]
    assert [f["ucid"] for f in cdp.search({"maid": ["m-1"]})] == [q["ucid"]]


def test_a_named_ucid_that_cannot_merge_still_gets_the_write(cdp: Cdp) -> None:
    older = cdp.write({"email": "e1@acme.com"})
    named = cdp.write({"email": "e2@acme.com"})
    result = cdp.write({"email": "e1@acme.com"}, {"profile": {"x": 1}}, ucid=named["ucid"])
    assert result["ucid"] == named["ucid"] and result["profile"]["x"] == 1
    assert {"merge_refused", "id_owned_elsewhere"} <= set(cdp.notice_codes())
    [untouched] = cdp.search({"email": ["e1@acme.com"]})
    assert untouched["ucid"] == older["ucid"] and "x" not in untouched["profile"]
