"""Answers that must hold whatever the client sends: a committed erasure always answers, and an
error never echoes more than a short excerpt of the input."""

from __future__ import annotations

import pytest
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


W = "/cdp/v1/users"
NUL_WRITES = [
    # (id, raw body, field named): one rule in both dialects, a 400 naming the attribute
    (
        "cdp-value",
        rb'{"orgId":1234,"region":"EU","ids":{"fpuid":"n1"},"upsert":{"profile":{"nick":"a\u0000b"}}}',
        "upsert.profile.nick",
    ),
    (
        "cdp-nested-value",
        rb'{"orgId":1234,"region":"EU","ids":{"fpuid":"n1"},"upsert":{"profile":{"x":{"y":["\u0000"]}}}}',
        "upsert.profile.x.y",
    ),
    (
        "cdp-attribute-name",
        rb'{"orgId":1234,"region":"EU","ids":{"fpuid":"n1"},"upsert":{"profile":{"a\u0000":1}}}',
        "upsert.profile.a",
    ),
    (
        "cdp-big-integer",
        rb'{"orgId":1234,"region":"EU","ids":{"fpuid":"n1"},"upsert":{"profile":{"n":123456789012345678901234567890}}}',
        "upsert.profile.n",
    ),
    (
        "cdp-lone-surrogate",
        rb'{"orgId":1234,"region":"EU","ids":{"fpuid":"n1"},"upsert":{"consent":{"c":"\ud800"}}}',
        "upsert.consent.c",
    ),
]


@pytest.mark.parametrize(("body", "field"), [n[1:] for n in NUL_WRITES], ids=[n[0] for n in NUL_WRITES])
def test_values_that_cannot_be_stored_are_refused_naming_the_attribute(
    client: TestClient, org: OrgFixture, body: bytes, field: str
) -> None:
    headers = {**org.headers(), "Content-Type": "application/json"}
    error = assert_error(client.post(W, content=body, headers=headers), 400, field)
    assert error["message"].startswith(field)
    assert Cdp(client, org).search({"fpuid": ["n1"]}) == []


def test_crm_refuses_nul_as_the_cdp_does(client: TestClient, org: OrgFixture) -> None:
    body = rb'{"firstName":"a\u0000b","emails":["nul@acme.com"]}'
    r = client.post(
        "/v2/crm/people", content=body, headers={**org.bearer, "Content-Type": "application/json"}
    )
    assert_error(r, 400, "firstName")


@pytest.mark.parametrize("path", ["/healthz", "/v2/crm/people", "/openapi.json"])
def test_head_answers_as_get_without_a_body(client: TestClient, org: OrgFixture, path: str) -> None:
    get = client.get(path, headers=org.bearer)
    head = client.head(path, headers=org.bearer)
    assert (head.status_code, head.content) == (get.status_code, b"")
    assert get.status_code == 200 and get.content
    assert head.headers["content-length"] == get.headers["content-length"]
    assert head.headers["content-type"] == get.headers["content-type"]
