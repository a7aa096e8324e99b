"""CRM people: the vendor's example, every matching rule, validation, and the read/update/delete cycle."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from profilehub.crm.models import VENDOR_PERSON_EXAMPLE
from tests.conftest import OrgFixture, assert_error

PEOPLE = "/v2/crm/people"
PERSON_FIELDS = {
    "id",
    "firstName",
    "lastName",
    "salutation",
    "emails",
    "jobTitle",
    "description",
    "phoneNumber",
    "primaryLocation",
    "avatarUrl",
    "company",
    "socials",
    "customAttributes",
    "createdAt",
    "updatedAt",
    "ucid",  # the CDP profile the person is linked to (docs/crm.md)
}


def put(client: TestClient, org: OrgFixture, body: dict[str, Any], matching: str = "email") -> Any:
    return client.put(f"{PEOPLE}?matchingAttribute={matching}", json=body, headers=org.bearer)


def make(
    client: TestClient, org: OrgFixture, body: dict[str, Any], matching: str = "email"
) -> dict[str, Any]:
    r = put(client, org, body, matching)
    assert r.status_code in (200, 201), r.text
    person: dict[str, Any] = r.json()["person"]
    return person


def add_attribute(client: TestClient, org: OrgFixture, body: dict[str, Any], slug: str = "people") -> str:
    r = client.post(f"/v2/crm/objects/{slug}/attributes", json=body, headers=org.bearer)
    assert r.status_code == 201, r.text
    key: str = r.json()["attribute"]["key"]
    return key


def test_vendor_example_verbatim_creates_then_updates(client: TestClient, org: OrgFixture) -> None:
    first = put(client, org, VENDOR_PERSON_EXAMPLE)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["success"] is True and body["status"] == 201
    person = body["person"]
    assert set(person) == PERSON_FIELDS
    assert person["firstName"] == "Jane" and person["emails"] == ["jane.doe@acme.com"]
    assert set(person["socials"]) == {"linkedin", "twitter", "facebook", "instagram"}
    assert person["customAttributes"] == {}
    assert person["createdAt"].endswith("+00:00") and person["updatedAt"].endswith("+00:00")
    # The placeholders of the checked fields are reported, not stored, and not fatal.
    assert person["phoneNumber"] is None and person["company"] is None
    assert "placeholder_ignored" in first.headers["X-Profilehub-Notices"]

    again = put(client, org, VENDOR_PERSON_EXAMPLE)
    assert again.status_code == 200, again.text
    assert again.json()["status"] == 200
    assert again.json()["person"]["id"] == person["id"]
    assert again.json()["person"]["createdAt"] == person["createdAt"]


def test_vendor_short_example_answers_nulls_where_unset(client: TestClient, org: OrgFixture) -> None:
    body = {
        "firstName": "Jane",
        "lastName": "Doe",
        "emails": ["jane.doe@acme.com"],
        "jobTitle": "Head of Product",
        "primaryLocation": "Berlin, Germany",
        "socials": {"linkedin": "https://linkedin.com/in/janedoe"},
    }
    person = make(client, org, body)
    assert person["salutation"] is None and person["avatarUrl"] is None and person["description"] is None
    assert person["socials"] == {
        "linkedin": "https://linkedin.com/in/janedoe",
        "twitter": None,
        "facebook": None,
        "instagram": None,
    }


def test_without_matching_attribute_the_vendor_curl_matches_by_email(
    client: TestClient, org: OrgFixture
) -> None:
    # The vendor's own curl sends no matchingAttribute; email is the default.
    assert client.put(PEOPLE, json=VENDOR_PERSON_EXAMPLE, headers=org.bearer).status_code == 201
    assert client.put(PEOPLE, json=VENDOR_PERSON_EXAMPLE, headers=org.bearer).status_code == 200


@pytest.mark.parametrize(
    ("matching", "stored", "sent", "same"),
    [
        ("email", {"emails": ["jane@acme.com"]}, {"emails": ["JANE@Acme.com"]}, True),
        ("emails", {"emails": ["jane@acme.com"]}, {"emails": [" jane@acme.com "]}, True),
        ("email", {"emails": ["jane@acme.com", "j.doe@home.org"]}, {"emails": ["J.Doe@home.org"]}, True),
        ("email", {"emails": ["jane@acme.com"]}, {"emails": ["john@acme.com"]}, False),
        ("phone_number", {"phoneNumber": "+49 30 123456789"}, {"phoneNumber": "+4930123456789"}, True),
        ("phoneNumber", {"phoneNumber": "+4930123456789"}, {"phoneNumber": "+49 (30) 1234-56789"}, True),
        ("phone_number", {"phoneNumber": "+4930123456789"}, {"phoneNumber": "+4930123456780"}, False),
        ("first_name", {"firstName": "Jane"}, {"firstName": "Jane"}, True),
        ("first_name", {"firstName": "Jane"}, {"firstName": "jane"}, False),
        ("job_title", {"jobTitle": "CTO"}, {"jobTitle": "CTO"}, True),
    ],
)
def test_matching_rules(
    client: TestClient,
    org: OrgFixture,
    matching: str,
    stored: dict[str, Any],
    sent: dict[str, Any],
    same: bool,
) -> None:
    first = make(client, org, {"lastName": "Doe", **stored}, matching)
    r = put(client, org, {"lastName": "Doe", **sent}, matching)
    assert r.status_code == (200 if same else 201), r.text
    assert (r.json()["person"]["id"] == first["id"]) is same
    assert r.headers["X-Profilehub-Matches"] == ("1" if same else "0")


@pytest.mark.parametrize(
    ("attribute", "value", "equal"),
    [
        ({"type": "text", "label": "Customer Number", "isUnique": True}, "C-1", "C-1"),
        ({"type": "number", "label": "Customer Number"}, 10, 10.0),
        ({"type": "phone_number", "label": "Customer Number"}, "+44 20 7946 0018", "+442079460018"),
        ({"type": "date", "label": "Customer Number"}, "2025-06-01", "2025-06-01"),
        (
            {"type": "select", "label": "Customer Number", "options": [{"value": "A"}, {"value": "B"}]},
            {"id": 2},
            "B",
        ),
    ],
)
def test_matching_by_custom_attribute(
    client: TestClient, org: OrgFixture, attribute: dict[str, Any], value: Any, equal: Any
) -> None:
    key = add_attribute(client, org, attribute)
    assert key == "customer_number"
    first = make(client, org, {"firstName": "A", "customAttributes": {key: value}}, key)
    # The key may also be given at the top level of the body.
    r = put(client, org, {"firstName": "B", key: equal}, key)
    assert r.status_code == 200, r.text
    assert r.json()["person"]["id"] == first["id"] and r.json()["person"]["firstName"] == "B"


def test_several_matches_update_the_oldest_and_say_how_many(client: TestClient, org: OrgFixture) -> None:
    oldest = make(client, org, {"firstName": "Sam", "lastName": "One"}, "last_name")
    client.post(PEOPLE, json={"firstName": "Sam", "lastName": "Two"}, headers=org.bearer)
    client.post(PEOPLE, json={"firstName": "Sam", "lastName": "Three"}, headers=org.bearer)
    for _ in range(2):  # deterministic: the same one every time
        r = put(client, org, {"firstName": "Sam", "jobTitle": "Dup"}, "first_name")
        assert r.status_code == 200
        assert r.json()["person"]["id"] == oldest["id"]
        assert r.headers["X-Profilehub-Matches"] == "3"


@pytest.mark.parametrize(
    ("matching", "body", "field"),
    [
        ("email", {"firstName": "A"}, "emails"),
        ("email", {"firstName": "A", "emails": []}, "emails"),
        ("phone_number", {"firstName": "A", "emails": ["a@b.co"]}, "phoneNumber"),
        ("first_name", {"lastName": "A"}, "firstName"),
        ("no_such_thing", {"firstName": "A"}, "matchingAttribute"),
        ("description", {"firstName": "A", "description": "x"}, "matchingAttribute"),
    ],
)
def test_a_missing_or_unknown_matching_value_is_a_400(
    client: TestClient, org: OrgFixture, matching: str, body: dict[str, Any], field: str
) -> None:
    assert_error(put(client, org, body, matching), 400, field)
    assert client.get(PEOPLE, headers=org.bearer).json()["pagination"]["total"] == 0


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"emails": ["a@b.co"]}, 400, "firstName"),
        ({"firstName": "", "lastName": "  ", "emails": ["a@b.co"]}, 400, "firstName"),
        ({"firstName": "A", "emails": ["not-an-email"]}, 400, "emails.0"),
        ({"firstName": "A", "emails": ["a@b.co", "x@"]}, 400, "emails.1"),
        ({"firstName": "A", "emails": "a@b.co"}, 422, "emails"),
        ({"firstName": "A", "emails": ["a@b.co"], "phoneNumber": "12"}, 400, "phoneNumber"),
        ({"firstName": "A", "emails": ["a@b.co"], "phoneNumber": "call me"}, 400, "phoneNumber"),
        ({"firstName": "A", "emails": ["a@b.co"], "companyId": "nope"}, 400, "companyId"),
        (
            {"firstName": "A", "emails": ["a@b.co"], "companyId": "3c90c3cc-0d44-4b50-8888-8dd25736052a"},
            400,
            "companyId",
        ),
        ({"firstName": "A", "emails": ["a@b.co"], "favourite": 1}, 400, "favourite"),
        ({"firstName": "A", "emails": ["a@b.co"], "socials": {"myspace": "x"}}, 422, "socials.myspace"),
        (
            {"firstName": "A", "emails": ["a@b.co"], "customAttributes": {"nope": 1}},
            400,
            "customAttributes.nope",
        ),
        ({"firstName": 5, "emails": ["a@b.co"]}, 422, "firstName"),
        ({"firstName": "x" * 256, "emails": ["a@b.co"]}, 400, "firstName"),
    ],
)
def test_bad_person_bodies_name_the_field_and_write_nothing(
    client: TestClient, org: OrgFixture, body: dict[str, Any], status: int, field: str
) -> None:
    assert_error(put(client, org, body), status, field)
    assert client.get(PEOPLE, headers=org.bearer).json()["pagination"]["total"] == 0


def test_phone_numbers_are_stored_as_e164(client: TestClient, org: OrgFixture) -> None:
    person = make(
        client, org, {"firstName": "A", "emails": ["a@b.co"], "phoneNumber": "+49 (30) 123 456 789"}
    )
    assert person["phoneNumber"] == "+4930123456789"


def test_an_email_belongs_to_one_person(client: TestClient, org: OrgFixture) -> None:
    jane = make(client, org, {"firstName": "Jane", "emails": ["jane@acme.com"]})
    john = make(client, org, {"firstName": "John", "emails": ["john@acme.com"]})
    # Upsert matched to John, but adding Jane's email to him: 409 naming Jane.
    r = put(client, org, {"firstName": "John", "emails": ["john@acme.com", "JANE@acme.com"]})
    body = assert_error(r, 409, "emails")
    assert jane["id"] in body["message"]
    r = client.patch(f"{PEOPLE}/{john['id']}", json={"emails": ["jane@acme.com"]}, headers=org.bearer)
    assert jane["id"] in assert_error(r, 409, "emails")["message"]
    r = client.post(PEOPLE, json={"firstName": "X", "emails": ["jane@acme.com"]}, headers=org.bearer)
    assert_error(r, 409, "emails")
    assert client.get(f"{PEOPLE}/{john['id']}", headers=org.bearer).json()["person"]["emails"] == [
        "john@acme.com"
    ]


def test_upsert_by_email_adds_emails_and_patch_replaces_them(client: TestClient, org: OrgFixture) -> None:
    person = make(client, org, {"firstName": "Jane", "emails": ["jane@acme.com", "jd@home.org"]})
    r = put(client, org, {"firstName": "Jane", "emails": ["jd@home.org", "jane@new.io"]})
    assert r.status_code == 200
    assert r.json()["person"]["emails"] == ["jane@acme.com", "jd@home.org", "jane@new.io"]  # primary stays
    r = client.patch(f"{PEOPLE}/{person['id']}", json={"emails": ["jane@new.io"]}, headers=org.bearer)
    assert r.status_code == 200 and r.json()["person"]["emails"] == ["jane@new.io"]
    # The emails dropped by PATCH are free again.
    assert put(client, org, {"firstName": "Other", "emails": ["jane@acme.com"]}).status_code == 201


def test_fields_left_out_of_an_update_are_kept(client: TestClient, org: OrgFixture) -> None:
    person = make(
        client,
        org,
        {
            "firstName": "Jane",
            "lastName": "Doe",
            "emails": ["jane@acme.com"],
            "jobTitle": "CTO",
            "socials": {"linkedin": "https://linkedin.com/in/jane", "twitter": "https://x.com/jane"},
        },
    )
    r = put(client, org, {"firstName": "Janet", "emails": ["jane@acme.com"], "socials": {"twitter": None}})
    updated = r.json()["person"]
    assert updated["lastName"] == "Doe" and updated["jobTitle"] == "CTO" and updated["firstName"] == "Janet"
    assert (
        updated["socials"]["linkedin"] == "https://linkedin.com/in/jane"
        and updated["socials"]["twitter"] is None
    )
    r = client.patch(f"{PEOPLE}/{person['id']}", json={"jobTitle": None}, headers=org.bearer)
    assert r.json()["person"]["jobTitle"] is None and r.json()["person"]["lastName"] == "Doe"
    # A PATCH cannot leave a person without a name.
    r = client.patch(
        f"{PEOPLE}/{person['id']}", json={"firstName": None, "lastName": None}, headers=org.bearer
    )
    assert_error(r, 400, "firstName")


def test_get_patch_delete_cycle(client: TestClient, org: OrgFixture) -> None:
    person = make(client, org, {"firstName": "Jane", "emails": ["jane@acme.com"]})
    url = f"{PEOPLE}/{person['id']}"
    got = client.get(url, headers=org.bearer)
    assert got.status_code == 200 and got.json() == {"success": True, "status": 200, "person": person}
    r = client.patch(url, json={"lastName": "Doe"}, headers=org.bearer)
    assert r.status_code == 200 and r.json()["person"]["lastName"] == "Doe"
    assert client.delete(url, headers=org.bearer).json() == {"success": True, "status": 200}
    assert_error(client.delete(url, headers=org.bearer), 404, "id")
    assert_error(client.get(url, headers=org.bearer), 404, "id")
    assert_error(client.patch(url, json={"lastName": "X"}, headers=org.bearer), 404, "id")
    # The deleted person's email is free for someone new.
    assert put(client, org, {"firstName": "New", "emails": ["jane@acme.com"]}).status_code == 201


def test_list_pages_and_searches(client: TestClient, org: OrgFixture) -> None:
    for i in range(5):
        make(client, org, {"firstName": f"Person{i}", "emails": [f"p{i}@acme.com"]})
    make(client, org, {"firstName": "Zed", "lastName": "Jones", "emails": ["zed@other.org"]})
    r = client.get(f"{PEOPLE}?count=2&page=2", headers=org.bearer)
    body = r.json()
    assert [p["firstName"] for p in body["collection"]] == ["Person2", "Person3"]
    # The vendor's pagination page: previousPage/nextPage are the paths of those pages (its client
    # follows them), count the items of this page.
    assert body["pagination"] == {
        "total": 6,
        "count": 2,
        "totalPages": 3,
        "previousPage": "/v2/crm/people?count=2&page=1",
        "currentPage": 2,
        "nextPage": "/v2/crm/people?count=2&page=3",
    }
    last = client.get(f"{PEOPLE}?count=2&page=3", headers=org.bearer).json()["pagination"]
    assert last["nextPage"] is None and last["previousPage"] == "/v2/crm/people?count=2&page=2"
    first = client.get(PEOPLE, headers=org.bearer).json()["pagination"]
    assert first["count"] == 6 and first["previousPage"] is None and first["nextPage"] is None
    # A client that follows nextPage keeps its page size and search, and reaches every match once.
    seen, url = [], f"{PEOPLE}?search=acme.com&count=2"
    while url:
        page = client.get(url, headers=org.bearer).json()
        seen += [p["firstName"] for p in page["collection"]]
        assert page["pagination"]["count"] == len(page["collection"])
        url = page["pagination"]["nextPage"]
    assert seen == [f"Person{i}" for i in range(5)]
    for term, names in [("JONES", ["Zed"]), ("other.org", ["Zed"]), ("person1", ["Person1"]), ("%", [])]:
        found = client.get(PEOPLE, params={"search": term}, headers=org.bearer).json()["collection"]
        assert [p["firstName"] for p in found] == names, term


def test_search_matches_text_in_any_case_as_unicode_case_folding_does(
    client: TestClient, org: OrgFixture
) -> None:
    make(client, org, {"firstName": "Jörg", "primaryLocation": "Hauptstraße 5", "emails": ["j@a.de"]})
    make(client, org, {"firstName": "Ayşe", "primaryLocation": "İstanbul", "emails": ["a@a.tr"]})
    make(client, org, {"firstName": "Al", "primaryLocation": "Istanbul", "emails": ["al@a.uk"]})
    make(client, org, {"firstName": "Σίσυφος", "emails": ["s@a.gr"]})
    for term, names in [
        ("STRASSE", ["Jörg"]),
        ("strasse", ["Jörg"]),
        ("STRAẞE", ["Jörg"]),  # the capital sharp s
        ("straße", ["Jörg"]),
        # Full case folding keeps the dot of İ (i + U+0307); the dotless Turkish folding depends on
        # a language, which a search has none of: "istanbul" is the English spelling only.
        ("İSTANBUL", ["Ayşe"]),
        ("i̇stanbul", ["Ayşe"]),
        ("ISTANBUL", ["Al"]),
        ("istanbul", ["Al"]),
        ("stanbul", ["Ayşe", "Al"]),
        # Typed so far of a name in capitals: lower() made its last sigma a final one (ς).
        ("ΣΊΣ", ["Σίσυφος"]),
        ("σίσυφοσ", ["Σίσυφος"]),
    ]:
        found = client.get(PEOPLE, params={"search": term}, headers=org.bearer).json()["collection"]
        assert [p["firstName"] for p in found] == names, term


@pytest.mark.parametrize("query", ["count=0", "count=101", "page=0", "count=x"])
def test_bad_paging_is_a_422_naming_the_parameter(client: TestClient, org: OrgFixture, query: str) -> None:
    assert_error(client.get(f"{PEOPLE}?{query}", headers=org.bearer), 422, query.split("=")[0])


def test_company_is_embedded_and_checked(client: TestClient, org: OrgFixture) -> None:
    company = client.post(
        "/v2/crm/companies", json={"name": "Acme", "domain": "acme.com"}, headers=org.bearer
    )
    company_id = company.json()["company"]["id"]
    person = make(
        client, org, {**VENDOR_PERSON_EXAMPLE, "companyId": company_id, "phoneNumber": "+4930123456789"}
    )
    assert person["company"] == {"id": company_id, "name": "Acme", "domain": "acme.com"}
    assert person["phoneNumber"] == "+4930123456789"
    listed = client.get(PEOPLE, headers=org.bearer).json()["collection"][0]
    assert listed["company"] == person["company"]


def test_custom_attributes_appear_on_every_person(client: TestClient, org: OrgFixture) -> None:
    tier = add_attribute(client, org, {"type": "select", "label": "Tier", "options": [{"value": "Gold"}]})
    add_attribute(client, org, {"type": "rating", "label": "Score"})
    person = make(client, org, {"firstName": "A", "emails": ["a@b.co"], "customAttributes": {tier: "Gold"}})
    assert person["customAttributes"] == {"tier": {"id": 1, "value": "Gold"}, "score": None}
    r = client.patch(f"{PEOPLE}/{person['id']}", json={"score": 4}, headers=org.bearer)
    assert r.json()["person"]["customAttributes"] == {"tier": {"id": 1, "value": "Gold"}, "score": 4}


def test_post_always_creates(client: TestClient, org: OrgFixture) -> None:
    a = client.post(PEOPLE, json={"firstName": "Same"}, headers=org.bearer)
    b = client.post(PEOPLE, json={"firstName": "Same"}, headers=org.bearer)
    assert a.status_code == b.status_code == 201
    assert a.json()["person"]["id"] != b.json()["person"]["id"]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"firstName": "A\\u0000B"}', "firstName"),
        ('{"firstName": "\\ud800"}', "firstName"),
        ('{"firstName": "A", "emails": ["a\\u0000@b.co"]}', "emails.0"),
        (
            '{"firstName": "A", "customAttributes": {"n": 123456789012345678901234567890}}',
            "customAttributes.n",
        ),
        ('{"firstName": "A", "socials": {"linkedin": "\\udfff"}}', "socials.linkedin"),
    ],
)
def test_text_and_numbers_a_database_cannot_store_are_a_400(
    client: TestClient, org: OrgFixture, raw: str, field: str
) -> None:
    add_attribute(client, org, {"type": "number", "label": "N"})
    r = client.put(PEOPLE, content=raw.encode(), headers={**org.bearer, "Content-Type": "application/json"})
    assert_error(r, 400, field)


@pytest.mark.parametrize(
    "path", ["/v2/crm/people/%00", "/v2/crm/people/a%ED%A0%80", "/v2/crm/objects/x%00yz"]
)
def test_odd_ids_in_paths_are_404(client: TestClient, org: OrgFixture, path: str) -> None:
    assert_error(client.get(path, headers=org.bearer), 404)


def test_odd_search_text_is_a_400(client: TestClient, org: OrgFixture) -> None:
    assert_error(client.get(PEOPLE, params={"search": "a\x00b"}, headers=org.bearer), 400, "search")


def test_a_returning_person_is_matched_by_its_new_values_and_not_its_old(
    client: TestClient, org: OrgFixture
) -> None:
    """A person written again keeps its value index (and unique values) in step with its values:
    what it changed is found by the new value only, what it kept is found as before."""
    key = add_attribute(client, org, {"type": "text", "label": "Customer Number", "isUnique": True})
    ann = ["ann@acme.com"]
    first = make(
        client,
        org,
        {
            "firstName": "Ann",
            "lastName": "Lee",
            "jobTitle": "CTO",
            "emails": ann,
            "customAttributes": {key: "C-1"},
        },
    )
    again = put(client, org, {"jobTitle": "CEO", "emails": ann, "customAttributes": {key: "C-2"}})
    assert again.status_code == 200, again.text
    # Twice in one call: only the last value is indexed.
    r = client.put(
        "/v2/crm/people/_bulk?matchingAttribute=email",
        json={
            "people": [{"primaryLocation": "Oslo", "emails": ann}, {"primaryLocation": "Rome", "emails": ann}]
        },
        headers=org.bearer,
    )
    assert r.status_code == 200 and r.json()["success"] is True, r.text
    for matching, body in (
        ("job_title", {"jobTitle": "CEO"}),
        ("last_name", {"lastName": "Lee"}),
        ("first_name", {"firstName": "Ann"}),
        ("primary_location", {"primaryLocation": "Rome"}),
        (key, {"firstName": "Ann", key: "C-2"}),
    ):
        r = put(client, org, body, matching)
        assert r.status_code == 200, (matching, r.text)
        assert r.json()["person"]["id"] == first["id"] and r.headers["X-Profilehub-Matches"] == "1"
    for matching, body in (
        ("job_title", {"lastName": "New", "jobTitle": "CTO"}),
        ("primary_location", {"lastName": "New", "primaryLocation": "Oslo"}),
    ):
        r = put(client, org, body, matching)
        assert r.status_code == 201, (matching, r.text)
        assert r.json()["person"]["id"] != first["id"] and r.headers["X-Profilehub-Matches"] == "0"
    # The unique value it let go of is free for another person; the one it holds is not.
    assert put(client, org, {"firstName": "Bo", "emails": ["bo@acme.com"], key: "C-1"}).status_code == 201
    taken = put(client, org, {"firstName": "Cy", "emails": ["cy@acme.com"], key: "C-2"})
    assert_error(taken, 400, f"customAttributes.{key}")


def test_a_value_changed_and_changed_back_in_one_call_is_matched_by_it_alone(
    client: TestClient, org: OrgFixture
) -> None:
    """A returning person's value index follows its values across the writes of one call: a job
    title changed and changed back is still found by it, a value set and then removed by neither."""
    ann = ["ann@acme.com"]
    first = make(client, org, {"firstName": "Ann", "jobTitle": "CTO", "emails": ann})
    r = client.put(
        "/v2/crm/people/_bulk?matchingAttribute=email",
        json={
            "people": [
                {"jobTitle": "CEO", "primaryLocation": "Oslo", "emails": ann},
                {"jobTitle": "CTO", "primaryLocation": None, "emails": ann},
            ]
        },
        headers=org.bearer,
    )
    assert r.status_code == 200 and r.json()["success"] is True, r.text
    r = put(client, org, {"jobTitle": "CTO"}, "job_title")
    assert r.status_code == 200 and r.json()["person"]["id"] == first["id"], r.text
    assert r.headers["X-Profilehub-Matches"] == "1"
    for matching, body in (
        ("job_title", {"lastName": "New", "jobTitle": "CEO"}),
        ("primary_location", {"lastName": "New", "primaryLocation": "Oslo"}),
    ):
        r = put(client, org, body, matching)
        assert r.status_code == 201 and r.headers["X-Profilehub-Matches"] == "0", (matching, r.text)


@pytest.mark.parametrize(
    ("method", "url", "field"),
    [
        ("PUT", "/v2/crm/people?matchingAttribute=email&matchingAttribute=phone_number", "matchingAttribute"),
        (
            "PUT",
            "/v2/crm/people/_bulk?matchingAttribute=phone_number&matchingAttribute=email",
            "matchingAttribute",
        ),
        ("GET", "/v2/crm/people?count=1&count=2", "count"),
        ("GET", "/v2/crm/companies?page=1&page=2", "page"),
        ("GET", "/v2/crm/people?search=a&search=b", "search"),
    ],
)
def test_a_parameter_given_twice_is_refused(
    client: TestClient, org: OrgFixture, method: str, url: str, field: str
) -> None:
    """Each parameter has one value: a second one was silently taken over the first, so an upsert
    sent with two matchingAttributes matched (and could update) by the one the client put last."""
    person = {"firstName": "Twice", "emails": ["twice@acme.com"], "phoneNumber": "+4930123456789"}
    body = {"people": [person]} if "_bulk" in url else person
    r = client.request(method, url, json=body if method == "PUT" else None, headers=org.bearer)
    assert_error(r, 422, field)
    assert client.get(PEOPLE, headers=org.bearer).json()["pagination"]["total"] == 0
