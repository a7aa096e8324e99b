"""OIDC/Okta JWTs as the alternative CDP credential (Authorization: Bearer + orgId header)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from profilehub.app import create_app
from profilehub.auth import allow_jwt_subject
from profilehub.config import Settings, SettingsError
from tests.conftest import assert_error, make_org, migrated_url

ISSUER = "https://acme.okta.example/oauth2/default"
AUDIENCE = "api://profilehub"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
BODY = {"orgId": 1234, "region": "EU", "ids": {"crm_id": "C-1"}, "upsert": {"profile": {"a": 1}}}


def _token(key: Any = KEY, **overrides: Any) -> str:
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "0oa-client-1",
        "exp": int(time.time()) + 300,
        "scp": ["profile.read", "profile.write"],
    }
    claims.update(overrides)
    return jwt.encode(
        {k: v for k, v in claims.items() if v is not None}, key, algorithm="RS256", headers={"kid": "k1"}
    )


@pytest.fixture
def jwt_app(database_url: str, tmp_path: Path) -> Iterator[FastAPI]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    app = create_app(
        Settings(
            database_url=migrated_url(database_url),
            jwt_issuer=ISSUER,
            jwt_audience=AUDIENCE,
            jwt_jwks=str(jwks),
        )
    )
    make_org(app.state.db)
    make_org(app.state.db, org_id=999)
    app.state.db.write(
        lambda c: allow_jwt_subject(c, 1234, ISSUER, "0oa-client-1", "profile.read,profile.write")
    )
    yield app
    app.state.db.close()


def _headers(token: str, org: str | None = "1234", scopes: str = "profile.write") -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}", "scopes": scopes}
    if org is not None:
        headers["orgId"] = org
    return headers


def test_a_valid_jwt_writes_and_searches(jwt_app: FastAPI) -> None:
    with TestClient(jwt_app) as client:
        r = client.post("/cdp/v1/users", json=BODY, headers=_headers(_token()))
        assert r.status_code == 200, r.text
        found = client.post(
            "/cdp/v1/users/_search",
            json={"orgId": 1234, "search": {"crm_id": ["C-1"]}},
            headers=_headers(_token(), scopes="profile.read"),
        )
        assert [p["ucid"] for p in found.json()] == [r.json()[0]["ucid"]]


@pytest.mark.parametrize(
    ("token_kwargs", "org", "scopes", "status", "field"),
    [
        ({"exp": int(time.time()) - 10}, "1234", "profile.write", 401, "Authorization"),
        ({"aud": "api://someone-else"}, "1234", "profile.write", 401, "Authorization"),
        ({"iss": "https://evil.example"}, "1234", "profile.write", 401, "Authorization"),
        ({"key": OTHER_KEY}, "1234", "profile.write", 401, "Authorization"),
        ({"sub": None}, "1234", "profile.write", 401, "Authorization"),
        ({}, None, "profile.write", 401, "orgId"),
        ({}, "abc", "profile.write", 401, "orgId"),
        ({}, "99999999999999999999", "profile.write", 401, "orgId"),
        ({}, "999", "profile.write", 403, "orgId"),  # subject not allowed in org 999
        ({"sub": "0oa-stranger"}, "1234", "profile.write", 403, "orgId"),
        ({}, "1234", "profile.delete", 403, "scopes"),  # not granted to the subject
        ({"scp": ["profile.read"]}, "1234", "profile.write", 403, "scopes"),  # the token narrows the grant
    ],
    ids=[
        "expired",
        "audience",
        "issuer",
        "signature",
        "no-sub",
        "no-org",
        "bad-org",
        "huge-org",
        "foreign-org",
        "unknown-subject",
        "scope-not-granted",
        "token-narrows",
    ],
)
def test_jwt_failures(
    jwt_app: FastAPI, token_kwargs: dict[str, Any], org: str | None, scopes: str, status: int, field: str
) -> None:
    claims = dict(token_kwargs)  # the table is shared by both database runs: don't mutate it
    key = claims.pop("key", KEY)
    with TestClient(jwt_app) as client:
        r = client.post("/cdp/v1/users", json=BODY, headers=_headers(_token(key, **claims), org, scopes))
        assert_error(r, status, field)


def test_body_org_must_match_the_header_org(jwt_app: FastAPI) -> None:
    with TestClient(jwt_app) as client:
        r = client.post("/cdp/v1/users", json={**BODY, "orgId": 999}, headers=_headers(_token()))
        assert_error(r, 403, "orgId")


def test_jwt_without_configuration_is_refused(client: TestClient) -> None:
    assert_error(client.post("/cdp/v1/users", json=BODY, headers=_headers(_token())), 401, "Authorization")


def test_jwt_settings_come_together() -> None:
    with pytest.raises(SettingsError, match="PROFILEHUB_JWT_AUDIENCE"):
        Settings(jwt_issuer=ISSUER, jwt_jwks="/nonexistent")
    with pytest.raises(SettingsError, match="no such file"):
        Settings(jwt_issuer=ISSUER, jwt_audience=AUDIENCE, jwt_jwks="/nonexistent/jwks.json")
