"""The journal of the writes that made each person: what it keeps (hashed ids, written values,
actor, time, merges with their causes), that it follows merges, and its retention."""

from __future__ import annotations

import hashlib

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from fastapi import FastAPI
from fastapi.testclient import TestClient

from profilehub.cli import main
from profilehub.lineage import journal
from profilehub.store.changes import history, now_ms
from profilehub.store.journal_store import prune_journal, set_retention_days
from tests.cdp_client import Cdp
from tests.conftest import make_org

EMAIL = " Jo.Journal@Example.org "
SHA = hashlib.sha256(b"jo.journal@example.org").hexdigest()


def test_each_write_is_journaled_with_hashed_ids_values_actor_and_merge_causes(
    app: FastAPI, client: TestClient
) -> None:
    org = make_org(app.state.db)
    cdp = Cdp(client, org)
    a = cdp.write({"email": EMAIL}, {"profile": {"city": "Lyon"}})
    b = cdp.write({"crm_id": "crm-7", "AdId": "ad-1"}, {"consent": {"email": "yes"}})
    merged = cdp.write({"email": EMAIL, "crm_id": "crm-7"}, {"profile": {"city": None}})
    assert merged["ucid"] == a["ucid"] and merged["ids"]["linkedUcid"] == [b["ucid"]]

    entries = journal(app.state.profiles, org.org_id, b["ucid"])  # a merged ucid finds the person
    assert [e["ucid"] for e in entries] == [a["ucid"], b["ucid"], a["ucid"]]
    first, second, third = entries
    assert first["created"] and second["created"] and not third["created"]
    assert {"idType": "email_sha256_lowercase", "value": SHA} in first["ids"]
    assert all(i["idType"] != "email" for e in entries for i in e["ids"])  # raw email not kept
    assert first["upsert"] == {"profile": {"city": "Lyon"}}
    assert third["upsert"] == {"profile": {"city": None}}
    assert third["merged"] == [{"ucid": b["ucid"], "via": ["crm_id"]}]
    assert first["ts"] <= second["ts"] <= third["ts"] and first["actor"].startswith("apikey:")
    # The raw address is nowhere in the journal table.
    with app.state.db.read() as conn:
        stored = " ".join(
            str(v) for row in conn.execute(sa.text("SELECT * FROM profile_writes")) for v in row
        )
        log = history(conn, org.org_id, entity="profile", entity_id=a["ucid"])
    assert "jo.journal" not in stored.lower() and SHA in stored
    # The profile's history names the cause of the merge too.
    [merge] = [c for c in log if c["action"] == "merge"]
    assert merge["detail"]["mergedVia"] == {b["ucid"]: ["crm_id"]}


def test_an_org_keeping_raw_ids_journals_them(app: FastAPI, client: TestClient) -> None:
    org = make_org(app.state.db, keep_raw_ids=True)
    p = Cdp(client, org).write({"email": EMAIL})
    [entry] = journal(app.state.profiles, org.org_id, p["ucid"])
    assert {"idType": "email", "value": "jo.journal@example.org"} in entry["ids"]


def test_a_refused_write_leaves_no_journal_entry(app: FastAPI, client: TestClient) -> None:
    org = make_org(app.state.db)
    cdp = Cdp(client, org)
    p = cdp.write({"crm_id": "crm-1"})
    r = client.post(
        "/cdp/v1/users",
        json={"orgId": org.org_id, "region": "EU", "ids": {"crm_id": "crm-1"}, "upsert": {"nope": {}}},
        headers=org.headers(),
    )
    assert r.status_code == 400
    assert len(journal(app.state.profiles, org.org_id, p["ucid"])) == 1


def test_retention_drops_entries_older_than_the_org_keeps(
    app: FastAPI, client: TestClient, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = make_org(app.state.db)
    cdp = Cdp(client, org)
    old = cdp.write({"crm_id": "crm-old"})
    cdp.write({"crm_id": "crm-old"}, {"profile": {"n": 2}})
    with app.state.db.engine.begin() as conn:  # the first write is 40 days old
        conn.execute(
            sa.text("UPDATE profile_writes SET ts = ts - 3456000000 WHERE created = :t"), {"t": True}
        )
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)
    runner = CliRunner()
    shown = runner.invoke(main, ["org", "journal-retention", "--org-id", str(org.org_id)])
    assert shown.exit_code == 0 and "for ever" in shown.output
    kept = runner.invoke(main, ["org", "journal-retention", "--org-id", str(org.org_id), "--days", "30"])
    assert kept.exit_code == 0, kept.output
    assert "dropped 1 journal entries" in kept.output and "30 days" in kept.output
    [left] = journal(app.state.profiles, org.org_id, old["ucid"])
    assert left["upsert"] == {"profile": {"n": 2}}
    back = runner.invoke(main, ["org", "journal-retention", "--org-id", str(org.org_id), "--forever"])
    assert "for ever" in back.output


def test_retention_drops_the_list_of_ids_the_dropped_entries_did_not_take(
    app: FastAPI, client: TestClient
) -> None:
    """An entry that kept another person's phone number (``id_owned_elsewhere``) is listed by that
    number for erasures (``journal_unattached``); when retention drops the entry, the number goes
    from that list too: nothing of it is kept past the org's days."""
    org = make_org(app.state.db)
    cdp = Cdp(client, org)
    cdp.write({"email": "ann.kept@example.org"})
    cdp.write({"email": "bob.kept@example.org", "cellphone": "+49 30 55501 4411"})
    cdp.write({"email": "ann.kept@example.org", "cellphone": "+49 30 55501 4411"})
    assert "id_owned_elsewhere" in cdp.notice_codes()
    phone = hashlib.sha256(b"+4930555014411").hexdigest()

    def holding() -> dict[str, int]:
        with app.state.db.read() as conn:
            return {
                table: conn.execute(
                    sa.text(f"SELECT count(*) FROM {table} WHERE org_id = :o AND {column} LIKE :v"),
                    {"o": org.org_id, "v": f"%{phone}%"},
                ).scalar_one()
                for table, column in (("profile_writes", "ids"), ("journal_unattached", "value"))
            }

    assert holding() == {"profile_writes": 2, "journal_unattached": 1}
    app.state.db.write(lambda c: set_retention_days(c, org.org_id, 30, now_ms()))
    forty_days_on = now_ms() + 40 * 86_400_000
    app.state.db.write(lambda c: prune_journal(c, forty_days_on, org.org_id))
    assert holding() == {"profile_writes": 0, "journal_unattached": 0}
