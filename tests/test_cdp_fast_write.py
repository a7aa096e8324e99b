"""The fast path of POST /cdp/v1/users answers exactly as the FastAPI route does.

The same requests go to an app with the fast path and to one without it (the FastAPI route
alone), each on its own fresh database; statuses, headers and bodies must match once the
values that differ by nature (ucids, timestamps) are masked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from profilehub.cdp.routes import FastWriteUser
from tests.conftest import OrgFixture, make_org
from tests.fast_path import JSON, UUID, Apps, answer, fast_and_framework, spy_on_answers
from tests.fast_path import as_json as _json

W = "/cdp/v1/users"
UCID = "d7a6bc75-2c87-4650-91dc-c212771866c9"


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "orgId": 1234,
        "region": "EU",
        "ids": {"email": "Jane.Doe@Acme.com", "crm_id": "C-1"},
        "upsert": {"profile": {"first_name": "Jane"}, "consent": {"gdpr_marketing": "yes"}},
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


def _nested(depth: int) -> bytes:
    return b'{"orgId":1234,"region":"EU","ids":{"crm_id":"N"},"upsert":{"profile":{"deep":' + (
        b"[" * depth + b"]" * depth + b"}}}"
    )


# (label, body bytes, extra headers, keep the default apikey/scopes headers)
CASES: list[tuple[str, bytes, dict[str, str], bool]] = [
    ("plain write", _json(_body()), JSON, True),
    ("same person again", _json(_body(upsert={"profile": {"last_name": "Doe"}})), JSON, True),
    ("charset", _json(_body(ids={"crm_id": "C-2"})), {"Content-Type": "application/json; charset=utf-8"}, True),
    ("upper-case type", _json(_body(ids={"crm_id": "C-3"})), {"Content-Type": "Application/JSON"}, True),
    ("curl default type", _json(_body(ids={"crm_id": "C-4"})), {"Content-Type": "application/x-www-form-urlencoded"}, True),
    ("no content type", _json(_body(ids={"crm_id": "C-5"})), {}, True),
    ("+json type", _json(_body(ids={"crm_id": "C-6"})), {"Content-Type": "application/vnd.acme+json"}, True),
    ("text/plain", _json(_body()), {"Content-Type": "text/plain"}, True),
    ("blocked id notice", _json(_body(ids={"crm_id": "C-7", "AdId": "00000000-0000-0000-0000-000000000000"})), JSON, True),
    ("unknown ucid", _json(_body(ucid=UCID)), JSON, True),
    ("ucid without hyphens", _json(_body(ucid=UCID.replace("-", "").upper())), JSON, True),
    ("not a ucid", _json(_body(ucid="nope")), JSON, True),
    ("foreign org", _json(_body(orgId=999)), JSON, True),
    ("org as text", _json(_body(orgId="1234")), JSON, True),
    ("org as bool", _json(_body(orgId=True)), JSON, True),
    ("region too long", _json(_body(region="E" * 17)), JSON, True),
    ("unknown region", _json(_body(region="MARS")), JSON, True),
    ("extra field", _json(_body(extra=1)), JSON, True),
    ("orgId missing", _json(_body(orgId=...)), JSON, True),
    ("ids empty", _json(_body(ids={})), JSON, True),
    ("unknown idType", _json(_body(ids={"shoe_size": "42"})), JSON, True),
    ("array body", _json([_body()]), JSON, True),
    ("string body", b'"x"', JSON, True),
    ("empty body", b"", JSON, True),
    ("not JSON", b"{nope", JSON, True),
    ("NaN", b'{"orgId":1234,"region":"EU","ids":{"crm_id":"X"},"upsert":{"profile":{"n":NaN}}}', JSON, True),
    ("1e400", b'{"orgId":1234,"region":"EU","ids":{"crm_id":"X"},"upsert":{"profile":{"n":1e400}}}', JSON, True),
    ("big integer", b'{"orgId":1234,"region":"EU","ids":{"crm_id":"X"},"upsert":{"profile":{"n":123456789012345678901234}}}', JSON, True),
    ("lone surrogate", b'{"orgId":1234,"region":"EU","ids":{"crm_id":"X"},"upsert":{"profile":{"n":"\\ud800"}}}', JSON, True),
    ("NUL", b'{"orgId":1234,"region":"EU","ids":{"crm_id":"X\\u0000"},"upsert":{}}', JSON, True),
    ("BOM", b"\xef\xbb\xbf" + _json(_body(ids={"crm_id": "C-8"})), JSON, True),
    ("not UTF-8", b'{"orgId":1234,"region":"EU","ids":{"crm_id":"\xff"}}', JSON, True),
    ("duplicate keys", b'{"orgId":1,"orgId":1234,"region":"EU","upsert":{},"ids":{"crm_id":"C-9"}}', JSON, True),
    ("nesting 20", _nested(20), JSON, True),
    ("nesting 150", _nested(150), JSON, True),
    ("nesting 3000", _nested(3000), JSON, True),
    ("no apikey", _json(_body()), {**JSON, "scopes": "profile.write"}, False),
    ("unknown apikey", _json(_body()), {**JSON, "apikey": "phk_1234_nope", "scopes": "profile.write"}, False),
    ("empty apikey", _json(_body()), {**JSON, "apikey": "", "scopes": "profile.write"}, False),
    ("no scopes", _json(_body()), {**JSON, "apikey": "<key>"}, False),
    ("read scope only", _json(_body()), {**JSON, "apikey": "<key>", "scopes": "profile.read"}, False),
    ("unknown scope", _json(_body()), {**JSON, "apikey": "<key>", "scopes": "profile.write,x"}, False),
    ("bearer without JWT setup", _json(_body()), {**JSON, "Authorization": "Bearer x.y.z", "orgId": "1234", "scopes": "profile.write"}, False),
    ("bad body, no apikey", b"{nope", {**JSON, "scopes": "profile.write"}, False),
    ("bad shape, no apikey", _json([1]), {**JSON, "scopes": "profile.write"}, False),
]  # fmt: skip

# Successful writes the fast path leaves to the framework (the rest must take it).
FRAMEWORK_ONLY = {"+json type"}


def _mask(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _mask(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, key) for v in value]
    if key.endswith("_ts"):
        return "<ts>"
    if isinstance(value, str):
        return UUID.sub("<uuid>", value) if value != UCID else value
    return value


def _answer(client: TestClient, org: OrgFixture, body: bytes, headers: dict[str, str], auth: bool) -> Any:
    sent = {k: (org.apikey if v == "<key>" else v) for k, v in headers.items()}
    if auth:
        sent = {**org.headers("profile.write"), **sent}
    return answer(client.post(W, content=body, headers=sent), _mask)


@pytest.fixture
def apps(database_url: str) -> Iterator[Apps]:
    with fast_and_framework(database_url, FastWriteUser) as both:
        yield both


def test_fast_path_answers_as_the_framework_route(apps: Apps, monkeypatch: pytest.MonkeyPatch) -> None:
    fast, framework, fast_org, framework_org = apps
    answered = spy_on_answers(monkeypatch, FastWriteUser)
    for label, body, headers, auth in CASES:
        answered.clear()
        ours = _answer(fast, fast_org, body, headers, auth)
        theirs = _answer(framework, framework_org, body, headers, auth)
        assert ours == theirs, label
        if ours[0] == 200 and label not in FRAMEWORK_ONLY:
            assert answered == [True], label


def test_chunked_body_is_written(client: TestClient, app: FastAPI) -> None:
    org = make_org(app.state.db)
    body = _json(_body())
    response = client.post(W, content=iter([body[:10], body[10:]]), headers=org.headers("profile.write"))
    assert response.status_code == 200, response.text
    [profile] = response.json()
    assert profile["profile"]["first_name"] == "Jane"
