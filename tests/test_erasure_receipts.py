"""Erasure receipts: ``_delete`` answers a ``receiptId``, ``GET /cdp/v1/erasures/{id}`` answers the
signed receipt, and it verifies offline (``profilehub receipt verify``) until anything in it changes.
"""

from __future__ import annotations

import copy
import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import FastAPI
from fastapi.testclient import TestClient

from profilehub.app import create_app
from profilehub.cli import main
from profilehub.config import Settings
from profilehub.receipts import ReceiptInvalid, public_pem, verify
from profilehub.store.changes import history
from profilehub.store.database import Database
from profilehub.store.receipt_store import ReceiptKeyLocked, ReceiptKeys
from profilehub.store.tables import receipt_keys
from tests.cdp_client import Cdp
from tests.conftest import OrgFixture, assert_error, make_org

ROOT = Path(__file__).resolve().parent.parent


def _erase(client: TestClient, org: OrgFixture, ids: dict[str, Any], **extra: Any) -> dict[str, Any]:
    r = client.post(
        "/cdp/v1/users/_delete",
        json={"orgId": org.org_id, "region": "EU", "ids": ids, **extra},
        headers=org.headers(),
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def _receipt(client: TestClient, org: OrgFixture, receipt_id: str) -> dict[str, Any]:
    r = client.get(f"/cdp/v1/erasures/{receipt_id}", params={"orgId": org.org_id}, headers=org.headers())
    assert r.status_code == 200, r.text
    return dict(r.json())


def _pinned(db: Database, org_id: int) -> Ed25519PublicKey:
    return db.write(lambda c: ReceiptKeys().public_key(c, org_id))


def _merged_person(cdp: Cdp) -> tuple[str, str]:
    """Two profiles of one person, the second merged into the first; their ucids."""
    a = cdp.write({"email": "receipt.me@example.org"}, {"profile": {"first_name": "Rhea7712"}})
    b = cdp.write(
        {"crm_id": "crm-7712"}, {"profile": {"city": "Receiptville7712"}, "consent": {"sms": "yes"}}
    )
    merged = cdp.write({"email": "receipt.me@example.org", "crm_id": "crm-7712"})
    assert merged["ucid"] == a["ucid"] and merged["ids"]["linkedUcid"] == [b["ucid"]]
    return a["ucid"], b["ucid"]


def test_an_erasure_answers_a_receipt_that_verifies_with_the_orgs_key(
    app: FastAPI, client: TestClient
) -> None:
    org = make_org(app.state.db)
    cdp = Cdp(client, org)
    master, merged = _merged_person(cdp)
    answer = _erase(client, org, {"email": ["receipt.me@example.org", "nobody@example.org"]})
    assert answer["ucids"] == [master]
    receipt = _receipt(client, org, answer["receiptId"])

    assert verify(receipt, _pinned(app.state.db, org.org_id)).pinned
    assert receipt["receiptId"] == answer["receiptId"]
    assert (receipt["orgId"], receipt["region"], receipt["by"]) == (org.org_id, "EU", "email")
    assert receipt["ucids"] == [master, merged]
    assert receipt["erasedBy"].startswith(f"apikey:phk_{org.org_id}_")
    assert receipt["sendEmailNotification"] is False
    counts = receipt["counts"]
    assert (counts["profiles"], counts["mergedProfiles"], counts["deletedPeople"]) == (1, 1, 0)
    assert counts["valuesNotFound"] == 1
    assert counts["ids"] >= 2 and counts["journalRows"] == 3 and counts["events"] == 3
    assert counts["consentRows"] >= 1
    # The change log's erase row leads to the receipt.
    with app.state.db.read() as conn:
        [erase_row] = [c for c in history(conn, org.org_id, entity_id=master) if c["action"] == "erase"]
    assert erase_row["detail"]["receiptId"] == answer["receiptId"]
    # So does the merged-away ucid's own history (`profilehub changes --ucid` of either ucid).
    with app.state.db.read() as conn:
        [merged_row] = [c for c in history(conn, org.org_id, entity_id=merged) if c["action"] == "erase"]
    assert merged_row["detail"]["receiptId"] == answer["receiptId"]
    assert merged_row["detail"]["mergedInto"] == master
    # What was erased by ucid and count only: none of the person's values.
    text = json.dumps(receipt).lower()
    assert not any(v in text for v in ("receipt.me", "nobody@", "crm-7712", "rhea7712", "receiptville"))


def test_a_receipt_fails_once_any_field_is_changed_added_or_removed(app: FastAPI, client: TestClient) -> None:
    org = make_org(app.state.db)
    cdp = Cdp(client, org)
    _merged_person(cdp)
    receipt = _receipt(client, org, _erase(client, org, {"crm_id": ["crm-7712"]})["receiptId"])
    pinned = _pinned(app.state.db, org.org_id)
    verify(receipt, pinned)
    tampered: list[dict[str, Any]] = []
    for name, value in receipt.items():
        if name == "signature":
            continue
        changed = copy.deepcopy(receipt)
        if isinstance(value, bool):
            changed[name] = not value
        elif isinstance(value, int):
            changed[name] = value + 1
        elif isinstance(value, list):
            changed[name] = value[:-1]
        elif isinstance(value, dict):
            changed[name] = {**value, "ids": value["ids"] - 1}
        else:
            changed[name] = value[:-1] + ("0" if value[-1] != "0" else "1")
        tampered.append(changed)
    added = copy.deepcopy(receipt)
    added["note"] = "x"
    removed = copy.deepcopy(receipt)
    del removed["by"]
    resigned = copy.deepcopy(receipt)
    resigned["signature"] = resigned["signature"][:-4] + (
        "AAA=" if resigned["signature"][-4:] != "AAA=" else "BBB="
    )
    for bad in [*tampered, added, removed, resigned]:
        for key in (pinned, None):
            with pytest.raises(ReceiptInvalid):
                verify(bad, key)


def test_a_receipt_fails_with_another_orgs_key(app: FastAPI, client: TestClient) -> None:
    org, other = make_org(app.state.db), make_org(app.state.db, org_id=5678)
    Cdp(client, org).write({"crm_id": "c-1"})
    receipt = _receipt(client, org, _erase(client, org, {"crm_id": ["c-1"]})["receiptId"])
    with pytest.raises(ReceiptInvalid, match="not signed by the key given"):
        verify(receipt, _pinned(app.state.db, other.org_id))
    # Re-pointed at the other org's key, the signature no longer matches.
    forged = {**receipt, "publicKey": _receipt_key_b64(app.state.db, other.org_id)}
    with pytest.raises(ReceiptInvalid, match="signature does not match"):
        verify(forged)


def _receipt_key_b64(db: Database, org_id: int) -> str:
    with db.read() as conn:
        return str(
            conn.execute(receipt_keys.select().where(receipt_keys.c.org_id == org_id)).one().public_key
        )


def test_the_receipt_route_refuses_bad_unknown_and_foreign_requests(app: FastAPI, client: TestClient) -> None:
    org, other = make_org(app.state.db), make_org(app.state.db, org_id=5678)
    Cdp(client, org).write({"crm_id": "c-1"})
    receipt_id = _erase(client, org, {"crm_id": ["c-1"]})["receiptId"]
    url = f"/cdp/v1/erasures/{receipt_id}"

    assert_error(client.get(url, params={"orgId": org.org_id}, headers=org.headers("profile.read")), 403)
    assert_error(client.get(url, headers=org.headers()), 400, "orgId")
    assert_error(client.get(url, params={"orgId": "x"}, headers=org.headers()), 400, "orgId")
    assert_error(client.get(url, params={"orgId": other.org_id}, headers=org.headers()), 403, "orgId")
    bad = client.get("/cdp/v1/erasures/not-a-uuid", params={"orgId": org.org_id}, headers=org.headers())
    assert_error(bad, 400, "receiptId")
    unknown = f"/cdp/v1/erasures/{'0' * 8}-0000-4000-8000-{'0' * 12}"
    assert_error(client.get(unknown, params={"orgId": org.org_id}, headers=org.headers()), 404, "receiptId")
    # Another org's receipt is unknown to this org.
    assert_error(client.get(url, params={"orgId": other.org_id}, headers=other.headers()), 404, "receiptId")
    # An erasure that found nobody still has its receipt.
    none = _erase(client, org, {"crm_id": ["nobody"]})
    assert none["deletedProfiles"] == 0
    assert _receipt(client, org, none["receiptId"])["counts"]["valuesNotFound"] == 1


def test_send_email_notification_is_on_the_receipt_and_an_event_for_the_mailer(
    app: FastAPI, client: TestClient
) -> None:
    org = make_org(app.state.db)
    cdp = Cdp(client, org)
    master, merged = _merged_person(cdp)
    Cdp(client, org).write({"crm_id": "quiet-1"})
    asked = _erase(client, org, {"ucid": [master]}, sendEmailNotification=True)
    quiet = _erase(client, org, {"crm_id": ["quiet-1"]})
    assert _receipt(client, org, asked["receiptId"])["sendEmailNotification"] is True

    page = client.get("/cdp/v1/changes", params={"orgId": org.org_id}, headers=org.headers("profile.read"))
    assert page.status_code == 200, page.text
    notes = [e for e in page.json()["changes"] if e["type"] == "erasure.notification_requested"]
    assert [(e["region"], e["data"]) for e in notes] == [
        ("EU", {"receiptId": asked["receiptId"], "ucids": [master, merged]})
    ]
    assert quiet["receiptId"] not in page.text
    # The erased person's earlier events are gone: the feed holds the erasures' own events only.
    assert "rhea7712" not in page.text.lower()


def test_receipt_verify_and_key_on_the_command_line(
    app: FastAPI, client: TestClient, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    org, other = make_org(app.state.db), make_org(app.state.db, org_id=5678)
    Cdp(client, org).write({"crm_id": "c-1"})
    receipt = _receipt(client, org, _erase(client, org, {"crm_id": ["c-1"]})["receiptId"])
    saved = tmp_path / "receipt.json"
    saved.write_text(json.dumps(receipt, indent=2))
    runner = CliRunner()
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)
    keys = {}
    for o in (org, other):
        got = runner.invoke(main, ["receipt", "key", "--org-id", str(o.org_id)])
        assert got.exit_code == 0, got.output
        keys[o.org_id] = tmp_path / f"{o.org_id}.pem"
        keys[o.org_id].write_text(got.stdout)
    assert keys[org.org_id].read_text() == public_pem(_pinned(app.state.db, org.org_id))

    # Offline: no database is needed to verify.
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    ok = runner.invoke(main, ["receipt", "verify", str(saved), "--public-key", str(keys[org.org_id])])
    assert ok.exit_code == 0 and ok.output.startswith("valid"), ok.output
    assert "the key given" in ok.output
    alone = runner.invoke(main, ["receipt", "verify", str(saved)])
    assert alone.exit_code == 0 and "pin the org's key" in alone.output, alone.output

    wrong_key = runner.invoke(
        main, ["receipt", "verify", str(saved), "--public-key", str(keys[other.org_id])]
    )
    assert wrong_key.exit_code == 1 and "invalid" in wrong_key.output, wrong_key.output
    saved.write_text(json.dumps({**receipt, "erasedBy": "apikey:someone-else"}))
    changed = runner.invoke(main, ["receipt", "verify", str(saved), "--public-key", str(keys[org.org_id])])
    assert changed.exit_code == 1 and "signature does not match" in changed.output, changed.output
    # The docs' recipe without profilehub verifies it too, and refuses the changed one.
    recipe = re.search(r"```python\n(.*?)```", (ROOT / "docs" / "privacy.md").read_text(), re.S)
    assert recipe, "docs/privacy.md has no Python recipe"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "acme-receipts.pem").write_text(keys[org.org_id].read_text())
    (tmp_path / "receipt.json").write_text(json.dumps(receipt))
    exec(recipe.group(1), {})  # raises if the signature does not verify
    (tmp_path / "receipt.json").write_text(json.dumps({**receipt, "region": "UK"}))
    with pytest.raises(InvalidSignature):
        exec(recipe.group(1), {})
    saved.write_text("{not json")
    garbled = runner.invoke(main, ["receipt", "verify", str(saved)])
    assert garbled.exit_code == 1 and "not a JSON receipt" in garbled.output


def test_a_passphrase_keeps_the_signing_key_encrypted_in_the_database(db: Database) -> None:
    make_org(db)
    clear = db.write(lambda c: ReceiptKeys().signing_key(c, 1234))  # made before a passphrase was set

    def stored() -> str:
        with db.read() as conn:
            return str(conn.execute(receipt_keys.select()).one().private_key)

    assert stored().startswith("-----BEGIN PRIVATE KEY-----")
    # Once the passphrase is set, the next use stores the same key encrypted.
    opened = db.write(lambda c: ReceiptKeys("s3cret").signing_key(c, 1234))
    assert opened.public_key().public_bytes_raw() == clear.public_key().public_bytes_raw()
    assert stored().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(ReceiptKeyLocked, match="PROFILEHUB_RECEIPT_KEY_PASSPHRASE"):
        db.write(lambda c: ReceiptKeys().signing_key(c, 1234))
    # The public key, stored apart, needs no passphrase.
    public = db.write(lambda c: ReceiptKeys().public_key(c, 1234))
    assert public.public_bytes_raw() == clear.public_key().public_bytes_raw()
    with pytest.raises(ReceiptKeyLocked, match="another passphrase"):
        db.write(lambda c: ReceiptKeys("wrong").signing_key(c, 1234))


def test_an_erasure_whose_key_does_not_open_erases_nothing(database_url: str) -> None:
    with_passphrase = create_app(Settings(database_url=database_url, receipt_key_passphrase="s3cret"))
    without = create_app(Settings(database_url=database_url))
    wrong = create_app(Settings(database_url=database_url, receipt_key_passphrase="not it"))
    try:
        org = make_org(with_passphrase.state.db)
        with TestClient(with_passphrase) as keyed, TestClient(without) as plain, TestClient(wrong) as other:
            assert plain.get("/readyz").status_code == 200  # no key stored encrypted yet
            Cdp(keyed, org).write({"crm_id": "first"})
            _erase(keyed, org, {"crm_id": ["first"]})  # makes the org's key, encrypted
            Cdp(keyed, org).write({"crm_id": "second"})
            for client, why in ((plain, "is not set"), (other, "another passphrase")):
                refused = client.post(
                    "/cdp/v1/users/_delete",
                    json={"orgId": org.org_id, "region": "EU", "ids": {"crm_id": ["second"]}},
                    headers=org.headers(),
                )
                # The server's configuration is missing, not the request wrong: a 503 saying which.
                assert_error(refused, 503)
                assert "PROFILEHUB_RECEIPT_KEY_PASSPHRASE" in refused.json()["message"]
                # No erasure without its receipt: the person is still there, whole.
                found = Cdp(client, org).search({"crm_id": ["second"]})
                assert [i["crm_id"] for i in found[0]["ids"]["crm"]] == ["second"]
                # Readiness says so before any erasure has to.
                ready = client.get("/readyz")
                assert_error(ready, 503)
                assert "PROFILEHUB_RECEIPT_KEY_PASSPHRASE" in ready.json()["message"]
                assert why in ready.json()["message"]
            assert keyed.get("/readyz").status_code == 200
            _erase(keyed, org, {"crm_id": ["second"]})  # the right passphrase erases as before
    finally:
        for app in (with_passphrase, without, wrong):
            app.state.db.close()


def test_serve_refuses_to_start_without_the_passphrase_of_the_stored_keys(
    database_url: str, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    started: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: started.append(a))
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)
    make_org(db)
    db.write(lambda c: ReceiptKeys("s3cret").signing_key(c, 1234))  # stored encrypted

    def serve(passphrase: str | None) -> Any:
        if passphrase is None:
            monkeypatch.delenv("PROFILEHUB_RECEIPT_KEY_PASSPHRASE", raising=False)
        else:
            monkeypatch.setenv("PROFILEHUB_RECEIPT_KEY_PASSPHRASE", passphrase)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = str(probe.getsockname()[1])
        return CliRunner().invoke(main, ["serve", "--host", "127.0.0.1", "--port", port])

    for passphrase, why in ((None, "is not set"), ("not it", "another passphrase")):
        refused = serve(passphrase)
        assert refused.exit_code == 1, refused.output
        assert "PROFILEHUB_RECEIPT_KEY_PASSPHRASE" in refused.output and why in refused.output
        assert "org 1234" in refused.output
    assert started == []  # refused before it listened
    assert serve("s3cret").exit_code == 0
    assert len(started) == 1
