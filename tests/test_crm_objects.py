"""Custom objects, attributes (keys, immutability, types, uniqueness) and records of any object."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import OrgFixture, assert_error

OBJECTS = "/v2/crm/objects"
PRODUCT = {"slug": "products", "singularName": "Product", "pluralName": "Products"}


def create_object(client: TestClient, org: OrgFixture, slug: str = "products") -> dict[str, Any]:
    r = client.post(OBJECTS, json={**PRODUCT, "slug": slug}, headers=org.bearer)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()["object"]
    return body


def add_attribute(client: TestClient, org: OrgFixture, body: dict[str, Any], slug: str = "products") -> Any:
    return client.post(f"{OBJECTS}/{slug}/attributes", json=body, headers=org.bearer)


def test_create_and_get_an_object(client: TestClient, org: OrgFixture) -> None:
    made = create_object(client, org)
    assert made["slug"] == "products" and made["isStandard"] is False and made["isActive"] is True
    assert [a["key"] for a in made["attributes"]] == ["id", "created_at", "updated_at"]
    got = client.get(f"{OBJECTS}/products", headers=org.bearer).json()
    assert got == {"success": True, "status": 200, "object": made}
    people = client.get(f"{OBJECTS}/people", headers=org.bearer).json()["object"]
    assert people["isStandard"] is True and "first_name" in [a["key"] for a in people["attributes"]]
    slugs = [o["slug"] for o in client.get(OBJECTS, headers=org.bearer).json()["objects"]]
    assert slugs == ["people", "companies", "products"]


@pytest.mark.parametrize(
    ("slug", "status"),
    [
        ("abc", 201),
        ("a" * 60, 201),
        ("deal-stages_2", 201),
        ("ab", 400),
        ("a" * 61, 400),
        ("Deals", 400),
        ("deal stages", 400),
        ("-deals", 400),
        ("people", 400),
        ("companies", 400),
        ("objects", 400),
    ],
)
def test_slug_rules(client: TestClient, org: OrgFixture, slug: str, status: int) -> None:
    r = client.post(OBJECTS, json={**PRODUCT, "slug": slug}, headers=org.bearer)
    if status == 201:
        assert r.status_code == 201, r.text
    else:
        assert_error(r, status, "slug")


def test_slugs_are_unique_and_unknown_objects_are_404(client: TestClient, org: OrgFixture) -> None:
    create_object(client, org)
    assert_error(client.post(OBJECTS, json=PRODUCT, headers=org.bearer), 409, "slug")
    assert_error(client.get(f"{OBJECTS}/nothing", headers=org.bearer), 404, "objectSlug")
    assert_error(add_attribute(client, org, {"type": "text", "label": "X"}, "nothing"), 404, "objectSlug")
    assert_error(client.get("/v2/crm/nothing", headers=org.bearer), 404, "objectSlug")


def test_attribute_keys_are_snake_case_with_suffixes(client: TestClient, org: OrgFixture) -> None:
    create_object(client, org)
    keys = [
        add_attribute(client, org, {"type": "text", "label": label}).json()["attribute"]["key"]
        for label in ["Product Name", "product name", "Product-Name!", "ID", "Created At", "2nd Colour"]
    ]
    assert keys == [
        "product_name",
        "product_name_2",
        "product_name_3",
        "id_2",
        "created_at_2",
        "attr_2nd_colour",
    ]
    # On people, the standard fields' keys are taken too.
    r = add_attribute(client, org, {"type": "text", "label": "Job Title"}, "people")
    assert r.json()["attribute"]["key"] == "job_title_2"


def test_attribute_type_key_and_uniqueness_are_immutable(client: TestClient, org: OrgFixture) -> None:
    create_object(client, org)
    add_attribute(client, org, {"type": "select", "label": "Stage", "options": [{"value": "New"}]})
    url = f"{OBJECTS}/products/attributes/stage"
    for field, value in [("type", "text"), ("key", "phase"), ("isUnique", True)]:
        assert_error(client.patch(url, json={field: value}, headers=org.bearer), 400, field)
    r = client.patch(
        url,
        json={"label": "Phase", "options": [{"id": 1, "value": "New"}, {"value": "Won"}]},
        headers=org.bearer,
    )
    assert r.status_code == 200, r.text
    attribute = r.json()["attribute"]
    assert attribute["key"] == "stage" and attribute["label"] == "Phase" and attribute["type"] == "select"
    assert [o["id"] for o in attribute["options"]] == [1, 2]
    assert_error(
        client.patch(f"{OBJECTS}/products/attributes/nope", json={"label": "x"}, headers=org.bearer), 404
    )
    assert_error(
        client.patch(f"{OBJECTS}/people/attributes/first_name", json={"label": "x"}, headers=org.bearer), 400
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "colour", "label": "X"}, "type"),
        ({"type": "text", "label": ""}, "label"),
        ({"type": "date", "label": "X", "isUnique": True}, "isUnique"),
        ({"type": "select", "label": "X"}, "options"),
        ({"type": "select", "label": "X", "options": [{"value": "A"}, {"value": "A"}]}, "options.1"),
        ({"type": "relation", "label": "X"}, "relatedObjectSlug"),
        ({"type": "relation", "label": "X", "relatedObjectSlug": "nothing"}, "objectSlug"),
        (
            {"type": "relation", "label": "X", "relatedObjectSlug": "people", "relationType": "some"},
            "relationType",
        ),
        ({"type": "currency", "label": "X"}, "currency"),
        (
            {"type": "currency", "label": "X", "currency": "EUR", "currencyDisplay": "emoji"},
            "currencyDisplay",
        ),
        ({"type": "text", "label": "X", "validation": ["phone"]}, "validation"),
        # a JSON value of the wrong type is refused, not read as a flag or an id ("yes" was true)
        ({"type": "text", "label": "X", "isUnique": "yes"}, "isUnique"),
        ({"type": "text", "label": "X", "isRequired": 1}, "isRequired"),
        ({"type": "select", "label": "X", "options": [{"id": True, "value": "A"}]}, "options.0.id"),
    ],
)
def test_bad_attribute_definitions(
    client: TestClient, org: OrgFixture, body: dict[str, Any], field: str
) -> None:
    create_object(client, org)
    r = add_attribute(client, org, body)
    assert r.status_code in (400, 404, 422)
    assert_error(r, r.status_code, field)
    keys = [
        a["key"] for a in client.get(f"{OBJECTS}/products", headers=org.bearer).json()["object"]["attributes"]
    ]
    assert keys == ["id", "created_at", "updated_at"]


def test_flags_of_the_wrong_json_type_are_refused(client: TestClient, org: OrgFixture) -> None:
    r = client.post(OBJECTS, json={**PRODUCT, "isActive": "no"}, headers=org.bearer)
    assert_error(r, 422, "isActive")
    assert client.get(f"{OBJECTS}/products", headers=org.bearer).status_code == 404
    create_object(client, org)
    assert add_attribute(client, org, {"type": "text", "label": "SKU"}).status_code == 201
    r = client.patch(f"{OBJECTS}/products/attributes/sku", json={"isRequired": "yes"}, headers=org.bearer)
    assert_error(r, 422, "isRequired")
    sku = client.get(f"{OBJECTS}/products", headers=org.bearer).json()["object"]["attributes"][-1]
    assert sku["key"] == "sku" and sku["isRequired"] is False


TYPED = [
    # (attribute definition, good value, stored/answered value, bad value)
    ({"type": "text"}, "DRESS-001", "DRESS-001", "x" * 256),
    ({"type": "text"}, " padded ", "padded", 12),
    ({"type": "text", "validation": ["email"]}, "a@b.co", "a@b.co", "not mail"),
    ({"type": "number"}, 29, 29, "29"),
    ({"type": "number"}, 2.5, 2.5, True),
    ({"type": "number"}, -7, -7, 2**60),
    ({"type": "phone_number"}, "+1 415 555 0100", "+14155550100", "555"),
    ({"type": "date"}, "2025-06-01", "2025-06-01", "2025-13-01"),
    ({"type": "datetime"}, "2025-06-01T12:00:00+02:00", "2025-06-01T10:00:00+00:00", "yesterday"),
    ({"type": "datetime"}, "2025-06-01T12:00:00Z", "2025-06-01T12:00:00+00:00", 5),
    # In range as written, out of it in UTC (was a 500)
    (
        {"type": "datetime"},
        "9999-12-31T23:59:59+01:00",
        "9999-12-31T22:59:59+00:00",
        "9999-12-31T23:59:59-01:00",
    ),
    (
        {"type": "datetime"},
        "0001-01-01T00:00:00-01:00",
        "0001-01-01T01:00:00+00:00",
        "0001-01-01T00:00:00+01:00",
    ),
    ({"type": "checkbox"}, True, True, "yes"),
    (
        {"type": "select", "options": [{"value": "A"}, {"value": "B"}]},
        {"id": 2},
        {"id": 2, "value": "B"},
        {"id": 9},
    ),
    ({"type": "status", "options": [{"value": "Open"}]}, "Open", {"id": 1, "value": "Open"}, "Closed"),
    (
        {"type": "multiselect", "options": [{"value": "A"}, {"value": "B"}]},
        [{"id": 1}, {"id": 2}],
        [{"id": 1, "value": "A"}, {"id": 2, "value": "B"}],
        [{"id": 3}],
    ),
    ({"type": "rating"}, 5, 5, 6),
    (
        {"type": "user"},
        ["3c90c3cc-0d44-4b50-8888-8dd25736052a"],
        ["3c90c3cc-0d44-4b50-8888-8dd25736052a"],
        ["bob"],
    ),
    ({"type": "currency", "currency": "eur"}, 19.99, 19.99, "19.99"),
]


@pytest.mark.parametrize(("definition", "good", "answered", "bad"), TYPED)
def test_typed_values(
    client: TestClient, org: OrgFixture, definition: dict[str, Any], good: Any, answered: Any, bad: Any
) -> None:
    create_object(client, org)
    assert add_attribute(client, org, {**definition, "label": "Value"}).status_code == 201
    r = client.post("/v2/crm/products", json={"value": good}, headers=org.bearer)
    assert r.status_code == 201, r.text
    assert r.json()["record"]["attributes"] == {"value": answered}
    assert_error(client.post("/v2/crm/products", json={"value": bad}, headers=org.bearer), 400, "value")
    assert client.get("/v2/crm/products", headers=org.bearer).json()["pagination"]["total"] == 1


def test_relation_values_must_name_records_of_the_related_object(client: TestClient, org: OrgFixture) -> None:
    create_object(client, org)
    add_attribute(
        client,
        org,
        {"type": "relation", "label": "Buyer", "relatedObjectSlug": "people", "relationType": "many_to_one"},
    )
    person = client.post("/v2/crm/people", json={"firstName": "Jane"}, headers=org.bearer).json()["person"]
    other = client.post("/v2/crm/people", json={"firstName": "John"}, headers=org.bearer).json()["person"]
    r = client.post("/v2/crm/products", json={"buyer": [person["id"]]}, headers=org.bearer)
    assert r.status_code == 201 and r.json()["record"]["attributes"]["buyer"] == [person["id"]]
    missing = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
    assert_error(client.post("/v2/crm/products", json={"buyer": [missing]}, headers=org.bearer), 400, "buyer")
    r = client.post("/v2/crm/products", json={"buyer": [person["id"], other["id"]]}, headers=org.bearer)
    assert_error(r, 400, "buyer")


@pytest.mark.parametrize(
    ("definition", "value", "same"),
    [
        ({"type": "text"}, "SKU-1", "SKU-1"),
        ({"type": "number"}, 7, 7.0),
        ({"type": "phone_number"}, "+1 415 555 0100", "+14155550100"),
    ],
)
def test_unique_attributes_refuse_a_second_record(
    client: TestClient, org: OrgFixture, definition: dict[str, Any], value: Any, same: Any
) -> None:
    create_object(client, org)
    add_attribute(client, org, {**definition, "label": "Code", "isUnique": True})
    first = client.post("/v2/crm/products", json={"code": value}, headers=org.bearer).json()["record"]
    body = assert_error(client.post("/v2/crm/products", json={"code": same}, headers=org.bearer), 400, "code")
    assert first["id"] in body["message"]
    other = client.post("/v2/crm/products", json={}, headers=org.bearer).json()["record"]
    r = client.patch(f"/v2/crm/products/{other['id']}", json={"code": same}, headers=org.bearer)
    assert_error(r, 400, "code")
    # The record itself may keep and rewrite its own value.
    r = client.patch(f"/v2/crm/products/{first['id']}", json={"code": same}, headers=org.bearer)
    assert r.status_code == 200


def test_unique_custom_attributes_on_people(client: TestClient, org: OrgFixture) -> None:
    add_attribute(client, org, {"type": "text", "label": "Customer Id", "isUnique": True}, "people")
    client.post("/v2/crm/people", json={"firstName": "A", "customer_id": "C-1"}, headers=org.bearer)
    r = client.post(
        "/v2/crm/people",
        json={"firstName": "B", "customAttributes": {"customer_id": "C-1"}},
        headers=org.bearer,
    )
    assert_error(r, 400, "customAttributes.customer_id")


def test_records_upsert_read_update_delete(client: TestClient, org: OrgFixture) -> None:
    create_object(client, org)
    add_attribute(client, org, {"type": "text", "label": "SKU", "isUnique": True})
    add_attribute(client, org, {"type": "number", "label": "Price"})
    add_attribute(client, org, {"type": "number", "label": "Inventory Count", "isRequired": True})
    url = "/v2/crm/products?matchingAttribute=sku"
    r = client.put(url, json={"sku": "DRESS-001", "price": 29, "inventory_count": 150}, headers=org.bearer)
    assert r.status_code == 201, r.text
    record = r.json()["record"]
    assert record["objectSlug"] == "products"
    assert record["attributes"] == {"sku": "DRESS-001", "price": 29, "inventory_count": 150}
    r = client.put(url, json={"sku": "DRESS-001", "price": 35}, headers=org.bearer)
    assert r.status_code == 200 and r.json()["record"]["id"] == record["id"]
    assert r.json()["record"]["attributes"] == {"sku": "DRESS-001", "price": 35, "inventory_count": 150}
    assert_error(client.put(url, json={"price": 1, "inventory_count": 1}, headers=org.bearer), 400, "sku")
    assert_error(
        client.put("/v2/crm/products?matchingAttribute=colour", json={}, headers=org.bearer),
        400,
        "matchingAttribute",
    )
    assert_error(
        client.post("/v2/crm/products", json={"sku": "X"}, headers=org.bearer), 400, "inventory_count"
    )
    assert_error(
        client.post("/v2/crm/products", json={"inventory_count": 1, "id": "x"}, headers=org.bearer), 400, "id"
    )
    rec_url = f"/v2/crm/products/{record['id']}"
    assert client.get(rec_url, headers=org.bearer).json()["record"]["attributes"]["price"] == 35
    r = client.patch(rec_url, json={"inventory_count": None}, headers=org.bearer)
    assert_error(r, 400, "inventory_count")
    assert (
        client.patch(rec_url, json={"price": None}, headers=org.bearer).json()["record"]["attributes"][
            "price"
        ]
        is None
    )
    assert client.delete(rec_url, headers=org.bearer).status_code == 200
    assert_error(client.delete(rec_url, headers=org.bearer), 404, "id")
    # The deleted record's unique SKU is free again.
    assert (
        client.put(url, json={"sku": "DRESS-001", "inventory_count": 1}, headers=org.bearer).status_code
        == 201
    )


def test_record_matches_on_a_non_unique_attribute_update_the_oldest(
    client: TestClient, org: OrgFixture
) -> None:
    create_object(client, org)
    add_attribute(client, org, {"type": "text", "label": "Colour"})
    add_attribute(client, org, {"type": "number", "label": "Size"})
    ids = [
        client.post("/v2/crm/products", json={"colour": "red", "size": n}, headers=org.bearer).json()[
            "record"
        ]["id"]
        for n in range(3)
    ]
    r = client.put(
        "/v2/crm/products?matchingAttribute=colour", json={"colour": "red", "size": 9}, headers=org.bearer
    )
    assert r.status_code == 200 and r.json()["record"]["id"] == ids[0]
    assert r.headers["X-Profilehub-Matches"] == "3"
    found = client.get("/v2/crm/products", params={"search": "RED", "count": 2}, headers=org.bearer).json()
    assert found["pagination"]["total"] == 3 and len(found["collection"]) == 2


# The vendor's "Update a CRM object attribute" example, verbatim: one body with the settings of
# every type (options, relatedObjectLabel, currency), sent to a select attribute.
VENDOR_ATTRIBUTE_PATCH = {
    "label": "Status",
    "isRequired": True,
    "isArchived": False,
    "options": [{"value": "Active", "color": "success", "id": 1}],
    "relatedObjectLabel": "Contact Person",
    "currencyDisplay": "code",
    "currencyDecimal": False,
    "currencyGrouping": False,
}


def test_the_vendors_attribute_patch_example_updates_a_select(client: TestClient, org: OrgFixture) -> None:
    create_object(client, org)
    body = {"type": "select", "label": "Customer Status", "options": [{"value": "Lead"}, {"value": "Active"}]}
    assert add_attribute(client, org, body).status_code == 201
    r = client.patch(
        f"{OBJECTS}/products/attributes/customer_status", json=VENDOR_ATTRIBUTE_PATCH, headers=org.bearer
    )
    assert r.status_code == 200, r.text
    attribute = r.json()["attribute"]
    assert attribute["label"] == "Status" and attribute["isRequired"] is True
    assert attribute["options"] == [{"id": 1, "value": "Active", "color": "success"}]
    assert "currencyDisplay" not in attribute and "relatedObjectLabel" not in attribute
