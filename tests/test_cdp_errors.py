"""Bad input of every kind gets a 4xx naming the field, in the one error shape, and writes nothing."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import OrgFixture, assert_error

W = "/cdp/v1/users"
S = "/cdp/v1/users/_search"
D = "/cdp/v1/users/_delete"
OK: dict[str, Any] = {
    "orgId": 1234,
    "region": "EU",
    "ids": {"crm_id": "C-1"},
    "upsert": {"profile": {"a": 1}},
}

BAD: list[tuple[str, str, Any, int, str]] = [
    # (id, path, body, status, field named)
    ("write-not-object", W, [OK], 400, "body"),
    ("write-orgId-missing", W, {k: v for k, v in OK.items() if k != "orgId"}, 400, "orgId"),
    ("write-orgId-string", W, {**OK, "orgId": "1234"}, 400, "orgId"),
    ("write-region-missing", W, {k: v for k, v in OK.items() if k != "region"}, 400, "region"),
    ("write-region-unknown", W, {**OK, "region": "MARS"}, 400, "region"),
    ("write-region-number", W, {**OK, "region": 5}, 400, "region"),
    ("write-unknown-field", W, {**OK, "idz": {}}, 400, "idz"),
    ("write-ids-not-object", W, {**OK, "ids": ["crm_id"]}, 400, "ids"),
    ("write-ids-empty", W, {**OK, "ids": {}}, 400, "ids"),
    ("write-id-unknown-type", W, {**OK, "ids": {"shoe_size": "42"}}, 400, "ids.shoe_size"),
    ("write-id-list", W, {**OK, "ids": {"crm_id": ["a", "b"]}}, 400, "ids.crm_id"),
    ("write-id-bool", W, {**OK, "ids": {"crm_id": True}}, 400, "ids.crm_id"),
    ("write-id-null", W, {**OK, "ids": {"crm_id": None}}, 400, "ids.crm_id"),
    ("write-id-too-long", W, {**OK, "ids": {"crm_id": "x" * 600}}, 400, "ids.crm_id"),
    ("write-bad-email", W, {**OK, "ids": {"email": "not-an-email"}}, 400, "ids.email"),
    ("write-bad-phone", W, {**OK, "ids": {"cellphone": "call me maybe"}}, 400, "ids.cellphone"),
    (
        "write-phone-no-country",
        W,
        {**OK, "region": "EU", "ids": {"cellphone": "030 1234"}},
        400,
        "ids.cellphone",
    ),
    ("write-upsert-not-object", W, {**OK, "upsert": "yes"}, 400, "upsert"),
    ("write-unknown-category", W, {**OK, "upsert": {"shoes": {"size": 42}}}, 400, "upsert.shoes"),
    ("write-category-not-object", W, {**OK, "upsert": {"profile": [1, 2]}}, 400, "upsert.profile"),
    ("write-reserved-attribute", W, {**OK, "upsert": {"profile": {"_ts": "1"}}}, 400, "upsert.profile._ts"),
    ("write-ucid-not-uuid", W, {**OK, "ucid": "abc"}, 400, "ucid"),
    ("search-missing", S, {"orgId": 1234}, 400, "search"),
    ("search-empty", S, {"orgId": 1234, "search": {}}, 400, "search"),
    ("search-unknown-key", S, {"orgId": 1234, "search": {"shoe": ["1"]}}, 400, "search.shoe"),
    ("search-values-not-list", S, {"orgId": 1234, "search": {"crm_id": {"a": 1}}}, 400, "search.crm_id"),
    (
        "search-too-many",
        S,
        {"orgId": 1234, "search": {"crm_id": [str(i) for i in range(1001)]}},
        400,
        "search",
    ),
    ("search-bad-region", S, {"orgId": 1234, "regions": ["XX"], "search": {"crm_id": ["1"]}}, 400, "regions"),
    ("search-bad-ucid", S, {"orgId": 1234, "search": {"ucid": ["nope"]}}, 400, "search.ucid"),
    (
        "delete-two-types",
        D,
        {"orgId": 1234, "region": "EU", "ids": {"crm_id": ["1"], "AdId": ["2"]}},
        400,
        "ids",
    ),
    ("delete-no-ids", D, {"orgId": 1234, "region": "EU", "ids": {}}, 400, "ids"),
    (
        "delete-too-many",
        D,
        {"orgId": 1234, "region": "EU", "ids": {"crm_id": [str(i) for i in range(401)]}},
        400,
        "ids.crm_id",
    ),
    ("delete-region-missing", D, {"orgId": 1234, "ids": {"crm_id": ["1"]}}, 400, "region"),
    (
        "delete-notify-not-bool",
        D,
        {"orgId": 1234, "region": "EU", "ids": {"crm_id": ["1"]}, "sendEmailNotification": "maybe"},
        400,
        "sendEmailNotification",
    ),
]


def _counts(app: FastAPI) -> tuple[int, ...]:
    with app.state.db.read() as conn:
        return tuple(
            conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("profiles", "profile_ids", "changes")
        )


@pytest.mark.parametrize(("path", "body", "status", "field"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_names_the_field_and_writes_nothing(
    client: TestClient, app: FastAPI, org: OrgFixture, path: str, body: Any, status: int, field: str
) -> None:
    client.post(W, json={**OK, "ids": {"crm_id": "existing"}}, headers=org.headers())
    before = _counts(app)
    assert_error(client.post(path, json=body, headers=org.headers()), status, field)
    assert _counts(app) == before


@pytest.mark.parametrize(
    ("raw", "status", "field"),
    [
        (b"{not json", 400, "body"),
        (b"", 400, "body"),
        (b'{"orgId": 1234, "region": "EU", "upsert": {}, "ids": {"crm_id": "\\ud800"}}', 400, None),
    ],
)
def test_malformed_bodies(
    client: TestClient, org: OrgFixture, raw: bytes, status: int, field: str | None
) -> None:
    r = client.post(W, content=raw, headers={**org.headers(), "Content-Type": "application/json"})
    assert r.status_code < 500
    if r.status_code != 200:
        assert_error(r, status, field)


def test_body_over_the_limit_is_413(client: TestClient, org: OrgFixture) -> None:
    big = {**OK, "upsert": {"profile": {"blob": "x" * 300_000}}}
    assert_error(client.post(W, json=big, headers=org.headers()), 413, "body")


def test_chunked_body_over_the_limit_is_413(client: TestClient, org: OrgFixture) -> None:
    def chunks() -> Any:
        yield b'{"orgId": 1234, "region": "EU", "ids": {"crm_id": "1"}, "upsert": {"profile": {"b": "'
        for _ in range(40):
            yield b"x" * 10_000
        yield b'"}}}'

    assert_error(client.post(W, content=chunks(), headers=org.headers()), 413, "body")


def test_curl_default_content_type_is_read_as_json(client: TestClient, org: OrgFixture) -> None:
    import json

    r = client.post(
        W,
        content=json.dumps(OK),
        headers={**org.headers(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text


def test_other_media_types_are_415(client: TestClient, org: OrgFixture) -> None:
    r = client.post(W, content=b"<xml/>", headers={**org.headers(), "Content-Type": "text/xml"})
    assert_error(r, 415, "Content-Type")


@pytest.mark.parametrize(
    ("path", "coding", "dialect"),
    [
        (W, "gzip", "cdp"),
        ("/cdp/v1/users/_bulk", "gzip", "cdp"),
        ("/v2/crm/people?matchingAttribute=email", "GZIP", "crm"),
        (W, "br, gzip", "cdp"),
    ],
)
def test_a_compressed_body_is_415_saying_identity_is_accepted(
    client: TestClient, org: OrgFixture, path: str, coding: str, dialect: str
) -> None:
    body: Any = OK if dialect == "cdp" else {"firstName": "Ada", "emails": ["ada@example.org"]}
    if path.endswith("_bulk"):
        body = [OK]
    method = "PUT" if dialect == "crm" else "POST"
    auth = org.headers() if dialect == "cdp" else org.bearer
    headers = {**auth, "Content-Type": "application/json", "Content-Encoding": coding}
    r = client.request(method, path, content=gzip.compress(json.dumps(body).encode()), headers=headers)
    assert_error(r, 415, "Content-Encoding")
    assert r.headers["Accept-Encoding"] == "identity"
    assert coding.lower() in r.json()["message"], r.text
    found = client.post(S, json={"orgId": 1234, "search": {"crm_id": ["C-1"]}}, headers=org.headers())
    assert found.json() == [], "the body was not read, so nothing was written"


def test_an_identity_content_encoding_is_read_as_is(client: TestClient, org: OrgFixture) -> None:
    headers = {**org.headers(), "Content-Encoding": "identity"}
    r = client.post(W, content=json.dumps(OK), headers=headers)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(("method", "path", "status"), [("GET", W, 405), ("POST", "/cdp/v1/nothing", 404)])
def test_routing_errors_use_the_error_shape(
    client: TestClient, org: OrgFixture, method: str, path: str, status: int
) -> None:
    assert_error(client.request(method, path, headers=org.headers(), json=OK), status)


def test_an_unreachable_database_is_503_not_500(
    client: TestClient, app: FastAPI, org: OrgFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: Any, **kwargs: Any) -> Any:
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(app.state.profiles, "search", down)
    r = client.post(S, json={"orgId": 1234, "search": {"crm_id": ["1"]}}, headers=org.headers())
    assert_error(r, 503, "database")
    assert r.headers["Retry-After"] == "1"


RAW_BAD: list[tuple[str, str, bytes, str]] = [
    # (id, path, raw JSON body, field named) — bytes, because clients can send what Python won't encode
    ("surrogate-idtype", W, rb'{"orgId":1234,"region":"EU","ids":{"\ud800":"x"},"upsert":{}}', "ids"),
    (
        "surrogate-id-value",
        W,
        rb'{"orgId":1234,"region":"EU","ids":{"fpuid":"a\ud800"},"upsert":{}}',
        "ids.fpuid",
    ),
    (
        "surrogate-category",
        W,
        rb'{"orgId":1234,"region":"EU","ids":{"fpuid":"s1"},"upsert":{"X\ud800":{"a":1}}}',
        "upsert",
    ),
    (
        "surrogate-reserved-attr",
        W,
        rb'{"orgId":1234,"region":"EU","ids":{"fpuid":"s1"},"upsert":{"profile":{"_\ud800":1}}}',
        "upsert.profile",
    ),
    (
        "surrogate-attr",
        W,
        rb'{"orgId":1234,"region":"EU","ids":{"fpuid":"s1"},"upsert":{"profile":{"a\ud800":1}}}',
        "upsert.profile",
    ),
    ("surrogate-region", W, rb'{"orgId":1234,"region":"E\ud800","upsert":{},"ids":{"fpuid":"s1"}}', "region"),
    ("surrogate-search-key", S, rb'{"orgId":1234,"search":{"\ud800":["x"]}}', "search"),
    ("surrogate-delete-key", D, rb'{"orgId":1234,"region":"EU","ids":{"\ud800":["x"]}}', "ids"),
    ("surrogate-delete-value", D, rb'{"orgId":1234,"region":"EU","ids":{"fpuid":["\ud800"]}}', "ids.fpuid"),
    ("nul-id-value", W, rb'{"orgId":1234,"region":"EU","ids":{"fpuid":"n\u00003"},"upsert":{}}', "ids.fpuid"),
    (
        "nul-email",
        W,
        rb'{"orgId":1234,"region":"EU","upsert":{},"ids":{"email":"a\u0000@b.com"}}',
        "ids.email",
    ),
    ("nul-search", S, rb'{"orgId":1234,"search":{"fpuid":["\u0000"]}}', "search.fpuid"),
    ("nul-delete", D, rb'{"orgId":1234,"region":"EU","ids":{"fpuid":["\u0000"]}}', "ids.fpuid"),
    # A NUL in a name is shown escaped, as the CRM names it (a raw NUL in the answer before).
    (
        "nul-attr",
        W,
        rb'{"orgId":1234,"region":"EU","ids":{"fpuid":"n"},"upsert":{"profile":{"a\u0000b":1}}}',
        "upsert.profile.a\\u0000b",
    ),
    (
        "nul-nested-key",
        W,
        rb'{"orgId":1234,"region":"EU","ids":{"fpuid":"n"},"upsert":{"profile":{"a":{"k\u0000":1}}}}',
        "upsert.profile.a.k\\u0000",
    ),
    ("null-search-value", S, rb'{"orgId":1234,"search":{"fpuid":[null]}}', "search.fpuid"),
    (
        "nan",
        W,
        rb'{"orgId":1234,"region":"EU","ids":{"fpuid":"n"},"upsert":{"profile":{"n":NaN}}}',
        "upsert.profile.n",
    ),
    (
        "infinity",
        W,
        rb'{"orgId":1234,"region":"EU","ids":{"fpuid":"n"},"upsert":{"profile":{"n":[-Infinity]}}}',
        "upsert.profile.n",
    ),
    (
        "overflow-float",
        W,
        rb'{"orgId":1234,"region":"EU","ids":{"fpuid":"n"},"upsert":{"consent":{"n":{"x":1e400}}}}',
        "upsert.consent.n.x",
    ),
    (
        "huge-int",
        W,
        rb'{"orgId":1234,"region":"EU","ids":{"fpuid":"n"},"upsert":{"profile":{"n":100000000000000000000000}}}',
        "upsert.profile",
    ),
    (
        "too-deep-value",
        W,
        b'{"orgId":1234,"region":"EU","ids":{"fpuid":"n"},"upsert":{"profile":{"n":'
        + b"[" * 40
        + b"]" * 40
        + b"}}}",
        "upsert.profile.n",
    ),
    ("deep-nesting", W, b"[" * 100_000 + b"]" * 100_000, "body"),
    ("5000-digit-number", W, b'{"orgId":' + b"9" * 5000 + b"}", "body"),
    ("latin-1", W, '{"orgId":1234,"region":"EU","ids":{"fpuid":"\xe9"}}'.encode("latin-1"), "body"),
]


@pytest.mark.parametrize(("path", "raw", "field"), [b[1:] for b in RAW_BAD], ids=[b[0] for b in RAW_BAD])
def test_raw_bad_bodies_are_400_naming_the_field(
    client: TestClient, app: FastAPI, org: OrgFixture, path: str, raw: bytes, field: str
) -> None:
    before = _counts(app)
    r = client.post(path, content=raw, headers={**org.headers(), "Content-Type": "application/json"})
    assert_error(r, 400, field)
    assert _counts(app) == before
    # The connection is still good for the next request (an error never kills the server's reply).
    assert client.post(W, json=OK, headers=org.headers()).status_code == 200


def test_a_bad_record_in_a_bulk_request_is_reported_not_fatal(client: TestClient, org: OrgFixture) -> None:
    raw = (
        b'[{"orgId":1234,"region":"EU","ids":{"\\ud800":"x"},"upsert":{}}, ' + json.dumps(OK).encode() + b"]"
    )
    r = client.post(
        "/cdp/v1/users/_bulk", content=raw, headers={**org.headers(), "Content-Type": "application/json"}
    )
    assert r.status_code == 200, r.text
    bad, good = r.json()
    # The bad record gets the single endpoint's 400 naming its field, at its index...
    assert bad["index"] == 0 and bad["status"] == 400, bad
    assert bad["error"]["success"] is False and bad["error"]["status"] == 400, bad
    # The key comes back escaped: no JSON text holds a lone surrogate.
    assert list(bad["error"]["errors"]) == ["ids.\\ud800"], bad
    # ...and the good one after it is written, as the answer says and a search confirms.
    assert good["index"] == 1 and good["status"] == 200, good
    assert good["profile"]["ids"]["crm"][0]["crm_id"] == "C-1" and good["profile"]["profile"]["a"] == 1
    found = client.post(
        S, json={"orgId": 1234, "search": {"crm_id": ["C-1"]}}, headers=org.headers("profile.read")
    ).json()
    assert [p["ucid"] for p in found] == [good["profile"]["ucid"]]
    assert found[0]["profile"]["a"] == 1


@pytest.mark.parametrize(
    "email", ["a" * 65 + "@x.com", "a b@x.com", "a\x01b@x.com", "a\u200bb@x.com", "a@b@x.com", "nobody"]
)
def test_cdp_refuses_the_emails_the_crm_refuses(client: TestClient, org: OrgFixture, email: str) -> None:
    assert_error(
        client.post(W, json={**OK, "ids": {"email": email}}, headers=org.headers()), 400, "ids.email"
    )
