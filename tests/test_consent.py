"""Consent on merge over HTTP, both databases: a denial on either side survives the merge (notice
``consent_kept_denied``) on the single write, the bulk write and ``_explain``; the org's own denial
values (CLI, shown on the console's org page) apply from the next write; a write to one profile
still replaces consent. The whole rule table is in tests/test_identity_rules.py."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from fastapi import FastAPI
from fastapi.testclient import TestClient

from profilehub.cli import main
from tests.cdp_client import Cdp
from tests.conftest import make_org
from tests.console_client import sign_in


def _two_people(cdp: Cdp) -> tuple[dict[str, Any], dict[str, Any]]:
    """An older "no" by email and a newer "yes" from a device: one person, not linked yet."""
    said_no = cdp.write({"email": "ann@example.org"}, {"consent": {"email": "No"}})
    said_yes = cdp.write({"AdId": "ad-1"}, {"consent": {"email": "yes", "sms": True}})
    return said_no, said_yes


def test_a_merge_keeps_the_denial_and_says_so_then_a_direct_write_replaces_it(
    app: FastAPI, client: TestClient
) -> None:
    org = make_org(app.state.db)
    cdp = Cdp(client, org)
    said_no, said_yes = _two_people(cdp)
    link = {"orgId": org.org_id, "region": "EU", "ids": {"email": "ann@example.org", "AdId": "ad-1"}}
    explained = client.post("/cdp/v1/users/_explain", json={**link, "upsert": {}}, headers=org.headers())
    assert explained.status_code == 200, explained.text
    assert [n["code"] for n in explained.json()["notices"]] == ["consent_kept_denied"]

    merged = cdp.write(link["ids"])
    assert merged["ucid"] == said_no["ucid"] and merged["ids"]["linkedUcid"] == [said_yes["ucid"]]
    assert merged["consent"]["email"] == "No" and merged["consent"]["sms"] is True
    assert cdp.last_notices == [
        {
            "code": "consent_kept_denied",
            "message": "consent.email: the denial was kept: when profiles merge, a denial on either "
            "side wins over a grant",
            "field": "consent.email",
            "attribute": "email",
        }
    ]
    # The person's own later word, on the one profile, replaces it.
    again = cdp.write({"AdId": "ad-1"}, {"consent": {"email": "yes"}})
    assert again["consent"]["email"] == "yes" and cdp.notice_codes() == []


def test_a_bulk_merge_keeps_the_denial_of_either_side(app: FastAPI, client: TestClient) -> None:
    org = make_org(app.state.db)

    def w(ids: dict[str, str], consent: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"orgId": org.org_id, "region": "EU", "ids": ids, "upsert": {"consent": consent or {}}}

    records = [
        w({"crm_id": "c-1"}, {"email": "yes"}),
        w({"AdId": "ad-1"}, {"email": "unsubscribed"}),  # newer, on the side merged in
        w({"crm_id": "c-1", "AdId": "ad-1"}, {"email": "yes"}),  # the merging write's own grant
    ]
    r = client.post("/cdp/v1/users/_bulk", json=records, headers=org.headers("profile.write"))
    assert r.status_code == 200, r.text
    last = r.json()[-1]
    assert last["profile"]["consent"]["email"] == "unsubscribed"
    assert [n["code"] for n in last["notices"]] == ["consent_kept_denied"]


def test_the_orgs_denial_values_apply_from_the_next_write(
    app: FastAPI, client: TestClient, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = make_org(app.state.db)
    cdp = Cdp(client, org)
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)
    runner = CliRunner()
    shown = runner.invoke(main, ["org", "consent-denials", "--org-id", str(org.org_id)])
    assert shown.exit_code == 0, shown.output
    assert "0, denied, false, n, no, opt-out, optout, unsubscribed" in shown.output
    set_ = runner.invoke(
        main,
        ["org", "consent-denials", "--org-id", str(org.org_id), "--value", " Refused ", "--value", "nein"],
    )
    assert set_.exit_code == 0 and "consent denials: nein, refused" in set_.output, set_.output
    sign_in(client, org.apikey)
    admin = client.get("/console/admin").text  # the org page lists them
    assert admin.split('id="consent-denials"', 1)[1].split("</section>", 1)[0].count("nein, refused") == 1
    empty = runner.invoke(main, ["org", "consent-denials", "--org-id", str(org.org_id), "--value", " "])
    assert empty.exit_code == 1 and "cannot be empty" in empty.output

    said_no, _ = _two_people(cdp)  # "No" is no denial for this org any more
    cdp.write({"crm_id": "c-9"}, {"consent": {"sms": "REFUSED"}})
    cdp.write({"crm_id": "c-9", "AdId": "ad-1"}, {"consent": {"sms": "yes"}})
    merged = cdp.write({"email": "ann@example.org", "AdId": "ad-1"})
    assert merged["ucid"] == said_no["ucid"]
    assert merged["consent"]["email"] == "yes"  # the newer side, as any attribute
    assert merged["consent"]["sms"] == "REFUSED"  # kept over the grant of the write that linked c-9
    back = runner.invoke(main, ["org", "consent-denials", "--org-id", str(org.org_id), "--default"])
    assert back.exit_code == 0 and "no, opt-out" in back.output


def test_a_kept_denial_leaves_no_consent_value_in_the_change_log(app: FastAPI, client: TestClient) -> None:
    # The change log holds no attribute values (docs/unmerge.md), and its rows of a ucid outlive
    # the person's erasure (docs/privacy.md): the notice it keeps names the attribute, not the value.
    from profilehub.store.changes import history
    from profilehub.store.changes import now_ms as clock
    from profilehub.store.strategy_store import set_consent_denials

    org = make_org(app.state.db)
    app.state.db.write(lambda c: set_consent_denials(c, org.org_id, ["withheld-7731"], clock()))
    cdp = Cdp(client, org)
    said_no = cdp.write({"email": "ann@example.org"}, {"consent": {"email": "Withheld-7731"}})
    cdp.write({"AdId": "ad-1"}, {"consent": {"email": "yes"}})
    merged = cdp.write({"email": "ann@example.org", "AdId": "ad-1"})
    assert merged["consent"]["email"] == "Withheld-7731" and cdp.notice_codes() == ["consent_kept_denied"]
    cdp.delete({"ucid": [said_no["ucid"]]})
    with app.state.db.read() as conn:
        rows = history(conn, org.org_id, entity="profile", entity_id=said_no["ucid"])
    assert [r["action"] for r in rows] == ["create", "merge", "erase"]
    assert "withheld-7731" not in str(rows).lower()
