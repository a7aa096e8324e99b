"""CRM companies: upsert by normalised domain, create, read, list, update, delete."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import OrgFixture, assert_error

COMPANIES = "/v2/crm/companies"


def put(client: TestClient, org: OrgFixture, body: dict[str, Any], matching: str = "domain") -> Any:
    return client.put(f"{COMPANIES}?matchingAttribute={matching}", json=body, headers=org.bearer)


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("acme.com", "acme.com"),
        ("ACME.com", "acme.com"),
        ("https://www.acme.com/about?x=1", "acme.com"),
        ("http://Acme.com:8080", "acme.com"),
        ("www.shop.acme.co.uk.", "shop.acme.co.uk"),
        ("  acme.com  ", "acme.com"),
    ],
)
def test_domains_are_normalised_and_matched(
    client: TestClient, org: OrgFixture, sent: str, stored: str
) -> None:
    first = put(client, org, {"name": "Acme", "domain": stored})
    assert first.status_code == 201
    r = put(client, org, {"name": "Acme Corp", "domain": sent})
    assert r.status_code == 200, r.text
    company = r.json()["company"]
    assert company["domain"] == stored and company["id"] == first.json()["company"]["id"]
    assert company["name"] == "Acme Corp"
    assert r.headers["X-Profilehub-Matches"] == "1"


def test_company_answer_shape(client: TestClient, org: OrgFixture) -> None:
    r = put(client, org, {"name": "Acme", "domain": "acme.com"})
    body = r.json()
    assert body["success"] is True and body["status"] == 201
    assert set(body["company"]) == {
        "id",
        "name",
        "domain",
        "description",
        "phoneNumber",
        "primaryLocation",
        "logoUrl",
        "socials",
        "customAttributes",
        "createdAt",
        "updatedAt",
    }


@pytest.mark.parametrize(
    ("matching", "body", "status", "field"),
    [
        ("name", {"name": "Acme", "domain": "acme.com"}, 400, "matchingAttribute"),
        ("domain", {"name": "Acme"}, 400, "domain"),
        ("domain", {"name": "Acme", "domain": "not a domain"}, 400, "domain"),
        ("domain", {"domain": "acme.com"}, 400, "name"),
        ("domain", {"name": "Acme", "domain": "acme.com", "phoneNumber": "nope"}, 400, "phoneNumber"),
        ("domain", {"name": "Acme", "domain": "acme.com", "size": 3}, 400, "size"),
        ("domain", {"name": ["Acme"], "domain": "acme.com"}, 422, "name"),
    ],
)
def test_bad_company_writes(
    client: TestClient, org: OrgFixture, matching: str, body: dict[str, Any], status: int, field: str
) -> None:
    assert_error(put(client, org, body, matching), status, field)
    assert client.get(COMPANIES, headers=org.bearer).json()["pagination"]["total"] == 0


def test_a_domain_belongs_to_one_company(client: TestClient, org: OrgFixture) -> None:
    acme = client.post(COMPANIES, json={"name": "Acme", "domain": "acme.com"}, headers=org.bearer).json()[
        "company"
    ]
    other = client.post(COMPANIES, json={"name": "Other"}, headers=org.bearer)
    assert other.status_code == 201 and other.json()["company"]["domain"] is None
    r = client.post(COMPANIES, json={"name": "Copy", "domain": "www.acme.com"}, headers=org.bearer)
    assert acme["id"] in assert_error(r, 409, "domain")["message"]
    r = client.patch(
        f"{COMPANIES}/{other.json()['company']['id']}", json={"domain": "acme.com"}, headers=org.bearer
    )
    assert_error(r, 409, "domain")


def test_company_cycle_and_people_lose_a_deleted_company(client: TestClient, org: OrgFixture) -> None:
    company = put(client, org, {"name": "Acme", "domain": "acme.com"}).json()["company"]
    url = f"{COMPANIES}/{company['id']}"
    assert client.get(url, headers=org.bearer).json()["company"] == company
    r = client.patch(url, json={"description": "Makes anvils"}, headers=org.bearer)
    assert r.json()["company"]["description"] == "Makes anvils" and r.json()["company"]["name"] == "Acme"
    person = client.put(
        "/v2/crm/people",
        json={"firstName": "Jane", "emails": ["j@acme.com"], "companyId": company["id"]},
        headers=org.bearer,
    ).json()["person"]
    assert client.delete(url, headers=org.bearer).status_code == 200
    assert_error(client.delete(url, headers=org.bearer), 404, "id")
    after = client.get(f"/v2/crm/people/{person['id']}", headers=org.bearer).json()["person"]
    assert after["company"] is None and after["firstName"] == "Jane"


def test_list_and_search_companies(client: TestClient, org: OrgFixture) -> None:
    for name, domain in [("Acme", "acme.com"), ("Globex", "globex.io"), ("Initech", "initech.com")]:
        put(client, org, {"name": name, "domain": domain})
    page = client.get(f"{COMPANIES}?count=2", headers=org.bearer).json()
    assert [c["name"] for c in page["collection"]] == ["Acme", "Globex"]
    assert (
        page["pagination"]["totalPages"] == 2
        and page["pagination"]["nextPage"] == f"{COMPANIES}?count=2&page=2"
    )
    found = client.get(COMPANIES, params={"search": ".io"}, headers=org.bearer).json()["collection"]
    assert [c["name"] for c in found] == ["Globex"]


def test_company_search_matches_text_in_any_case_as_unicode_case_folding_does(
    client: TestClient, org: OrgFixture
) -> None:
    put(client, org, {"name": "Müller Straßenbau", "domain": "mueller.de"})
    put(client, org, {"name": "İSTANBUL KALE", "domain": "kale.tr", "primaryLocation": "Ankara"})
    for term, names in [
        ("STRASSENBAU", ["Müller Straßenbau"]),
        ("müller strassen", ["Müller Straßenbau"]),
        ("İstanbul", ["İSTANBUL KALE"]),
        ("istanbul", []),  # full case folding: İ is i with a dot above (see docs/crm.md)
        ("ANKARA", ["İSTANBUL KALE"]),
    ]:
        found = client.get(COMPANIES, params={"search": term}, headers=org.bearer).json()["collection"]
        assert [c["name"] for c in found] == names, term
