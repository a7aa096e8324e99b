"""The OpenAPI document describes every CRM route with its real request and answer schemas."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from profilehub.crm.models import VENDOR_PERSON_EXAMPLE
from tests.conftest import OrgFixture

# path -> {method: (request schema or None, success status, answer schema)}
CRM_ROUTES: dict[str, dict[str, tuple[str | None, str, str]]] = {
    "/v2/crm/people": {
        "put": ("PersonWrite", "201", "PersonAnswer"),
        "post": ("PersonWrite", "201", "PersonAnswer"),
        "get": (None, "200", "PeoplePage"),
    },
    "/v2/crm/people/_bulk": {"put": ("BulkPeopleWrite", "200", "BulkAnswer")},
    "/v2/crm/people/{id}": {
        "get": (None, "200", "PersonAnswer"),
        "patch": ("PersonWrite", "200", "PersonAnswer"),
        "delete": (None, "200", "DeletedAnswer"),
    },
    "/v2/crm/companies": {
        "put": ("CompanyWrite", "201", "CompanyAnswer"),
        "post": ("CompanyWrite", "201", "CompanyAnswer"),
        "get": (None, "200", "CompaniesPage"),
    },
    "/v2/crm/companies/{id}": {
        "get": (None, "200", "CompanyAnswer"),
        "patch": ("CompanyWrite", "200", "CompanyAnswer"),
        "delete": (None, "200", "DeletedAnswer"),
    },
    "/v2/crm/objects": {
        "get": (None, "200", "ObjectsAnswer"),
        "post": ("ObjectCreate", "201", "ObjectAnswer"),
    },
    "/v2/crm/objects/{slug}": {"get": (None, "200", "ObjectAnswer")},
    "/v2/crm/changes": {"get": (None, "200", "ChangesPage")},
    "/v2/crm/objects/{slug}/attributes": {"post": ("AttributeCreate", "201", "AttributeAnswer")},
    "/v2/crm/objects/{slug}/attributes/{key}": {"patch": ("AttributeUpdate", "200", "AttributeAnswer")},
    "/v2/crm/{objectSlug}": {
        "put": ("", "201", "RecordAnswer"),
        "post": ("", "201", "RecordAnswer"),
        "get": (None, "200", "RecordsPage"),
    },
    "/v2/crm/{objectSlug}/{id}": {
        "get": (None, "200", "RecordAnswer"),
        "patch": ("", "200", "RecordAnswer"),
        "delete": (None, "200", "DeletedAnswer"),
    },
}


@pytest.fixture
def spec(client: TestClient) -> dict[str, Any]:
    return dict(client.get("/openapi.json").json())


def test_every_crm_route_is_documented(spec: dict[str, Any]) -> None:
    documented = {p: set(ops) for p, ops in spec["paths"].items() if p.startswith("/v2/crm")}
    assert documented == {p: set(ops) for p, ops in CRM_ROUTES.items()}


@pytest.mark.parametrize(("path", "method"), [(p, m) for p, ops in CRM_ROUTES.items() for m in ops])
def test_each_route_has_its_schemas_scope_and_errors(spec: dict[str, Any], path: str, method: str) -> None:
    request, status, answer = CRM_ROUTES[path][method]
    op = spec["paths"][path][method]
    assert op["responses"][status]["content"]["application/json"]["schema"]["$ref"].endswith(f"/{answer}")
    assert {"401", "403", "422"} <= set(op["responses"])
    assert {"HTTPBearer": []} in op["security"]
    if request is None:
        assert "requestBody" not in op
    elif request:
        assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(f"/{request}")
    else:  # records: a flat object of attribute key to value
        assert op["requestBody"]["content"]["application/json"]["schema"]["type"] == "object"


# The upserts answer 201 or 200; everything else exactly the one code in CRM_ROUTES.
UPSERTS = {("/v2/crm/people", "put"), ("/v2/crm/companies", "put"), ("/v2/crm/{objectSlug}", "put")}


@pytest.mark.parametrize(("path", "method"), [(p, m) for p, ops in CRM_ROUTES.items() for m in ops])
def test_the_documented_success_codes_are_exactly_the_ones_sent(
    spec: dict[str, Any], path: str, method: str
) -> None:
    """No default ``200`` beside a create's ``201``, and every success answer is its model alone
    (not also ``{"type": "string"}``)."""
    _, status, answer = CRM_ROUTES[path][method]
    responses = spec["paths"][path][method]["responses"]
    expected = {"200", "201"} if (path, method) in UPSERTS else {status}
    assert {code for code in responses if code.startswith("2")} == expected
    for code in expected:
        assert responses[code]["content"] == {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{answer}"}}
        }


def test_a_create_answers_the_documented_201(client: TestClient, org: OrgFixture) -> None:
    h = org.bearer
    sent = [
        client.post("/v2/crm/people", json={"firstName": "A"}, headers=h),
        client.post("/v2/crm/companies", json={"name": "A"}, headers=h),
        client.post("/v2/crm/objects", json={"slug": "deals", "singularName": "D", "pluralName": "Ds"}, headers=h),
        client.post("/v2/crm/objects/deals/attributes", json={"type": "text", "label": "Code"}, headers=h),
        client.post("/v2/crm/deals", json={"code": "D-1"}, headers=h),
    ]  # fmt: skip
    assert [r.status_code for r in sent] == [201] * 5, [r.text for r in sent]


def test_person_schema_lists_every_vendor_field(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert set(schemas["Person"]["properties"]) == {
        "id", "firstName", "lastName", "salutation", "emails", "jobTitle", "description", "phoneNumber",
        "primaryLocation", "avatarUrl", "company", "socials", "customAttributes", "createdAt", "updatedAt",
        "ucid",  # the CDP profile the person is linked to (docs/crm.md)
    }  # fmt: skip
    assert set(VENDOR_PERSON_EXAMPLE) <= set(schemas["PersonWrite"]["properties"])


def test_the_documented_person_examples_are_accepted(
    client: TestClient, spec: dict[str, Any], org: OrgFixture
) -> None:
    for example in spec["components"]["schemas"]["PersonWrite"]["examples"]:
        r = client.put("/v2/crm/people?matchingAttribute=email", json=example, headers=org.bearer)
        assert r.status_code in (200, 201), r.text


def test_the_readme_tour_sends_the_vendor_example_verbatim() -> None:
    """The README's CRM tour (run end to end by tests/test_readme.py) pastes the vendor's body as is."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Tour: the CRM API", 1)[1].split("\n## ", 1)[0]
    pasted = re.search(r"VENDOR_EXAMPLE='(.*?)'\n", section, flags=re.S)
    assert pasted is not None
    assert json.loads(pasted.group(1)) == VENDOR_PERSON_EXAMPLE
    assert section.count('--data "$VENDOR_EXAMPLE"') == 2  # 201, then 200
    assert "matchingAttribute=email" in section


def test_bulk_items_are_documented_as_person_bodies(spec: dict[str, Any]) -> None:
    people = spec["components"]["schemas"]["BulkPeopleWrite"]["properties"]["people"]
    assert people["items"] == {"$ref": "#/components/schemas/PersonWrite"} and people["maxItems"] == 1000
