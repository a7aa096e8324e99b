"""Suppression: ``_delete`` keeps keyed fingerprints of the erased ids, and a later write carrying
any form of one (raw, or any hash a raw email or phone number derives) drops it; a write left
with no usable id is a 409 that writes nothing. ``_unsuppress`` lifts it. See docs/privacy.md."""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from profilehub import bulk
from profilehub.bulk.people import PeopleBulkImporter
from profilehub.errors import Suppressed
from profilehub.identity.normalize import email_hashes, phone_hashes
from profilehub.ingest import checkpoint
from profilehub.ingest.cdp import cdp_sink, prepare_records
from profilehub.ingest.people import people_sink
from profilehub.ingest.reader import read_ndjson
from profilehub.ingest.runner import Importer, ImportSummary
from profilehub.profiles import ProfileService, ProfileWrite, WriteResult
from profilehub.store.database import Database
from profilehub.store.tables import suppressed_ids, suppression_keys
from tests.cdp_client import Cdp, id_values
from tests.conftest import OrgFixture, assert_error, make_org
from tests.test_import import write_ndjson

EMAIL = "Gone.Person.5512@Example.org"
PHONE = "+49 30 5512 0001"
E164 = "+493055120001"
PERSON = {"email": EMAIL, "cellphone": PHONE, "crm_id": "crm-gone-5512"}


def _write(client: TestClient, org: OrgFixture, ids: dict[str, Any], **more: Any) -> Any:
    body = {"orgId": org.org_id, "region": "EU", "ids": ids, "upsert": {"profile": {"x": 1}}, **more}
    return client.post("/cdp/v1/users", json=body, headers=org.headers())


def _delete(client: TestClient, org: OrgFixture, ids: dict[str, Any], **more: Any) -> dict[str, Any]:
    body = {"orgId": org.org_id, "region": "EU", "ids": ids, **more}
    r = client.post("/cdp/v1/users/_delete", json=body, headers=org.headers())
    assert r.status_code == 200, r.text
    return dict(r.json())


def _unsuppress(client: TestClient, org: OrgFixture, ids: dict[str, Any]) -> Any:
    body = {"orgId": org.org_id, "region": "EU", "ids": ids}
    return client.post("/cdp/v1/users/_unsuppress", json=body, headers=org.headers())


def _erase_person(client: TestClient, org: OrgFixture) -> dict[str, Any]:
    Cdp(client, org).write(PERSON, {"profile": {"first_name": "Gone"}})
    return _delete(client, org, {"email": [EMAIL]})


def _every_form() -> list[dict[str, str]]:
    """Each form a write can carry the erased email or phone number in, written as a client would
    (other case, spaces, another phone format)."""
    email = EMAIL.lower()
    forms: list[dict[str, str]] = [{"email": f"  {EMAIL.upper()} "}, {"cellphone": "+49 (30) 5512-0001"}]
    forms += [{t: f" {h.upper()} "} for t, h in email_hashes(email).items()]
    forms += [{t: h} for t, h in phone_hashes(E164).items()]
    return forms


def test_every_form_of_an_erased_email_or_phone_is_refused_and_writes_nothing(
    client: TestClient, org: OrgFixture
) -> None:
    erased = _erase_person(client, org)
    assert erased["deletedProfiles"] == 1
    assert erased["suppressedIds"] == 5 + 3 + 1  # the email's hashes, the phone's, the crm_id
    cdp = Cdp(client, org)
    for ids in [*_every_form(), {"crm_id": "crm-gone-5512"}]:
        r = _write(client, org, ids)
        body = assert_error(r, 409, "ids")
        assert "suppressed" in body["message"], ids
        # nothing written: no profile holds any form of the person
        assert cdp.search({"email": [EMAIL]}) == []
        assert cdp.search({next(iter(ids)): [next(iter(ids.values()))]}) == [], ids


def test_a_suppressed_id_is_dropped_and_the_rest_is_written(client: TestClient, org: OrgFixture) -> None:
    _erase_person(client, org)
    cdp = Cdp(client, org)
    profile = cdp.write({"email": EMAIL, "crm_id": "crm-new-1"}, {"profile": {"first_name": "New"}})
    assert id_values(profile, "crm_id") == ["crm-new-1"]
    assert not any(ns in profile["ids"] for ns in ("email", "cellphone"))
    [notice] = [n for n in cdp.last_notices if n["code"] == "id_suppressed"]
    assert notice["field"] == "ids.email"
    assert EMAIL.lower() not in json.dumps(cdp.last_notices).lower()  # never the value
    assert cdp.search({"email": [EMAIL]}) == []


def test_bulk_answers_409_at_the_index_of_a_record_left_without_ids(
    client: TestClient, org: OrgFixture
) -> None:
    _erase_person(client, org)
    records = [
        {"orgId": org.org_id, "region": "EU", "ids": ids, "upsert": {}}
        for ids in ({"email": EMAIL}, {"email": EMAIL, "AdId": "ad-7"}, {"AdId": "ad-8"})
    ]
    r = client.post("/cdp/v1/users/_bulk", json=records, headers=org.headers())
    assert r.status_code == 200, r.text
    first, second, third = r.json()
    assert first["status"] == 409 and "suppressed" in first["error"]["message"]
    # That record is dropped and the others are written: "nothing was written" said otherwise.
    message = first["error"]["message"]
    assert message.startswith("ids: this write is dropped: every usable id") and "nothing was" not in message
    assert second["status"] == 200 and [n["code"] for n in second["notices"]] == ["id_suppressed"]
    assert third["status"] == 200 and "notices" not in third
    assert Cdp(client, org).search({"email": [EMAIL]}) == []


def test_suppress_false_keeps_no_fingerprint(client: TestClient, org: OrgFixture, app: FastAPI) -> None:
    Cdp(client, org).write(PERSON, {})
    assert _delete(client, org, {"email": [EMAIL]}, suppress=False)["suppressedIds"] == 0
    with app.state.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(suppressed_ids)).scalar() == 0
    assert _write(client, org, {"email": EMAIL}).status_code == 200


def test_unsuppress_lifts_what_it_names_only(client: TestClient, org: OrgFixture) -> None:
    _erase_person(client, org)
    no_scope = client.post(
        "/cdp/v1/users/_unsuppress",
        json={"orgId": org.org_id, "region": "EU", "ids": {"email": [EMAIL]}},
        headers=org.headers("profile.read,profile.write"),
    )
    assert_error(no_scope, 403)
    r = _unsuppress(client, org, {"email": [EMAIL]})
    assert r.status_code == 200, r.text
    assert r.json() == {"orgId": org.org_id, "region": "EU", "removedFingerprints": 5}
    assert _unsuppress(client, org, {"email": [EMAIL]}).json()["removedFingerprints"] == 0
    assert (
        _write(
            client, org, {"email_md5_lowercase": email_hashes(EMAIL.lower())["email_md5_lowercase"]}
        ).status_code
        == 200
    )
    assert_error(_write(client, org, {"cellphone": PHONE}), 409, "ids")
    bad = _unsuppress(client, org, {"nope": ["x"]})
    assert_error(bad, 400, "ids.nope")


def test_explain_predicts_suppression(client: TestClient, org: OrgFixture) -> None:
    _erase_person(client, org)
    body = {"orgId": org.org_id, "region": "EU", "ids": {"email": EMAIL, "AdId": "ad-1"}, "upsert": {}}
    r = client.post("/cdp/v1/users/_explain", json=body, headers=org.headers())
    assert r.status_code == 200, r.text
    assert [n["code"] for n in r.json()["notices"]] == ["id_suppressed"]
    body["ids"] = {"email": EMAIL}
    only = client.post("/cdp/v1/users/_explain", json=body, headers=org.headers())
    # What the write would get, which is what happens to it (an explanation writes nothing anyway).
    message = assert_error(only, 409, "ids")["message"]
    assert message.startswith("ids: this write is dropped: every usable id") and "nothing was" not in message


def test_other_orgs_and_regions_are_unaffected(client: TestClient, org: OrgFixture, app: FastAPI) -> None:
    other = make_org(app.state.db, 5678)
    _erase_person(client, org)
    assert _write(client, other, {"email": EMAIL}).status_code == 200
    uk = _write(client, org, {"email": EMAIL}, region="UK")
    assert uk.status_code == 200 and uk.headers.get("X-Profilehub-Notices") is None
    assert_error(_write(client, org, {"email": EMAIL}), 409, "ids")


def test_an_org_older_than_suppression_gets_its_key_at_its_first_erasure(
    client: TestClient, org: OrgFixture, app: FastAPI
) -> None:
    app.state.db.write(lambda c: c.execute(suppression_keys.delete()))
    assert _erase_person(client, org)["suppressedIds"] == 9
    assert_error(_write(client, org, {"email": EMAIL}), 409, "ids")


def test_an_org_keeping_raw_ids_suppresses_the_raw_value_too(client: TestClient, app: FastAPI) -> None:
    org = make_org(app.state.db, 77, keep_raw_ids=True)
    assert _erase_person(client, org)["suppressedIds"] == 6 + 4 + 1
    assert_error(_write(client, org, {"email": EMAIL.lower()}), 409, "ids")
    assert _unsuppress(client, org, {"cellphone": [PHONE]}).json()["removedFingerprints"] == 4


def test_another_process_sees_the_suppression_at_its_next_write(
    client: TestClient, org: OrgFixture, database_url: str
) -> None:
    # A second server process: its own database engine and strategy cache, warmed before the
    # erasure; the database is the truth, so its next write drops the id.
    other_db = Database(database_url)
    try:
        other = ProfileService(other_db)
        warm = ProfileWrite(org.org_id, "EU", {"crm_id": "warm-1"}, {})
        assert isinstance(other.write_batch([warm], "test")[0], WriteResult)
        _erase_person(client, org)
        [result] = other.write_batch([ProfileWrite(org.org_id, "EU", {"email": EMAIL}, {})], "test")
        assert getattr(result, "status", None) == 409
    finally:
        other_db.close()


IMPORTED = [
    {"ids": {"email": EMAIL}, "upsert": {}},  # left without ids: rejected
    {"ids": {"email": EMAIL.upper(), "AdId": "ad-imp-1"}, "upsert": {}},  # written without the email
    {"ids": {"AdId": "ad-imp-2"}, "upsert": {}},  # nothing suppressed
    {"ids": {"cellphone_number_e164_sha1": phone_hashes(E164)["cellphone_number_e164_sha1"]}, "upsert": {}},
]


def _erased_in_core(db: Database, org_id: int = 1234) -> ProfileService:
    make_org(db, org_id)
    service = ProfileService(db)
    service.write_batch([ProfileWrite(org_id, "EU", PERSON, {})], "test")
    assert service.delete(org_id, "EU", {"email": [EMAIL]}, "test")["suppressedIds"] == 9
    return service


@pytest.mark.parametrize("how", ["online", "bulk"])
def test_imports_count_suppressed_records_and_reject_those_left_without_ids(
    db: Database, tmp_path: Path, how: str
) -> None:
    service = _erased_in_core(db)
    path = write_ndjson(tmp_path / "old.ndjson", IMPORTED)
    read = lambda offset, line: read_ndjson(path, offset, line)  # noqa: E731
    sink = cdp_sink(service, 1234, "EU", "test-import")
    if how == "bulk":
        summary: ImportSummary = bulk.run_bulk_import(path, read, sink, workers=0)
    else:
        summary = Importer(path, read, sink, batch_size=2, workers=0).run()
    assert (summary.read, summary.created, summary.rejected, summary.suppressed) == (4, 2, 2, 3)
    assert summary.reject_reasons == {"id_suppressed": 2}
    rejects = [json.loads(line) for line in checkpoint.rejects_path(path).read_text().splitlines()]
    assert [(r["line"], r["error"]["status"]) for r in rejects] == [(1, 409), (4, 409)]
    assert "suppressed" in rejects[0]["error"]["message"]
    assert service.search(1234, None, {"email": [EMAIL]}) == []
    [written] = service.search(1234, None, {"AdId": ["ad-imp-1"]})
    assert "email" not in written["ids"]


PEOPLE = "/v2/crm/people"


def test_crm_people_upserts_drop_an_erased_persons_emails_and_phone(
    client: TestClient, org: OrgFixture
) -> None:
    _erase_person(client, org)
    only = client.put(
        f"{PEOPLE}?matchingAttribute=email", json={"firstName": "G", "emails": [EMAIL]}, headers=org.bearer
    )
    # The same words for one person of a _bulk or an import, whose others are written.
    message = assert_error(only, 409, "emails")["message"]
    assert message.startswith("emails: this person is dropped: every email") and "nothing was" not in message
    phone_only = client.post(PEOPLE, json={"firstName": "G", "phoneNumber": PHONE}, headers=org.bearer)
    assert_error(phone_only, 409, "phoneNumber")
    assert client.get(PEOPLE, headers=org.bearer).json()["collection"] == []  # nothing written
    body = {"firstName": "G", "emails": [EMAIL.upper(), "other.5512@example.org"], "phoneNumber": PHONE}
    r = client.post(PEOPLE, json=body, headers=org.bearer)
    assert r.status_code == 201, r.text
    person = r.json()["person"]
    assert person["emails"] == ["other.5512@example.org"] and person["phoneNumber"] is None
    notices = json.loads(r.headers["X-Profilehub-Notices"])
    assert [(n["code"], n["field"]) for n in notices] == [
        ("id_suppressed", "emails.0"),
        ("id_suppressed", "phoneNumber"),
    ]
    assert EMAIL.lower() not in json.dumps(notices).lower()
    # PATCH: an email list of the erased person only is refused, the person stays as it was
    patched = client.patch(f"{PEOPLE}/{person['id']}", json={"emails": [EMAIL]}, headers=org.bearer)
    assert_error(patched, 409, "emails")
    got = client.get(f"{PEOPLE}/{person['id']}", headers=org.bearer).json()["person"]
    assert got["emails"] == ["other.5512@example.org"]
    assert Cdp(client, org).search({"email": [EMAIL]}) == []


def test_a_patch_setting_an_erased_phone_number_on_a_person_keeps_the_rest_of_the_patch(
    client: TestClient, org: OrgFixture
) -> None:
    # As a CDP write naming an existing profile by ucid: the person is there, with its own email,
    # so a PATCH naming it is written without the suppressed number, not refused whole.
    _erase_person(client, org)
    r = client.post(PEOPLE, json={"firstName": "G", "emails": ["kept.5512@example.org"]}, headers=org.bearer)
    assert r.status_code == 201, r.text
    person_id = r.json()["person"]["id"]
    patched = client.patch(
        f"{PEOPLE}/{person_id}", json={"jobTitle": "Buyer", "phoneNumber": PHONE}, headers=org.bearer
    )
    assert patched.status_code == 200, patched.text
    got = patched.json()["person"]
    assert (got["jobTitle"], got["phoneNumber"], got["emails"]) == ("Buyer", None, ["kept.5512@example.org"])
    notices = json.loads(patched.headers["X-Profilehub-Notices"])
    assert [(n["code"], n["field"]) for n in notices] == [("id_suppressed", "phoneNumber")]
    assert Cdp(client, org).search({"cellphone": [PHONE]}) == []


@pytest.mark.parametrize("how", ["online", "bulk"])
def test_import_people_counts_and_rejects_suppressed_people(db: Database, tmp_path: Path, how: str) -> None:
    _erased_in_core(db)
    path = write_ndjson(
        tmp_path / "people.ndjson",
        [{"firstName": "A", "emails": [EMAIL]}, {"firstName": "B", "emails": [EMAIL, "b.5512@example.org"]}],
    )
    read = lambda offset, line: read_ndjson(path, offset, line)  # noqa: E731
    summary: ImportSummary
    if how == "bulk":
        summary = PeopleBulkImporter(path, read, db, 1234, "email", "test-import", workers=0).run()
    else:
        summary = Importer(path, read, people_sink(db, 1234, "email", "test-import"), workers=0).run()
    assert (summary.read, summary.created, summary.rejected, summary.suppressed) == (2, 1, 1, 2)
    assert summary.reject_reasons == {"id_suppressed": 1}
    [reject] = [json.loads(line) for line in checkpoint.rejects_path(path).read_text().splitlines()]
    assert reject["line"] == 1 and reject["error"]["status"] == 409


def test_records_prepared_in_a_worker_process_drop_suppressed_ids(db: Database) -> None:
    # The importer's worker processes receive the strategy pickled: its fingerprints and key go
    # with it (without starting processes here: what they receive is what pickle gives them).
    service = _erased_in_core(db)
    with db.read() as conn:
        strategy = pickle.loads(pickle.dumps(service.strategies.get(conn, 1234)))
    prepared = pickle.loads(pickle.dumps(prepare_records(strategy, 1234, "EU", "test", IMPORTED)))
    first, second, third, fourth = prepared.items
    assert isinstance(first, Suppressed) and isinstance(fourth, Suppressed)
    assert [n.code for n in second.notices] == ["id_suppressed"]  # type: ignore[union-attr]
    assert [i.id_type for i in second.ids] == ["AdId"]  # type: ignore[union-attr]
    assert third.notices == []  # type: ignore[union-attr]


def test_fingerprints_stored_by_the_documented_rule_keep_suppressing(
    client: TestClient, org: OrgFixture, app: FastAPI
) -> None:
    # docs/privacy.md: HMAC-SHA256 of the idType, U+001F and the normalised value, under the org's
    # key. Fingerprints already stored (by an earlier version, or a restore) must go on matching
    # whatever computes them now, or an erased person comes back with the next import.
    _erase_person(client, org)  # the org's key exists from here on
    db: Database = app.state.db
    with db.read() as conn:
        key = bytes.fromhex(conn.execute(sa.select(suppression_keys.c.key)).scalar_one())
    crm_id = "crm-stored-by-rule"
    stored = hmac.new(key, f"crm_id\x1f{crm_id}".encode(), hashlib.sha256).hexdigest()
    db.write(
        lambda c: c.execute(
            suppressed_ids.insert().values(org_id=org.org_id, region="EU", fingerprint=stored, created_ts=1)
        )
    )
    db.write(lambda c: c.execute(sa.text("UPDATE orgs SET strategy_version = strategy_version + 1")))
    assert_error(_write(client, org, {"crm_id": f" {crm_id} "}), 409, "ids")
    assert _unsuppress(client, org, {"crm_id": [crm_id]}).json()["removedFingerprints"] == 1


def test_an_unmerge_does_not_attach_an_erased_persons_id_that_one_of_its_writes_carried(
    client: TestClient, org: OrgFixture
) -> None:
    # A write to another person carried the erased person's id while that person held it (so it
    # was not attached). Rebuilding that other person later must not give it the erased id now
    # that no one holds it: the id is suppressed, and the replay is a write path like any other.
    cdp = Cdp(client, org)
    gone = cdp.write(PERSON, {"profile": {"first_name": "Gone"}})
    other = cdp.write({"email": "other.5512@example.org"})
    named = cdp.write({"email": "other.5512@example.org", "crm_id": PERSON["crm_id"]}, ucid=other["ucid"])
    assert named["ucid"] == other["ucid"] and "crm" not in named["ids"]
    device = cdp.write({"AdId": "ad-5512"})
    cdp.write({"email": "other.5512@example.org", "AdId": "ad-5512"})
    _delete(client, org, {"ucid": [gone["ucid"]]})
    r = client.post(
        "/cdp/v1/users/_unmerge",
        json={"orgId": org.org_id, "region": "EU", "ucid": device["ucid"], "ids": {"AdId": ["ad-5512"]}},
        headers=org.headers(),
    )
    assert r.status_code == 200, r.text
    assert [p["ids"].get("crm") for p in r.json()] == [None, None]
    assert cdp.search({"crm_id": [PERSON["crm_id"]]}) == []
