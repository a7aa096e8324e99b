"""The OpenAPI document and the interactive docs describe every endpoint accurately."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from profilehub.ratelimit import set_rate_limit
from tests.conftest import OrgFixture

CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
CDP_ENDPOINTS = {
    "/cdp/v1/users": ("WriteUserRequest", "profile.write"),
    "/cdp/v1/users/_search": ("SearchUsersRequest", "profile.read"),
    "/cdp/v1/users/_delete": ("DeleteUsersRequest", "profile.delete"),
    "/cdp/v1/users/_explain": ("WriteUserRequest", "profile.read"),
    "/cdp/v1/users/_unmerge": ("UnmergeRequest", "profile.write"),
    "/cdp/v1/users/_unsuppress": ("UnsuppressRequest", "profile.delete"),
}


@pytest.fixture
def spec(client: TestClient) -> dict:  # type: ignore[type-arg]
    r = client.get("/openapi.json")
    assert r.status_code == 200
    return dict(r.json())


@pytest.mark.parametrize("path", sorted(CDP_ENDPOINTS))
def test_cdp_endpoints_are_documented(spec: dict, path: str) -> None:  # type: ignore[type-arg]
    model, scope = CDP_ENDPOINTS[path]
    op = spec["paths"][path]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(model)
    assert {"400", "401", "403", "413"} <= set(op["responses"])
    assert op["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"apikey": []} in op["security"]
    headers = [p for p in op["parameters"] if p["in"] == "header"]
    assert any(p["name"] == "scopes" and scope in p["description"] for p in headers)


def test_documented_schemas_match_the_bodies(spec: dict) -> None:  # type: ignore[type-arg]
    schemas = spec["components"]["schemas"]
    assert set(schemas["WriteUserRequest"]["required"]) == {"orgId", "region", "upsert"}
    assert set(schemas["WriteUserRequest"]["properties"]) == {"orgId", "region", "ids", "upsert", "ucid"}
    assert set(schemas["Profile"]["properties"]) == {
        "ucid",
        "region",
        "created_ts",
        "updated_ts",
        "profile",
        "mkt_preferences",
        "consent",
        "ids",
    }
    assert set(schemas["DeleteUsersResponse"]["properties"]) == {
        "ucids",
        "deletedProfiles",
        "profilesNotFound",
        "deletedPeople",
        "suppressedIds",
        "receiptId",
    }
    assert set(schemas["ErrorBody"]["properties"]) == {"success", "status", "message", "errors"}


def test_the_documented_example_is_accepted(client: TestClient, spec: dict, org: object) -> None:  # type: ignore[type-arg]
    example = spec["components"]["schemas"]["WriteUserRequest"]["examples"][0]
    r = client.post("/cdp/v1/users", json=example, headers=org.headers())  # type: ignore[attr-defined]
    assert r.status_code == 200


def test_interactive_docs_are_served_without_a_cdn(client: TestClient) -> None:
    import re

    r = client.get("/docs")
    assert r.status_code == 200 and "/openapi.json" in r.text
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', r.text)
    assert len(assets) == 2 and all(a.startswith("/") for a in assets), assets
    for asset in assets:
        served = client.get(asset)
        assert served.status_code == 200 and len(served.content) > 10_000, asset


def test_no_route_documents_an_error_shape_it_does_not_send(spec: dict) -> None:  # type: ignore[type-arg]
    assert "HTTPValidationError" not in str(spec)
    for path, ops in spec["paths"].items():
        for op in ops.values():
            for status, response in op["responses"].items():
                if status.startswith(("4", "5")):
                    assert response["content"]["application/json"]["schema"]["$ref"].endswith("ErrorBody"), (
                        path,
                        status,
                    )


def test_success_schemas_are_the_models_alone(spec: dict) -> None:  # type: ignore[type-arg]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                assert not ("$ref" in schema and "type" in schema), (method, path, status, schema)


def _operations(spec: dict) -> list[tuple[str, str, dict]]:  # type: ignore[type-arg]
    return [(path, method, op) for path, ops in spec["paths"].items() for method, op in ops.items()]


def test_every_path_parameter_is_described(spec: dict) -> None:  # type: ignore[type-arg]
    for path, method, op in _operations(spec):
        for param in op.get("parameters", []):
            if param["in"] == "path":
                assert param.get("description"), (method, path, param["name"])


def test_every_route_with_a_body_declares_413_and_415_and_every_route_503(spec: dict) -> None:  # type: ignore[type-arg]
    for path, method, op in _operations(spec):
        expected = {"503"} | ({"413", "415"} if "requestBody" in op else set())
        assert expected <= set(op["responses"]), (method, path, sorted(op["responses"]))


def test_the_headers_sent_are_declared(spec: dict) -> None:  # type: ignore[type-arg]
    for path, method, op in _operations(spec):
        for status, response in op["responses"].items():
            assert "X-Request-Id" in response.get("headers", {}), (method, path, status)
    cdp_write = spec["paths"]["/cdp/v1/users"]["post"]["responses"]["200"]["headers"]
    assert "X-Profilehub-Notices" in cdp_write
    for path in ("/v2/crm/people", "/v2/crm/companies", "/v2/crm/{objectSlug}"):
        for status in ("200", "201"):
            headers = spec["paths"][path]["put"]["responses"][status]["headers"]
            assert headers["X-Profilehub-Matches"]["schema"]["type"] == "integer", (path, status)
            assert "X-Profilehub-Notices" in headers, (path, status)
    for path in ("/v2/crm/people/{id}", "/v2/crm/companies/{id}"):
        assert "X-Profilehub-Notices" in spec["paths"][path]["patch"]["responses"]["200"]["headers"]


def test_the_cdp_bulk_items_are_documented_as_write_bodies(spec: dict) -> None:  # type: ignore[type-arg]
    body = spec["paths"]["/cdp/v1/users/_bulk"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    assert body["type"] == "array" and body["maxItems"] == 1000
    assert body["items"] == {"$ref": "#/components/schemas/WriteUserRequest"}


def test_get_one_profile_is_documented_as_a_single_profile(spec: dict) -> None:  # type: ignore[type-arg]
    op = spec["paths"]["/cdp/v1/users/{ucid}"]["get"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Profile"
    }
    params = {(p["in"], p["name"]): p for p in op["parameters"]}
    assert params["query", "orgId"]["required"] and not params["query", "region"].get("required")
    assert params["path", "ucid"]["required"]
    assert {"apikey": []} in op["security"] and "profile.read" in params["header", "scopes"]["description"]
    assert {"400", "401", "403", "404", "405"} <= set(op["responses"])


def test_the_cdp_change_feed_is_documented(spec: dict) -> None:  # type: ignore[type-arg]
    op = spec["paths"]["/cdp/v1/changes"]["get"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ChangesPage")
    assert {"400", "401", "403"} <= set(op["responses"])
    assert {"apikey": []} in op["security"]
    query = {p["name"]: p for p in op["parameters"] if p["in"] == "query"}
    assert set(query) == {"orgId", "after", "limit", "wait", "region"}
    assert all(p.get("description") for p in query.values())


# --- operations: rate limits, idempotency keys, overload (issue 15) ---

API_PREFIXES = ("/cdp/v1/", "/v2/crm/")
KEYED_WRITES = {
    ("post", "/cdp/v1/users"),
    ("post", "/cdp/v1/users/_bulk"),
    ("put", "/v2/crm/people"),
    ("post", "/v2/crm/people"),
    ("put", "/v2/crm/people/_bulk"),
    ("put", "/v2/crm/companies"),
    ("post", "/v2/crm/companies"),
    ("put", "/v2/crm/{objectSlug}"),
    ("post", "/v2/crm/{objectSlug}"),
}


def _headers(spec: dict, response: dict) -> dict:  # type: ignore[type-arg]
    """A response's headers with ``$ref``s resolved."""
    out = {}
    for name, header in response.get("headers", {}).items():
        if "$ref" in header:
            header = spec["components"]["headers"][header["$ref"].rsplit("/", 1)[1]]
        out[name] = header
    return out


def test_every_api_route_declares_its_429_and_503_with_when_to_retry(spec: dict) -> None:  # type: ignore[type-arg]
    api = [(path, method, op) for path, method, op in _operations(spec) if path.startswith(API_PREFIXES)]
    assert len(api) >= 25
    for path, method, op in api:
        too_many = _headers(spec, op["responses"]["429"])
        for name in ("Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"):
            assert too_many[name]["required"] is True, (method, path, name)
        assert _headers(spec, op["responses"]["503"])["Retry-After"]["required"] is True, (method, path)
        for status, response in op["responses"].items():
            # A limited org's every answer carries them: declared, not promised.
            assert _headers(spec, response)["RateLimit-Remaining"]["required"] is (status == "429")


def test_the_writes_that_honour_an_idempotency_key_declare_it(spec: dict) -> None:  # type: ignore[type-arg]
    for path, method, op in _operations(spec):
        declared = [p for p in op.get("parameters", []) if p["name"] == "Idempotency-Key"]
        if (method, path) not in KEYED_WRITES:
            assert declared == [], (method, path)  # DELETE, PATCH, objects/...: the key is ignored
            continue
        [param] = declared
        assert param["in"] == "header" and param["required"] is False
        assert param["schema"]["maxLength"] == 255
        assert "in flight" not in op["responses"]["409"]["description"]
        assert "Idempotency-Key" in op["responses"]["409"]["description"], (method, path)
        assert "Idempotency-Key" in op["responses"]["422"]["description"], (method, path)
        assert _headers(spec, op["responses"]["409"])["Retry-After"]["required"] is False
        for status, response in op["responses"].items():
            if status.startswith("2"):
                assert _headers(spec, response)["Idempotent-Replayed"]["required"] is False, (path, status)


def test_rate_limit_and_idempotency_answers_conform_to_the_document(
    app: FastAPI, client: TestClient, org: OrgFixture
) -> None:
    """Real 200, replayed 200, 422 and 429 answers, checked by schemathesis against the document:
    status declared, every required header present, bodies of the declared schema."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    write = schema["/cdp/v1/users"]["POST"]
    headers = {**org.headers(), "Idempotency-Key": "order-17"}
    body = {"orgId": org.org_id, "region": "EU", "ids": {"email": "jane@acme.com"}, "upsert": {}}

    def call(sent: dict, **extra: str) -> Any:
        case = write.Case(body=sent, headers={**headers, **extra}, media_type="application/json")
        response = case.call()
        case.validate_response(response, checks=CONFORMANCE)
        return response

    def header(response: Any, name: str) -> str | None:
        values = response.headers.get(name.lower())  # schemathesis: lower-case names, lists
        return values[0] if values else None

    first = call(body)
    assert first.status_code == 200 and header(first, "Idempotent-Replayed") is None
    again = call(body)
    assert again.status_code == 200 and header(again, "Idempotent-Replayed") == "true"
    assert again.json() == first.json()
    changed = call({**body, "ids": {"email": "john@acme.com"}})
    assert changed.status_code == 422 and "Idempotency-Key" in changed.json()["message"]
    app.state.db.write(lambda c: set_rate_limit(c, org.org_id, 1, None))
    app.state.rate_limiter.limits.invalidate()
    app.state.rate_limiter.clock = lambda: 1_800_000_000.5  # one second for the whole burst
    limited = [call(body, **{"Idempotency-Key": f"k{i}"}) for i in range(2)]
    assert [r.status_code for r in limited] == [200, 429]
    assert header(limited[0], "RateLimit-Remaining") == "0"
    assert header(limited[1], "Retry-After") == "1" and header(limited[1], "RateLimit-Limit") == "1"
