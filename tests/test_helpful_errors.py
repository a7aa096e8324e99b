"""Errors that say what to do: a trailing slash, a wrong method, space-separated scopes, `region` in
a search, a key of the other dialect, a bare array to the CRM `_bulk`."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from profilehub.cli import main
from tests.conftest import OrgFixture, assert_error

WRITE = {"orgId": 1234, "region": "EU", "ids": {"crm_id": "c1"}, "upsert": {"profile": {"a": 1}}}


@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("POST", "/cdp/v1/users/", "/cdp/v1/users"),
        ("POST", "/cdp/v1/users/_search/", "/cdp/v1/users/_search"),
        ("GET", "/v2/crm/people/", "/v2/crm/people"),
        ("GET", "/v2/crm/people/123/", "/v2/crm/people/{id}"),
    ],
)
def test_a_trailing_slash_is_a_404_naming_the_route(
    client: TestClient, org: OrgFixture, method: str, path: str, route: str
) -> None:
    headers = {**org.headers(), **org.bearer}
    r = client.request(method, path, json=WRITE, headers=headers, follow_redirects=False)
    body = assert_error(r, 404, "path")
    assert route in body["message"] and "trailing slash" in body["message"]
    assert "location" not in r.headers


def test_an_unknown_path_is_a_404_in_the_error_shape(client: TestClient) -> None:
    body = assert_error(client.get("/cdp/v1/nothing"), 404, "path")
    assert "/docs" in body["message"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/cdp/v1/users", "POST"),
        ("DELETE", "/v2/crm/people", "GET, HEAD, POST, PUT"),
        ("POST", "/v2/crm/people/{id}", "DELETE, GET, HEAD, PATCH"),
        ("GET", "/v2/crm/people/_bulk", None),  # a GET of person "_bulk": not a 405
        ("POST", "/v2/crm/objects/deals/attributes/code", "PATCH"),
        # The console's 405s are pages: test_console_forms.py.
    ],
)
def test_a_405_names_every_allowed_method(
    client: TestClient, org: OrgFixture, method: str, path: str, allowed: str | None
) -> None:
    r = client.request(method, path.replace("{id}", "p1"), headers=org.bearer, json={})
    if allowed is None:
        assert r.status_code == 404
        return
    body = assert_error(r, 405, "method")
    assert r.headers["Allow"] == allowed
    assert f"allowed: {allowed}" in body["message"] and method in body["message"]


@pytest.mark.parametrize("scopes", ["profile.read profile.write", "profile.write  profile.read"])
def test_space_separated_scopes_are_told_to_use_commas(
    client: TestClient, org: OrgFixture, scopes: str
) -> None:
    r = client.post("/cdp/v1/users", json=WRITE, headers={"apikey": org.apikey, "scopes": scopes})
    body = assert_error(r, 403, "scopes")
    assert "commas" in body["message"], body


def test_space_separated_scopes_on_the_command_line_are_told_to_use_commas(
    database_url: str, org: OrgFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)
    result = CliRunner().invoke(
        main, ["apikey", "create", "--org-id", "1234", "--scopes", "profile.read profile.write"]
    )
    assert result.exit_code != 0 and "commas" in result.output, result.output


def test_region_in_a_search_suggests_regions(client: TestClient, org: OrgFixture) -> None:
    r = client.post(
        "/cdp/v1/users/_search",
        json={"orgId": 1234, "region": "EU", "search": {"crm_id": ["c1"]}},
        headers=org.headers(),
    )
    body = assert_error(r, 400, "region")
    assert "did you mean regions?" in body["errors"]["region"], body


def test_regions_in_a_write_suggests_region(client: TestClient, org: OrgFixture) -> None:
    bad = {"orgId": 1234, "regions": ["EU"], "upsert": {}, "ids": {"crm_id": "c1"}}
    body = assert_error(client.post("/cdp/v1/users", json=bad, headers=org.headers()), 400, "regions")
    assert "did you mean region?" in body["errors"]["regions"], body
    [item] = client.post("/cdp/v1/users/_bulk", json=[bad], headers=org.headers()).json()
    assert "did you mean region?" in item["error"]["errors"]["regions"], item


def test_a_cdp_apikey_sent_as_a_crm_bearer_says_so(client: TestClient, org: OrgFixture) -> None:
    r = client.get("/v2/crm/people", headers={"Authorization": f"Bearer {org.apikey}"})
    body = assert_error(r, 401, "Authorization")
    assert "CDP apikey" in body["message"] and "CRM token" in body["message"], body


def test_a_crm_token_sent_to_the_cdp_api_says_so(client: TestClient, org: OrgFixture) -> None:
    as_apikey = client.post(
        "/cdp/v1/users", json=WRITE, headers={"apikey": org.token, "scopes": "profile.write"}
    )
    body = assert_error(as_apikey, 401, "apikey")
    assert "CRM token" in body["message"] and "CDP apikey" in body["message"], body
    as_bearer = client.post(
        "/cdp/v1/users", json=WRITE, headers={**org.bearer, "orgId": "1234", "scopes": "profile.write"}
    )
    body = assert_error(as_bearer, 401, "Authorization")
    assert "CRM token" in body["message"], body


def test_a_bare_array_to_the_crm_bulk_names_the_people_object(client: TestClient, org: OrgFixture) -> None:
    r = client.put("/v2/crm/people/_bulk", json=[{"emails": ["a@example.com"]}], headers=org.bearer)
    body = assert_error(r, 422, "body")
    assert '{"people": [...]}' in body["message"], body
