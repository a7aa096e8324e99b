"""`GET /cdp/v1/users/{ucid}`: one profile by ucid, as search answers it; and CORS for browsers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from profilehub.app import create_app
from profilehub.config import Settings, SettingsError
from tests.conftest import OrgFixture, assert_error, make_org

U = "/cdp/v1/users"


def _write(client: TestClient, org: OrgFixture, ids: dict[str, str], region: str = "EU") -> dict[str, Any]:
    r = client.post(
        U, json={"orgId": org.org_id, "region": region, "upsert": {}, "ids": ids}, headers=org.headers()
    )
    assert r.status_code == 200, r.text
    return dict(r.json()[0])


def test_get_answers_the_profile_search_answers(client: TestClient, org: OrgFixture) -> None:
    written = _write(client, org, {"email": "ana@example.com", "crm_id": "c-1"})
    r = client.get(f"{U}/{written['ucid']}?orgId=1234", headers=org.headers("profile.read"))
    assert r.status_code == 200, r.text
    [searched] = client.post(
        f"{U}/_search", json={"orgId": 1234, "search": {"ucid": [written["ucid"]]}}, headers=org.headers()
    ).json()
    assert r.json() == searched == written
    upper = client.get(f"{U}/{written['ucid'].upper()}?orgId=1234&region=eu", headers=org.headers())
    assert upper.status_code == 200 and upper.json() == written


def test_a_merged_away_ucid_answers_the_profile_it_was_merged_into(
    client: TestClient, org: OrgFixture
) -> None:
    first = _write(client, org, {"email": "ana@example.com"})
    second = _write(client, org, {"crm_id": "c-2"})
    merged = _write(client, org, {"email": "ana@example.com", "crm_id": "c-2"})
    assert merged["ucid"] == first["ucid"] and merged["ids"]["linkedUcid"] == [second["ucid"]]
    r = client.get(f"{U}/{second['ucid']}?orgId=1234", headers=org.headers())
    assert r.status_code == 200 and r.json() == merged


def test_unknown_malformed_and_other_region_ucids(client: TestClient, org: OrgFixture) -> None:
    written = _write(client, org, {"crm_id": "c-3"}, region="UK")
    assert_error(client.get(f"{U}/{uuid.uuid4()}?orgId=1234", headers=org.headers()), 404, "ucid")
    assert_error(client.get(f"{U}/not-a-ucid?orgId=1234", headers=org.headers()), 400, "ucid")
    assert_error(
        client.get(f"{U}/{written['ucid']}?orgId=1234&region=EU", headers=org.headers()), 404, "ucid"
    )
    assert_error(
        client.get(f"{U}/{written['ucid']}?orgId=1234&region=XX", headers=org.headers()), 400, "region"
    )
    assert_error(client.get(f"{U}/{written['ucid']}", headers=org.headers()), 400, "orgId")


def test_get_needs_profile_read_and_the_keys_own_org(client: TestClient, org: OrgFixture, app: Any) -> None:
    written = _write(client, org, {"crm_id": "c-4"})
    url = f"{U}/{written['ucid']}"
    assert_error(client.get(f"{url}?orgId=1234", headers=org.headers("profile.write")), 403, "scopes")
    assert_error(client.get(f"{url}?orgId=1234"), 401, "apikey")
    other = make_org(app.state.db, org_id=99, regions=("EU",))
    assert_error(client.get(f"{url}?orgId=1234", headers=other.headers()), 403, "orgId")
    # Its own org does not hold that ucid: a 404, so a foreign ucid is not even confirmed to exist.
    assert_error(client.get(f"{url}?orgId=99", headers=other.headers()), 404, "ucid")


def test_get_of_an_action_path_is_a_405(client: TestClient, org: OrgFixture) -> None:
    r = client.get(f"{U}/_search?orgId=1234", headers=org.headers())
    assert_error(r, 405, "method")
    assert r.headers["Allow"] == "POST"


# --- CORS ---


@pytest.fixture
def cors_client(database_url: str) -> Iterator[tuple[TestClient, OrgFixture]]:
    app = create_app(Settings(database_url=database_url, cors_origins=("https://app.example.com",)))
    org = make_org(app.state.db)
    with TestClient(app) as client:
        yield client, org
    app.state.db.close()


def test_cors_lets_a_configured_origin_call_and_read_the_api(
    cors_client: tuple[TestClient, OrgFixture],
) -> None:
    client, org = cors_client
    origin = {"Origin": "https://app.example.com"}
    preflight = client.options(
        f"{U}/_search",
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "apikey,scopes",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
    assert {"apikey", "scopes"} <= set(preflight.headers["access-control-allow-headers"].lower().split(", "))
    r = client.post(
        f"{U}/_search", json={"orgId": 1234, "search": {"crm_id": ["x"]}}, headers={**org.headers(), **origin}
    )
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
    stranger = client.options(
        f"{U}/_search", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in stranger.headers


def test_cors_is_off_by_default(client: TestClient, org: OrgFixture) -> None:
    r = client.post(
        f"{U}/_search",
        json={"orgId": 1234, "search": {"crm_id": ["x"]}},
        headers={**org.headers(), "Origin": "https://app.example.com"},
    )
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_cors_origins_come_from_the_environment_and_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", "sqlite:///unused.db")
    monkeypatch.setenv("PROFILEHUB_CORS_ORIGINS", "https://a.example, http://localhost:3000")
    assert Settings.from_env().cors_origins == ("https://a.example", "http://localhost:3000")
    monkeypatch.setenv("PROFILEHUB_CORS_ORIGINS", "a.example/path")
    with pytest.raises(SettingsError, match="PROFILEHUB_CORS_ORIGINS"):
        Settings.from_env()
