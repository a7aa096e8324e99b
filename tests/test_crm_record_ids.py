"""CRM record ids in addresses: a UUID is read in any case, as a person's `companyId` and the CDP
dialect's ucids are; anything else still names no record."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.conftest import OrgFixture, assert_error
from tests.test_crm_objects import add_attribute, create_object


def _made(client: TestClient, org: OrgFixture, kind: str) -> tuple[str, str]:
    """(the collection's address, the id of a record made in it)."""
    if kind == "people":
        r = client.post(
            "/v2/crm/people", json={"firstName": "Ann", "emails": ["ann@x.example"]}, headers=org.bearer
        )
        return "/v2/crm/people", r.json()["person"]["id"]
    if kind == "companies":
        r = client.post(
            "/v2/crm/companies", json={"name": "Acme", "domain": "acme.example"}, headers=org.bearer
        )
        return "/v2/crm/companies", r.json()["company"]["id"]
    create_object(client, org)
    add_attribute(client, org, {"type": "number", "label": "Inventory Count", "isRequired": True})
    r = client.post("/v2/crm/products", json={"inventory_count": 1}, headers=org.bearer)
    return "/v2/crm/products", r.json()["record"]["id"]


@pytest.mark.parametrize("kind", ["people", "companies", "products"])
def test_a_record_id_in_capitals_names_the_same_record(
    client: TestClient, org: OrgFixture, kind: str
) -> None:
    base, made = _made(client, org, kind)
    upper = made.upper()
    assert upper != made
    got = client.get(f"{base}/{upper}", headers=org.bearer)
    assert got.status_code == 200, got.text
    assert got.json() == client.get(f"{base}/{made}", headers=org.bearer).json()
    field = {"people": "jobTitle", "companies": "name", "products": "inventory_count"}[kind]
    value = {"people": "CEO", "companies": "Acme Corp", "products": 7}[kind]
    patched = client.patch(f"{base}/{upper}", json={field: value}, headers=org.bearer)
    assert patched.status_code == 200, patched.text
    [answer] = [v for k, v in patched.json().items() if isinstance(v, dict)]
    assert answer["id"] == made
    assert client.delete(f"{base}/{upper}", headers=org.bearer).status_code == 200
    assert_error(client.get(f"{base}/{made}", headers=org.bearer), 404, "id")


def test_an_id_that_is_no_uuid_still_names_no_record(client: TestClient, org: OrgFixture) -> None:
    _made(client, org, "people")
    assert_error(client.get("/v2/crm/people/NOT-A-UUID", headers=org.bearer), 404, "id")
