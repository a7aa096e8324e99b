"""Answers that must hold whatever the client sends: a committed erasure always answers, and an
error never echoes more than a short excerpt of the input."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.cdp_client import Cdp
from tests.conftest import OrgFixture, assert_error

D = "/cdp/v1/users/_delete"
S = "/cdp/v1/users/_search"


def test_delete_by_integers_beyond_64_bits_answers_after_erasing(client: TestClient, org: OrgFixture) -> None:
    cdp = Cdp(client, org)
    big = 10**30
    cdp.write({"crm_id": str(big)})
    r = client.post(
        D,
        json={"orgId": org.org_id, "region": "EU", "ids": {"crm_id": [big, big + 1, 7]}},
        headers=org.headers(),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["deletedProfiles"] == 1
    # Values that matched nothing come back as text, whatever JSON type they were sent as.
    assert body["profilesNotFound"] == [str(big + 1), "7"]
    assert cdp.search({"crm_id": [str(big)]}) == []


def test_an_error_quotes_a_huge_key_as_a_short_excerpt(client: TestClient, org: OrgFixture) -> None:
    key = "k" * 200_000
    body = {"orgId": org.org_id, "search": {key: ["x"]}}
    r = client.post(S, json=body, headers=org.headers())
    error = assert_error(r, 400)
    assert len(r.content) < 2_000, len(r.content)
    assert error["message"].startswith("search." + "k" * 50)
    assert "\u2026" in error["message"]
    assert all(len(k) <= 101 for k in error["errors"])


def test_an_error_names_at_most_a_hundred_fields(client: TestClient, org: OrgFixture) -> None:
    extra = {f"x{i}": 0 for i in range(5_000)}
    r = client.post(
        S, json={"orgId": org.org_id, "search": {"crm_id": ["1"]}, **extra}, headers=org.headers()
    )
    error = assert_error(r, 400, "x0")
    assert len(error["errors"]) == 100
    assert len(error["message"]) <= 1001
    assert len(r.content) < 10_000, len(r.content)
