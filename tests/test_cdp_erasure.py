"""An erasure leaves no personal data behind, in any table.

After ``POST /cdp/v1/users/_delete`` every table of the database is read row by row (the tables are
taken from the live schema, so a table added later is read too, and must be classified below) and
none may hold any value, hash or attribute value of the erased person, nor of the profiles merged
into it, nor of the CRM person linked to it. The erased ucids may remain only in the change log,
the erasure's own events and its receipt, which record the erasure by ucid (docs/privacy.md).
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from profilehub.store.tables import metadata
from tests.cdp_client import Cdp
from tests.conftest import assert_error, make_org

# Every table, and what it may keep of an erased person. A new table fails the test until it is
# classified here (and, if it holds personal data, erased with the person).
TABLES = {
    # a person's data: nothing of the erased person may remain
    "profiles": "person",
    "profile_ids": "person",
    "crm_records": "person",
    "crm_values": "person",
    "crm_unique_values": "person",
    "crm_person_emails": "person",
    # the journal of the person's writes (hashed ids, written values): erased with the person
    "profile_writes": "person",
    # which journal rows carry an id their profile did not take (hashed ids): erased with the
    # journal row's person, and with the person holding the id
    "journal_unattached": "person",
    # the consent ledger (values written, actor, time): erased with the person
    "consent_ledger": "person",
    # saved answers of keyed writes: deleted with the person they mention
    "idempotency_keys": "person",
    # events waiting for a webhook endpoint: erased with their profile, as the outbox's are
    "webhook_pending": "person",
    # the change log: the erased ucids may remain (the erasure is recorded by ucid), no values
    "changes": "log",
    # the change events: an erasure deletes the erased profiles' events, its own names ucids only
    "events": "log",
    # signed erasure receipts: the erased ucids and counts, no values (docs/privacy.md)
    "erasure_receipts": "log",
    # an org's configuration: nothing of any person
    "orgs": "config",
    "org_regions": "config",
    "credentials": "config",
    "id_types": "config",
    "blocked_values": "config",
    "crm_objects": "config",
    "crm_attributes": "config",
    "rate_limits": "config",
    "journal_retention": "config",
    # console sign-ins: hashes of the session and of the credential, nothing of any person
    "console_sessions": "config",
    "webhook_endpoints": "config",
    "stream_cursors": "config",
    # import progress for /metrics: a file's name and counts, nothing of any person
    "import_runs": "config",
    # suppression: each org's secret key, and keyed fingerprints of erased ids (HMAC-SHA256, so
    # no value or plain hash of the person; docs/privacy.md)
    "suppression_keys": "config",
    "suppressed_ids": "config",
    # each org's receipt signing key
    "receipt_keys": "config",
    # an org's consent denial values
    "consent_settings": "config",
}
SCHEMA_BOOKKEEPING = {"alembic_version", "event_sequence"}

ERASED = {
    "email": " Erase.Me.9931@Example.org ",
    "cellphone": "+49 30 12345 9931",
    "crm_id": "crm-erase-9931",
    "AdId": "4c1b8e0a-9931-4f6e-9d7e-0e5f1a2b9931",
    "ga_clientid": "GA1.2.9931.1700009931",
}
ERASED_ATTRIBUTES = {
    "profile": {"first_name": "Zelda9931", "city": "Erasetown9931"},
    "consent": {"note": "consent-text-9931"},
    "mkt_preferences": {"channel": "pigeon-9931"},
}
KEPT = {"email": "kept.4417@example.org", "crm_id": "crm-kept-4417"}


def _all_rows(app: FastAPI) -> dict[str, str]:
    """Every table's rows as lower-case text, one entry per table, taken from the live schema."""
    db = app.state.db
    with db.read() as conn:
        names = set(sa.inspect(conn).get_table_names()) - SCHEMA_BOOKKEEPING
        assert names == set(metadata.tables) - SCHEMA_BOOKKEEPING, "the live schema and tables.py disagree"
        assert names == set(TABLES), f"classify every table in TABLES: {sorted(names ^ set(TABLES))}"
        dump: dict[str, str] = {}
        for name in sorted(names):
            table = sa.Table(name, sa.MetaData(), autoload_with=conn)
            rows = conn.execute(sa.select(table)).all()
            dump[name] = "\n".join(" | ".join(str(v) for v in row) for row in rows).lower()
    return dump


def _stored_traces(app: FastAPI, org_id: int, ucids: list[str]) -> set[str]:
    """What the store holds of these profiles: every id value (raw if kept, and derived hashes),
    read from the store itself, and every attribute value."""
    traces = {str(v).lower() for attrs in ERASED_ATTRIBUTES.values() for v in attrs.values()}
    with app.state.db.read() as conn:
        ids = conn.execute(
            sa.text("SELECT value FROM profile_ids WHERE org_id = :o AND ucid IN :u").bindparams(
                sa.bindparam("u", expanding=True)
            ),
            {"o": org_id, "u": ucids},
        ).scalars()
        traces |= {v.lower() for v in ids}
    return traces


@pytest.mark.parametrize("keep_raw_ids", [False, True], ids=["hashed-only", "raw-kept"])
def test_an_erasure_leaves_no_personal_data_in_any_table(
    app: FastAPI, client: TestClient, keep_raw_ids: bool
) -> None:
    org = make_org(app.state.db, keep_raw_ids=keep_raw_ids)
    cdp = Cdp(client, org)
    # Three profiles of one person, merged in a chain: c into b, then b into a.
    a = cdp.write(
        {"email": ERASED["email"], "AdId": ERASED["AdId"]}, {"profile": ERASED_ATTRIBUTES["profile"]}
    )
    # Written with an Idempotency-Key: its saved answer holds the profile as it then was.
    keyed = client.post(
        "/cdp/v1/users",
        json={
            "orgId": org.org_id,
            "region": "EU",
            "ids": {"ga_clientid": ERASED["ga_clientid"]},
            "upsert": {"consent": ERASED_ATTRIBUTES["consent"]},
        },
        headers={**org.headers(), "Idempotency-Key": "erase-9931"},
    )
    assert keyed.status_code == 200, keyed.text
    [c] = keyed.json()
    b = cdp.write(
        {"crm_id": ERASED["crm_id"], "cellphone": ERASED["cellphone"]},
        {"mkt_preferences": ERASED_ATTRIBUTES["mkt_preferences"]},
    )
    assert cdp.write({"crm_id": ERASED["crm_id"], "ga_clientid": ERASED["ga_clientid"]})["ucid"] == c["ucid"]
    merged = cdp.write({"email": ERASED["email"], "crm_id": ERASED["crm_id"]})
    assert merged["ucid"] == a["ucid"] and set(merged["ids"]["linkedUcid"]) == {b["ucid"], c["ucid"]}
    kept = cdp.write(KEPT, {"profile": {"first_name": "Kept4417"}})
    # A CRM person with the same email joins the profile: erased with it.
    person = client.put(
        "/v2/crm/people?matchingAttribute=email",
        json={"firstName": "Zelda9931", "lastName": "Crmonly9931", "emails": [ERASED["email"].strip()]},
        headers=org.bearer,
    )
    assert person.status_code in (200, 201), person.text
    assert person.json()["person"]["ucid"] == a["ucid"]
    person_id = person.json()["person"]["id"]

    ucids = [a["ucid"], b["ucid"], c["ucid"]]
    traces = _stored_traces(app, org.org_id, ucids)
    before = "\n".join(_all_rows(app).values())
    # The person is there before, in every form looked for below (so the search can find them).
    assert {t for t in traces if t not in before} == set()
    assert all(u in before for u in ucids)
    assert "consent-text-9931" in _all_rows(app)["idempotency_keys"]  # the saved answer
    # Also looked for afterwards: the values as they were sent, and the raw ones normalised.
    traces |= {v.strip().lower() for v in ERASED.values()} | {"+4930123459931"}

    traces.add("crmonly9931")
    # The person's id is an id like a ucid: the logs name the deletion by it (checked below).
    traces.discard(person_id)
    erased = client.post(
        "/cdp/v1/users/_delete",
        json={
            "orgId": org.org_id,
            "region": "EU",
            "ids": {"email": [ERASED["email"]]},
            "sendEmailNotification": True,
        },
        headers=org.headers(),
    )
    assert erased.status_code == 200, erased.text
    result = erased.json()
    assert result["deletedProfiles"] == 1 and result["ucids"] == [a["ucid"]] and result["deletedPeople"] == 1
    after = _all_rows(app)
    # What the erasure keeps of itself: its receipt, and its events for the feeds and the mailer.
    assert result["receiptId"] in after["erasure_receipts"]
    assert "erasure.notification_requested" in after["events"] and "profile.erased" in after["events"]

    for table, text in after.items():
        left = sorted(t for t in traces if t in text)
        assert left == [], f"{table} still holds {left} of the erased person"
        if TABLES[table] != "log":
            assert [u for u in [*ucids, person_id] if u in text] == [], f"{table} still holds an erased id"
    # The person who was not erased is still whole.
    [found] = cdp.search({"email": [KEPT["email"]]})
    assert found["ucid"] == kept["ucid"] and found["profile"]["first_name"] == "Kept4417"
    assert "kept4417" in _all_rows(app)["profiles"]


@pytest.mark.parametrize("keep_raw_ids", [False, True], ids=["hashed-only", "raw-kept"])
def test_an_erasure_takes_its_ids_out_of_another_persons_writes_that_did_not_take_them(
    app: FastAPI, client: TestClient, keep_raw_ids: bool
) -> None:
    """A write that carried the erased person's phone number landed on someone else, who could not
    take it (``id_owned_elsewhere``): the journal row of that write is the other person's and
    stays, without the phone number in any form."""
    org = make_org(app.state.db, keep_raw_ids=keep_raw_ids)
    cdp = Cdp(client, org)
    a = cdp.write({"email": "keep.a.7310@example.org"}, {"profile": {"first_name": "Keptann7310"}})
    b = cdp.write(
        {"email": "erase.b.7310@example.org", "cellphone": "+49 30 55501 7310"},
        {"profile": {"first_name": "Erasebea7310"}},
    )
    # Both match; one email each is the limit, so b is kept apart and a (made first) takes the
    # write without b's phone number.
    landed = cdp.write({"email": "keep.a.7310@example.org", "cellphone": "+49 30 55501 7310"})
    assert landed["ucid"] == a["ucid"]
    assert "id_owned_elsewhere" in cdp.notice_codes() and "merge_refused" in cdp.notice_codes()
    traces = _stored_traces(app, org.org_id, [b["ucid"]]) | {"+4930555017310"}
    kept = _stored_traces(app, org.org_id, [a["ucid"]]) - traces
    assert [t for t in traces if t in _all_rows(app)["profile_writes"]] != []  # a's write holds them

    assert cdp.delete({"email": ["erase.b.7310@example.org"]})["ucids"] == [b["ucid"]]

    after = _all_rows(app)
    for table, text in after.items():
        left = sorted(t for t in traces if t in text)
        assert left == [], f"{table} still holds {left} of the erased person"
        if TABLES[table] != "log":
            assert b["ucid"] not in text, f"{table} still holds the erased ucid"
    # a's journal still has its two writes, with a's own ids in them.
    journal = after["profile_writes"]
    assert kept and journal.count(a["ucid"]) == 2 and all(t in journal for t in kept)
    [found] = cdp.search({"email": ["keep.a.7310@example.org"]})
    assert found["ucid"] == a["ucid"] and "cellphone" not in found["ids"]


def test_an_erasure_reaches_a_write_that_kept_its_id_after_an_unmerge_moved_that_write(
    app: FastAPI, client: TestClient
) -> None:
    """An unmerge rebuilds a person's journal: a write that kept another person's phone number
    without taking it may then land on another of the rebuilt profiles. Erasing the number's holder
    afterwards still takes it out of that write."""
    org = make_org(app.state.db)
    cdp = Cdp(client, org)
    a = cdp.write({"email": "ann.8120@example.org"})
    b = cdp.write({"email": "bob.8120@example.org", "cellphone": "+49 30 55501 8120"})
    d = cdp.write({"fpuid": "fp-8120"})
    assert cdp.write({"email": "ann.8120@example.org", "fpuid": "fp-8120"})["ucid"] == a["ucid"]
    # The device is ann's now; bob's number on it is refused with bob (two emails).
    assert cdp.write({"fpuid": "fp-8120", "cellphone": "+49 30 55501 8120"})["ucid"] == a["ucid"]
    assert "id_owned_elsewhere" in cdp.notice_codes()
    unmerged = client.post(
        "/cdp/v1/users/_unmerge",
        json={"orgId": org.org_id, "region": "EU", "ucid": a["ucid"], "ids": {"fpuid": ["fp-8120"]}},
        headers=org.headers(),
    )
    assert unmerged.status_code == 200, unmerged.text
    assert {p["ucid"] for p in unmerged.json()} == {a["ucid"], d["ucid"]}
    traces = _stored_traces(app, org.org_id, [b["ucid"]])
    # The write with the device and bob's number is the device's profile's now.
    writes = [w for w in _all_rows(app)["profile_writes"].splitlines() if any(t in w for t in traces)]
    assert any(w.startswith(f"{org.org_id} | {d['ucid']}") for w in writes), writes

    cdp.delete({"email": ["bob.8120@example.org"]})
    after = _all_rows(app)
    assert {t: sorted(x for x in traces if x in text) for t, text in after.items()} == {t: [] for t in after}
    assert len([w for w in after["profile_writes"].splitlines() if d["ucid"] in w]) == 2


def test_erasing_a_person_unmerged_from_another_leaves_none_of_its_values_in_the_others_events(
    app: FastAPI, client: TestClient
) -> None:
    """While two people were one, the survivor's events and keyed answers carried both; once they
    are apart again, erasing one must take its values out of those too (docs/privacy.md)."""
    org = make_org(app.state.db)
    cdp = Cdp(client, org)
    kept = cdp.write({"email": "kept.5521@example.org"}, {"profile": {"first_name": "Kept5521"}})
    gone = cdp.write({"fpuid": "fp-gone-5521"}, {"profile": {"last_name": "Gonelast5521"}})
    cdp.write({"email": "kept.5521@example.org", "fpuid": "fp-gone-5521"})
    # A keyed write through the erased person's id only, while merged: it answers the merged whole
    # and, once apart, is the erased side's (it stays with the profile holding its only id).
    keyed_body = {
        "orgId": org.org_id,
        "region": "EU",
        "ids": {"fpuid": "fp-gone-5521"},
        "upsert": {"profile": {"nickname": "Gonenick5521"}},
    }
    keyed_headers = {**org.headers(), "Idempotency-Key": "gone-5521"}
    keyed = client.post("/cdp/v1/users", json=keyed_body, headers=keyed_headers)
    assert keyed.status_code == 200 and keyed.json()[0]["ucid"] == kept["ucid"], keyed.text
    unmerged = client.post(
        "/cdp/v1/users/_unmerge",
        json={"orgId": org.org_id, "region": "EU", "ucid": gone["ucid"], "ids": {"fpuid": ["fp-gone-5521"]}},
        headers=org.headers(),
    )
    assert unmerged.status_code == 200, unmerged.text
    apart = {p["ucid"]: p for p in unmerged.json()}
    assert set(apart) == {kept["ucid"], gone["ucid"]}
    assert apart[gone["ucid"]]["profile"]["nickname"] == "Gonenick5521"

    def leaks(values: tuple[str, ...]) -> dict[str, list[str]]:
        feed = client.get(f"/cdp/v1/changes?orgId={org.org_id}&after=0&limit=1000", headers=org.headers())
        assert feed.status_code == 200
        rows = _all_rows(app)
        texts = {"feed": feed.text.lower(), **rows}
        return {
            where: [v for v in values if v in text]
            for where, text in texts.items()
            if any(v in text for v in values)
        }

    # Erasing the parted person takes its values out of the survivor's events and of the answer
    # saved while it was part of the survivor (which names the survivor's ucid, not its own).
    cdp.delete({"ucid": [gone["ucid"]]})
    assert leaks(("gonelast5521", "gonenick5521", "fp-gone-5521")) == {}
    # The key is then new: the write is made again instead of answering the merged whole as it was,
    # and its only id is suppressed now, so it writes nothing.
    again = client.post("/cdp/v1/users", json=keyed_body, headers=keyed_headers)
    assert again.status_code == 409, again.text
    assert leaks(("gonelast5521", "gonenick5521", "fp-gone-5521")) == {}
    # Nor their ucids, but where the erasure is recorded by them (the change log, its events).
    rows = _all_rows(app)
    assert [t for t, text in rows.items() if TABLES[t] != "log" and gone["ucid"] in text] == []
    # The survivor's own state after the unmerge is still in the feed.
    feed = client.get(f"/cdp/v1/changes?orgId={org.org_id}&after=0&limit=1000", headers=org.headers())
    last = [e for e in feed.json()["changes"] if e["data"].get("profile", {}).get("ucid") == kept["ucid"]][-1]
    assert (
        last["type"] == "profile.unmerged" and last["data"]["profile"]["profile"]["first_name"] == "Kept5521"
    )
    # Its journal, without the erased id, still rebuilds it; the erased id is on none of its writes.
    unmerge = {"orgId": org.org_id, "region": "EU", "ucid": kept["ucid"]}
    gone_id = client.post(
        "/cdp/v1/users/_unmerge", json={**unmerge, "ids": {"fpuid": ["fp-gone-5521"]}}, headers=org.headers()
    )
    assert_error(gone_id, 400, "ids.fpuid")
    rebuilt = client.post(
        "/cdp/v1/users/_unmerge",
        json={**unmerge, "ids": {"email": ["kept.5521@example.org"]}},
        headers=org.headers(),
    )
    assert rebuilt.status_code == 200 and rebuilt.json()[0]["profile"]["first_name"] == "Kept5521", (
        rebuilt.text
    )
