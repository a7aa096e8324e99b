"""CRM input rules found by QA: one value per attribute, messages that start with their field,
RFC 5321 email addresses, and keys with NUL or lone surrogates answered with a 4xx, never a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from profilehub.crm.values import check_storable
from profilehub.errors import BadRequest
from tests.conftest import OrgFixture, assert_error

H_JSON = {"Content-Type": "application/json"}


def _attribute(client: TestClient, org: OrgFixture, slug: str, body: dict[str, Any]) -> str:
    r = client.post(f"/v2/crm/objects/{slug}/attributes", json=body, headers=org.bearer)
    assert r.status_code == 201, r.text
    key: str = r.json()["attribute"]["key"]
    return key


def _products(client: TestClient, org: OrgFixture) -> None:
    body = {"slug": "products", "singularName": "Product", "pluralName": "Products"}
    assert client.post("/v2/crm/objects", json=body, headers=org.bearer).status_code == 201
    _attribute(client, org, "products", {"type": "text", "label": "SKU"})


# --- one custom attribute, two values ---

TWICE = [
    # (flat value, value in customAttributes, accepted)
    ("X2", "X3", False),
    ("X2", "X2", True),
    ("X2", "  X2 ", True),  # the same value once trimmed
    (None, "X3", False),  # null (clear) beside a value is two different values
    (None, None, True),
]


@pytest.mark.parametrize("slug", ["people", "companies"])
@pytest.mark.parametrize(("flat", "nested", "accepted"), TWICE)
def test_one_attribute_given_twice_must_agree(
    client: TestClient, org: OrgFixture, slug: str, flat: Any, nested: Any, accepted: bool
) -> None:
    key = _attribute(client, org, slug, {"type": "text", "label": "ext_id_x"})
    names = {"people": {"firstName": "E3"}, "companies": {"name": "E3"}}[slug]
    body = {**names, key: flat, "customAttributes": {key: nested}}
    r = client.post(f"/v2/crm/{slug}", json=body, headers=org.bearer)
    if accepted:
        assert r.status_code == 201, r.text
        stored = r.json()["person" if slug == "people" else "company"]["customAttributes"][key]
        assert stored == (flat.strip() if isinstance(flat, str) else None)
    else:
        err = assert_error(r, 400, f"customAttributes.{key}")
        assert err["message"].startswith(f"customAttributes.{key}: ")
        assert set(err["errors"]) == {key, f"customAttributes.{key}"}
        assert client.get(f"/v2/crm/{slug}", headers=org.bearer).json()["pagination"]["total"] == 0


def test_given_twice_in_a_bulk_fails_only_that_record(client: TestClient, org: OrgFixture) -> None:
    key = _attribute(client, org, "people", {"type": "text", "label": "ext_id_x"})
    people = [
        {"firstName": "A", "emails": ["a@x.com"], key: "X2", "customAttributes": {key: "X3"}},
        {"firstName": "B", "emails": ["b@x.com"], key: "X4", "customAttributes": {key: "X4"}},
    ]
    r = client.put("/v2/crm/people/_bulk", json={"people": people}, headers=org.bearer)
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    assert first["success"] is False and first["status"] == 400 and key in first["errors"]
    assert second["status"] == 201 and second["person"]["customAttributes"][key] == "X4"


# --- every message starts with its field ---


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("POST", {"emails": ["no.name@x.com"]}),
        ("POST", {"firstName": "", "lastName": "  "}),
        ("PATCH", {"firstName": None, "lastName": None}),
    ],
)
def test_names_required_names_first_and_last_name(
    client: TestClient, org: OrgFixture, method: str, body: dict[str, Any]
) -> None:
    path = "/v2/crm/people"
    if method == "PATCH":
        made = client.post(path, json={"firstName": "A", "lastName": "B"}, headers=org.bearer)
        path = f"{path}/{made.json()['person']['id']}"
    err = assert_error(client.request(method, path, json=body, headers=org.bearer), 400, "firstName")
    assert err["message"] == "firstName: firstName or lastName is required"
    assert set(err["errors"]) == {"firstName", "lastName"}


def test_messages_start_with_the_field_even_when_a_value_starts_like_it(
    client: TestClient, org: OrgFixture
) -> None:
    """A value or text that merely begins with the field's name still gets the ``<field>: `` prefix."""
    h = org.bearer
    _products(client, org)
    key = _attribute(client, org, "products", {"type": "number", "label": "E"})
    assert key == "e"
    cases = [
        (client.post("/v2/crm/products", json={"e": "x"}, headers=h), 400, "e"),  # "expected a number"
        (client.post("/v2/crm/people", json={"firstName": "A", "emails": ["emails@x.com"]}, headers=h), 201, None),
        (client.post("/v2/crm/people", json={"firstName": "B", "emails": ["emails@x.com"]}, headers=h), 409, "emails"),
        (client.post("/v2/crm/companies", json={"name": "A", "domain": "domain.com"}, headers=h), 201, None),
        (client.post("/v2/crm/companies", json={"name": "B", "domain": "domain.com"}, headers=h), 409, "domain"),
    ]  # fmt: skip
    for response, status, field in cases:
        assert response.status_code == status, response.text
        if field is not None:
            err = assert_error(response, status, field)
            assert err["message"].startswith(f"{field}: "), err


# --- email addresses ---

DOMAIN_186 = "b" * 60 + "." + "c" * 60 + "." + "d" * 60 + ".com"
BAD_EMAILS = [
    "a" * 300 + "@x.com",  # local part over 64 (RFC 5321)
    "a" * 65 + "@x.com",
    "a" * 64 + "@" + DOMAIN_186 + "dddd",  # 255 characters in all
    "a b@x.com",
    "a@x .com",
    "a\x00b@x.com",
    "a\x01b@x.com",
    "a\x7fb@x.com",
    "a\u200bb@x.com",  # zero-width space
    "a\u00a0b@x.com",  # no-break space
    "a\u202eb@x.com",  # right-to-left override
    "a\ud800b@x.com",  # lone surrogate
    "a@b@x.com",
    "nobody",
    # an empty label in the domain (RFC 5321 4.1.2): with a trailing dot the address would be a
    # second spelling of a@x.com, so one email could belong to two people
    "a@x.com.",
    "a@x..com",
    "a@.x.com",
]
GOOD_EMAILS = [
    ("a" * 64 + "@" + DOMAIN_186, "a" * 64 + "@" + DOMAIN_186),  # 251: within both limits
    ("  Jane.Doe@Acme.COM ", "jane.doe@acme.com"),  # spaces around are trimmed
    ("\ta@x.com\n", "a@x.com"),  # so is any whitespace around (SPEC: trim), as in the CDP dialect
    ("jörg@bücher.de", "jörg@bücher.de"),
]


@pytest.mark.parametrize("email", BAD_EMAILS)
def test_bad_emails_are_refused_naming_emails(client: TestClient, org: OrgFixture, email: str) -> None:
    for method, path in (("PUT", "/v2/crm/people"), ("POST", "/v2/crm/people")):
        body = json.dumps({"firstName": "E", "emails": ["ok@x.com", email]})  # \ud800 escaped
        r = client.request(method, path, content=body.encode(), headers={**org.bearer, **H_JSON})
        err = assert_error(r, 400, "emails")
        assert err["message"].startswith("emails.1: ") and "emails.1" in err["errors"]
    assert client.get("/v2/crm/people", headers=org.bearer).json()["pagination"]["total"] == 0


@pytest.mark.parametrize(("email", "stored"), GOOD_EMAILS)
def test_good_emails_are_kept(client: TestClient, org: OrgFixture, email: str, stored: str) -> None:
    r = client.post("/v2/crm/people", json={"firstName": "E", "emails": [email]}, headers=org.bearer)
    assert r.status_code == 201, r.text
    assert r.json()["person"]["emails"] == [stored]


def test_text_attributes_with_email_validation_follow_the_same_rules(
    client: TestClient, org: OrgFixture
) -> None:
    key = _attribute(client, org, "people", {"type": "text", "label": "Work email", "validation": ["email"]})
    for email in ["a" * 65 + "@x.com", "a b@x.com", "a\x01b@x.com", "a\u200bb@x.com"]:
        body = {"firstName": "E", "customAttributes": {key: email}}
        assert_error(
            client.post("/v2/crm/people", json=body, headers=org.bearer), 400, f"customAttributes.{key}"
        )
    body = {"firstName": "E", "customAttributes": {key: "a" * 64 + "@x.com"}}
    assert client.post("/v2/crm/people", json=body, headers=org.bearer).status_code == 201


# --- NUL and lone surrogates in keys ---

BAD_KEYS = ["\\ud800", "\\u0000", "a\\u0000b", "\\udfff\\ud800"]
# (method, path, body template with {k} for the bad key, the field the CRM core names or None
# where the request model refuses the body first)
KEY_CASES = [
    ("PUT", "/v2/crm/people?matchingAttribute=email", '{"firstName":"A","customAttributes":{"%s":1}}', "customAttributes."),
    ("POST", "/v2/crm/people", '{"firstName":"A","customAttributes":{"%s":1}}', "customAttributes."),
    ("PATCH", "/v2/crm/people/{person}", '{"customAttributes":{"%s":1}}', "customAttributes."),
    ("PUT", "/v2/crm/people/_bulk", '{"people":[{"firstName":"A","customAttributes":{"%s":1}}]}', None),
    ("PUT", "/v2/crm/people/_bulk", '{"people":[{"%s":1}]}', None),
    ("PUT", "/v2/crm/companies?matchingAttribute=domain", '{"name":"A","domain":"a.com","customAttributes":{"%s":1}}', "customAttributes."),
    ("POST", "/v2/crm/companies", '{"name":"A","customAttributes":{"%s":1}}', "customAttributes."),
    ("PATCH", "/v2/crm/companies/{company}", '{"customAttributes":{"%s":1}}', "customAttributes."),
    ("PUT", "/v2/crm/products?matchingAttribute=sku", '{"sku":"A","%s":1}', ""),
    ("POST", "/v2/crm/products", '{"%s":1}', ""),
    ("PATCH", "/v2/crm/products/{product}", '{"%s":1}', ""),
    ("PUT", "/v2/crm/people?matchingAttribute=email", '{"%s":1}', None),
    ("POST", "/v2/crm/people", '{"firstName":"A","socials":{"%s":"x"}}', None),
    ("POST", "/v2/crm/companies", '{"%s":1}', None),
    ("POST", "/v2/crm/objects", '{"slug":"deals","singularName":"D","pluralName":"Ds","%s":1}', None),
    ("POST", "/v2/crm/objects/products/attributes", '{"type":"text","label":"L","%s":1}', None),
    ("PATCH", "/v2/crm/objects/products/attributes/sku", '{"label":"L","%s":1}', None),
    ("PATCH", "/v2/crm/objects/products/attributes/sku", '{"label":"L","options":[{"%s":1}]}', None),
]  # fmt: skip


@pytest.mark.parametrize("bad", BAD_KEYS)
def test_nul_or_lone_surrogate_in_a_key_is_a_4xx_naming_the_field(
    client: TestClient, org: OrgFixture, bad: str
) -> None:
    h = org.bearer
    _products(client, org)
    person = client.post("/v2/crm/people", json={"firstName": "A"}, headers=h).json()["person"]["id"]
    company = client.post("/v2/crm/companies", json={"name": "A"}, headers=h).json()["company"]["id"]
    product = client.post("/v2/crm/products", json={"sku": "S"}, headers=h).json()["record"]["id"]
    escaped = bad.replace("\\\\", "\\")
    for method, template, body, named in KEY_CASES:
        path = template.format(person=person, company=company, product=product)
        r = client.request(method, path, content=(body % bad).encode(), headers={**h, **H_JSON})
        assert r.status_code < 500, (method, path, body, r.text)
        answer = r.json()
        if path.endswith("/_bulk"):
            assert r.status_code == 200 and answer["success"] is False, r.text
            answer = answer["results"][0]
        assert 400 <= answer["status"] < 500 and answer["errors"], (method, path, r.text)
        if named is not None:  # the CRM core names the key, escaped
            field = named + escaped
            assert answer["status"] == 400 and field in answer["errors"], (method, path, r.text)
            assert answer["message"].startswith(f"{field}: "), r.text
    # nothing was written by any of them
    assert client.get("/v2/crm/people", headers=h).json()["pagination"]["total"] == 1
    assert client.get("/v2/crm/companies", headers=h).json()["pagination"]["total"] == 1
    assert client.get("/v2/crm/products", headers=h).json()["pagination"]["total"] == 1


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"firstName": "A\x00"}, "firstName", "NUL"),
        ({"a": {"b": ["ok", "x\x00"]}}, "a.b.1", "NUL"),
        ({"a": [1, {"k\x00": 1}]}, "a.1.k\\u0000", "NUL"),
        ({"x": "\ud800"}, "x", "surrogate"),
        ({"\ud800": "x"}, "\\ud800", "surrogate"),
        ({"n": [2**63]}, "n.0", "64 bits"),
        ({"n": -(2**63)}, "n", "64 bits"),
    ],
)
def test_what_a_database_cannot_store_is_named_wherever_it_sits(
    body: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(BadRequest) as refused:
        check_storable(body)
    assert refused.value.field == field and message in refused.value.message


def test_what_a_database_can_store_passes() -> None:
    check_storable({"é": "naïve", "t": "\t", "n": [2**63 - 1, -(2**63) + 1, 1.5, True, None], "o": {"": ""}})
