"""apikey + scopes auth, and org scoping, on every CDP endpoint."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from profilehub.auth import CredentialKind, create_credential, revoke_credential
from tests.conftest import OrgFixture, assert_error, make_org

ENDPOINTS: list[tuple[str, str, dict[str, Any]]] = [
    ("/cdp/v1/users", "profile.write", {"orgId": 1234, "region": "EU", "ids": {"crm_id": "1"}, "upsert": {}}),
    ("/cdp/v1/users/_search", "profile.read", {"orgId": 1234, "search": {"crm_id": ["1"]}}),
    ("/cdp/v1/users/_delete", "profile.delete", {"orgId": 1234, "region": "EU", "ids": {"crm_id": ["1"]}}),
]


@pytest.mark.parametrize(("path", "scope", "body"), ENDPOINTS)
@pytest.mark.parametrize(
    ("headers", "status", "field"),
    [
        ({}, 401, "apikey"),
        ({"apikey": "nonsense"}, 401, "apikey"),
        ({"apikey": "phk_1234_not-a-real-key"}, 401, "apikey"),
        ({"apikey": "phk_99999999999999999999_x"}, 401, "apikey"),
        ({"apikey": "<KEY>"}, 403, "scopes"),
        ({"apikey": "<KEY>", "scopes": ""}, 403, "scopes"),
        ({"apikey": "<KEY>", "scopes": "profile.everything"}, 403, "scopes"),
        ({"apikey": "<TOKEN>", "scopes": "<SCOPE>"}, 401, "apikey"),
        ({"apikey": "<READONLY>", "scopes": "profile.read,profile.write,profile.delete"}, 403, "scopes"),
    ],
    ids=[
        "no-key",
        "garbage",
        "unknown",
        "huge-org",
        "no-scopes",
        "empty-scopes",
        "unknown-scope",
        "crm-token",
        "not-granted",
    ],
)
def test_auth_failures(
    client: TestClient,
    app: FastAPI,
    org: OrgFixture,
    path: str,
    scope: str,
    body: dict[str, Any],
    headers: dict[str, str],
    status: int,
    field: str,
) -> None:
    readonly = app.state.db.write(lambda c: create_credential(c, 1234, CredentialKind.APIKEY, "profile.read"))
    swap = {"<KEY>": org.apikey, "<TOKEN>": org.token, "<SCOPE>": scope, "<READONLY>": readonly.secret}
    sent = {k: swap.get(v, v) for k, v in headers.items()}
    assert_error(client.post(path, json=body, headers=sent), status, field)


@pytest.mark.parametrize(("path", "scope", "body"), ENDPOINTS)
def test_endpoint_scope_must_be_in_the_header(
    client: TestClient, org: OrgFixture, path: str, scope: str, body: dict[str, Any]
) -> None:
    others = ",".join(s for s in ("profile.read", "profile.write", "profile.delete") if s != scope)
    assert_error(client.post(path, json=body, headers=org.headers(others)), 403, "scopes")
    assert client.post(path, json=body, headers=org.headers(scope)).status_code == 200


@pytest.mark.parametrize(("path", "scope", "body"), ENDPOINTS)
def test_a_key_cannot_reach_another_org(
    client: TestClient, app: FastAPI, org: OrgFixture, path: str, scope: str, body: dict[str, Any]
) -> None:
    other = make_org(app.state.db, org_id=999)
    assert_error(client.post(path, json=body, headers=other.headers()), 403, "orgId")


def test_orgs_are_isolated(client: TestClient, app: FastAPI, org: OrgFixture) -> None:
    other = make_org(app.state.db, org_id=999)
    body = {"orgId": 1234, "region": "EU", "ids": {"crm_id": "same"}, "upsert": {"profile": {"o": 1234}}}
    mine = client.post("/cdp/v1/users", json=body, headers=org.headers()).json()[0]
    theirs = client.post("/cdp/v1/users", json={**body, "orgId": 999}, headers=other.headers()).json()[0]
    assert mine["ucid"] != theirs["ucid"] and theirs["profile"] == {
        "o": 1234,
        "_ts": theirs["profile"]["_ts"],
    }
    found = client.post(
        "/cdp/v1/users/_search",
        json={"orgId": 999, "search": {"ucid": [mine["ucid"]]}},
        headers=other.headers(),
    ).json()
    assert found == []


def test_revoked_key_stops_working(database_url: str) -> None:
    from profilehub.app import create_app
    from profilehub.config import Settings

    app = create_app(Settings(database_url=database_url, credential_cache_seconds=0))
    org = make_org(app.state.db)
    with TestClient(app) as client:
        body = ENDPOINTS[1][2]
        assert client.post("/cdp/v1/users/_search", json=body, headers=org.headers()).status_code == 200
        prefix = org.apikey[: len("phk_1234_") + 6]
        app.state.db.write(lambda c: revoke_credential(c, 1234, prefix))
        assert_error(client.post("/cdp/v1/users/_search", json=body, headers=org.headers()), 401, "apikey")
    app.state.db.close()


def test_secrets_are_stored_only_as_hashes(app: FastAPI, org: OrgFixture) -> None:
    with app.state.db.read() as conn:
        rows = conn.execute(sa.text("SELECT * FROM credentials")).all()
    dump = repr(rows)
    assert org.apikey not in dump and org.token not in dump
    assert org.apikey.split("_", 2)[2] not in dump
