"""CRM bearer tokens: 401 without a known token, 403 without the scope, and nothing crosses orgs."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from profilehub.auth import CredentialKind, create_credential
from profilehub.store.changes import change_row, history, record
from profilehub.store.tables import changes
from tests.conftest import OrgFixture, assert_error, make_org

PERSON = {"firstName": "Jane", "emails": ["jane@acme.com"]}
UNKNOWN_ID = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
# (method, path, body): one of every CRM route; {id} is filled with a real person or product id.
READS = [
    ("GET", "/v2/crm/people", None),
    ("GET", "/v2/crm/people/{person}", None),
    ("GET", "/v2/crm/companies", None),
    ("GET", "/v2/crm/companies/{company}", None),
    ("GET", "/v2/crm/objects", None),
    ("GET", "/v2/crm/objects/products", None),
    ("GET", "/v2/crm/products", None),
    ("GET", "/v2/crm/products/{product}", None),
]
WRITES = [
    ("PUT", "/v2/crm/people?matchingAttribute=email", PERSON),
    ("PUT", "/v2/crm/people/_bulk?matchingAttribute=email", {"people": [PERSON]}),
    ("POST", "/v2/crm/people", {"firstName": "X"}),
    ("PATCH", "/v2/crm/people/{person}", {"lastName": "Doe"}),
    ("DELETE", "/v2/crm/people/{person}", None),
    ("PUT", "/v2/crm/companies?matchingAttribute=domain", {"name": "Acme", "domain": "acme.com"}),
    ("POST", "/v2/crm/companies", {"name": "Other"}),
    ("PATCH", "/v2/crm/companies/{company}", {"name": "Acme 2"}),
    ("DELETE", "/v2/crm/companies/{company}", None),
    ("POST", "/v2/crm/objects", {"slug": "deals", "singularName": "Deal", "pluralName": "Deals"}),
    ("POST", "/v2/crm/objects/products/attributes", {"type": "text", "label": "Colour"}),
    ("PATCH", "/v2/crm/objects/products/attributes/sku", {"label": "Code"}),
    ("PUT", "/v2/crm/products?matchingAttribute=sku", {"sku": "A-1"}),
    ("POST", "/v2/crm/products", {"sku": "B-1"}),
    ("PATCH", "/v2/crm/products/{product}", {"sku": "C-1"}),
    ("DELETE", "/v2/crm/products/{product}", None),
]


def seed(client: TestClient, org: OrgFixture) -> dict[str, str]:
    """One person, company and product in ``org``; their ids by placeholder name."""
    h = org.bearer
    person = client.put("/v2/crm/people", json=PERSON, headers=h).json()["person"]["id"]
    company = client.post("/v2/crm/companies", json={"name": "Acme", "domain": "acme.com"}, headers=h)
    client.post(
        "/v2/crm/objects", json={"slug": "products", "singularName": "P", "pluralName": "Ps"}, headers=h
    )
    client.post("/v2/crm/objects/products/attributes", json={"type": "text", "label": "SKU"}, headers=h)
    product = client.post("/v2/crm/products", json={"sku": "S-1"}, headers=h).json()["record"]["id"]
    return {"person": person, "company": company.json()["company"]["id"], "product": product}


def token(app: FastAPI, org_id: int, scopes: str) -> dict[str, str]:
    made = app.state.db.write(lambda c: create_credential(c, org_id, CredentialKind.TOKEN, scopes))
    return {"Authorization": f"Bearer {made.secret}"}


def call(
    client: TestClient, method: str, path: str, body: Any, ids: dict[str, str], headers: dict[str, str]
) -> Any:
    return client.request(method, path.format(**ids), json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body"), READS + WRITES)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer pht_1234_not-a-real-token"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
    ids=["none", "unknown", "not-bearer"],
)
def test_every_route_needs_a_known_token(
    client: TestClient, org: OrgFixture, method: str, path: str, body: Any, headers: dict[str, str]
) -> None:
    ids = seed(client, org)
    r = call(client, method, path, body, ids, headers)
    assert_error(r, 401, "Authorization")
    # The scheme it takes, as a bearer-token API's 401 says (RFC 6750).
    assert r.headers["WWW-Authenticate"].startswith("Bearer ")


@pytest.mark.parametrize(("method", "path", "body"), READS + WRITES)
@pytest.mark.parametrize("scopes", ["crm:read", "crm:write"])
def test_reads_need_either_scope_and_writes_need_crm_write(
    app: FastAPI, client: TestClient, org: OrgFixture, method: str, path: str, body: Any, scopes: str
) -> None:
    ids = seed(client, org)
    r = call(client, method, path, body, ids, token(app, org.org_id, scopes))
    if (method, path, body) in WRITES and scopes == "crm:read":
        assert_error(r, 403, "Authorization")
        assert "crm:write" in r.json()["message"]
    else:
        assert r.status_code in (200, 201), r.text


def test_a_revoked_token_stops_working(app: FastAPI, client: TestClient, org: OrgFixture) -> None:
    from profilehub.auth import revoke_credential

    made = app.state.db.write(lambda c: create_credential(c, org.org_id, CredentialKind.TOKEN, "crm:read"))
    app.state.db.write(lambda c: revoke_credential(c, org.org_id, made.prefix))
    r = client.get("/v2/crm/people", headers={"Authorization": f"Bearer {made.secret}"})
    assert_error(r, 401, "Authorization")
    assert r.headers["WWW-Authenticate"].startswith("Bearer ")


@pytest.mark.parametrize(("method", "path", "body"), [r for r in READS + WRITES if "{" in r[1]])
def test_nothing_is_visible_across_orgs(
    app: FastAPI, client: TestClient, org: OrgFixture, method: str, path: str, body: Any
) -> None:
    ids = seed(client, org)
    other = make_org(app.state.db, org_id=5678)
    client.post(
        "/v2/crm/objects",
        json={"slug": "products", "singularName": "P", "pluralName": "Ps"},
        headers=other.bearer,
    )
    client.post(
        "/v2/crm/objects/products/attributes", json={"type": "text", "label": "SKU"}, headers=other.bearer
    )
    assert_error(call(client, method, path, body, ids, other.bearer), 404, "id")
    # And the owner still sees everything unchanged.
    assert (
        client.get(f"/v2/crm/people/{ids['person']}", headers=org.bearer).json()["person"]["lastName"] is None
    )


def test_lists_and_matching_stay_in_the_org(app: FastAPI, client: TestClient, org: OrgFixture) -> None:
    seed(client, org)
    other = make_org(app.state.db, org_id=5678)
    for path in ("/v2/crm/people", "/v2/crm/companies"):
        assert client.get(path, headers=other.bearer).json()["pagination"]["total"] == 0
    assert_error(client.get("/v2/crm/objects/products", headers=other.bearer), 404)
    # The same email and domain are free in another org: they match nothing there.
    assert client.put("/v2/crm/people", json=PERSON, headers=other.bearer).status_code == 201
    r = client.put("/v2/crm/companies", json={"name": "Acme", "domain": "acme.com"}, headers=other.bearer)
    assert r.status_code == 201


def test_every_change_is_in_the_change_log(app: FastAPI, client: TestClient, org: OrgFixture) -> None:
    ids = seed(client, org)
    client.patch(f"/v2/crm/people/{ids['person']}", json={"lastName": "Doe"}, headers=org.bearer)
    client.delete(f"/v2/crm/people/{ids['person']}", headers=org.bearer)
    with app.state.db.read() as conn:
        log = history(conn, org.org_id, limit=1000)
    crm = [(c["entity"], c["action"]) for c in log if c["entity"].startswith("crm_")]
    assert crm == [
        ("crm_person", "create"),
        ("crm_company", "create"),
        ("crm_object", "create"),
        ("crm_attribute", "create"),
        ("crm_record", "create"),
        ("crm_person", "update"),
        ("crm_person", "delete"),
    ]
    update = next(c for c in log if c["entity"] == "crm_person" and c["action"] == "update")
    assert update["detail"]["changed"] == ["last_name"]  # names, never values
    assert update["actor"].startswith("token:pht_1234_") and update["entityId"] == ids["person"]


def test_an_unknown_id_is_a_404(client: TestClient, org: OrgFixture) -> None:
    for path in ("/v2/crm/people/", "/v2/crm/companies/"):
        assert_error(client.get(path + UNKNOWN_ID, headers=org.bearer), 404, "id")
        assert_error(client.get(path + "not-a-uuid", headers=org.bearer), 404, "id")


# (path, body, answer key, values that must not survive a delete in the change log)
ERASED = [
    (
        "/v2/crm/people",
        {"firstName": "Erase", "emails": ["erase.me@x.com"], "phoneNumber": "+4930123456000", "nick": "ErNick"},
        {"lastName": "Erasedlast", "emails": ["erase.too@x.com"], "jobTitle": "Erasejob"},
        "person",
        ["Erase", "erase.me", "4930123456000", "ErNick", "Erasedlast", "erase.too", "Erasejob"],
    ),
    (
        "/v2/crm/companies",
        {"name": "Erasecorp", "domain": "erasecorp.com", "nick": "ErNick"},
        {"primaryLocation": "Eraseville"},
        "company",
        ["Erasecorp", "erasecorp.com", "ErNick", "Eraseville"],
    ),
    (
        "/v2/crm/products",
        {"sku": "ERASE-SKU-1", "nick": "ErNick"},
        {"sku": "ERASE-SKU-2"},
        "record",
        ["ERASE-SKU-1", "ERASE-SKU-2", "ErNick"],
    ),
]  # fmt: skip


def _change_rows(app: FastAPI, org_id: int) -> str:
    """Every change row of the org, as the text a ``profilehub changes ... | grep`` would search."""
    with app.state.db.read() as conn:
        rows = conn.execute(sa.select(changes).where(changes.c.org_id == org_id)).mappings().all()
    return "\n".join(str(dict(r)) for r in rows)


@pytest.mark.parametrize(("path", "create", "update", "key", "values"), ERASED)
def test_a_hard_delete_leaves_no_value_in_the_change_log(
    app: FastAPI,
    client: TestClient,
    org: OrgFixture,
    path: str,
    create: dict[str, Any],
    update: dict[str, Any],
    key: str,
    values: list[str],
) -> None:
    """The change log records which fields changed, never their values; rows an earlier version
    wrote with values are rewritten to names when the record is deleted."""
    seed(client, org)
    slug = path.rsplit("/", 1)[1]
    r = client.post(
        f"/v2/crm/objects/{slug}/attributes", json={"type": "text", "label": "Nick"}, headers=org.bearer
    )
    assert r.status_code == 201, r.text
    made = client.post(path, json=create, headers=org.bearer)
    assert made.status_code == 201, made.text
    record_id = made.json()[key]["id"]
    assert client.patch(f"{path}/{record_id}", json=update, headers=org.bearer).status_code == 200
    entity = {"person": "crm_person", "company": "crm_company", "record": "crm_record"}[key]
    with app.state.db.read() as conn:
        log = history(conn, org.org_id, entity=entity, entity_id=record_id)
    assert [c["action"] for c in log] == ["create", "update"]
    assert all(isinstance(c["detail"]["changed"], list) for c in log)
    assert "nick" in log[0]["detail"]["changed"]
    assert sorted(log[1]["detail"]["changed"]) == sorted(
        {"lastName": "last_name", "emails": "emails", "jobTitle": "job_title", "primaryLocation": "primary_location", "sku": "sku"}[f]
        for f in update
    )  # fmt: skip
    # A row in the format of earlier versions, which held the values.
    legacy = {"changed": {"nick": "ErNick", "first_name": "Erase", "emails": ["erase.me@x.com"]}}
    app.state.db.write(
        lambda c: record(c, [change_row(org.org_id, "old", entity, record_id, "update", legacy)])
    )
    before = _change_rows(app, org.org_id)
    assert "ErNick" in before  # until the delete, the legacy row holds a value

    assert client.delete(f"{path}/{record_id}", headers=org.bearer).status_code == 200
    after = _change_rows(app, org.org_id)
    assert [v for v in values if v in after] == []
    with app.state.db.read() as conn:
        log = history(conn, org.org_id, entity=entity, entity_id=record_id)
    assert [c["action"] for c in log] == ["create", "update", "update", "delete"]
    assert log[2]["detail"]["changed"] == ["emails", "first_name", "nick"]  # names kept
