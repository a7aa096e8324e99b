"""A request without a valid credential is refused before its body is read: anyone could
otherwise make the server buffer and parse 8 MB bodies (see bench/abuse.py for the effect)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.types import Message

from tests.conftest import OrgFixture

SIZE = 60 * 1024  # a body the server would otherwise read (larger ones are refused after a pause)
CHUNK = 16 * 1024


def _call(
    app: FastAPI, method: str, path: str, headers: dict[str, str], chunked: bool = False
) -> tuple[int, dict[str, str], Any, int]:
    """Run one request through the ASGI app; the body is handed out only as the app reads it."""
    body = json.dumps([{"pad": "x" * (SIZE - 20)}]).encode()
    head = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    head.append((b"content-type", b"application/json"))
    head.append(
        (b"transfer-encoding", b"chunked") if chunked else (b"content-length", str(len(body)).encode())
    )
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": head,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    reads = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        start = (reads - 1) * CHUNK
        return {
            "type": "http.request",
            "body": body[start : start + CHUNK],
            "more_body": start + CHUNK < len(body),
        }

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    answer = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    answer_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], answer_headers, json.loads(answer), reads


REFUSED = [
    # (id, method, path, headers, field named)
    ("cdp-bulk-no-key", "POST", "/cdp/v1/users/_bulk", {}, "apikey"),
    (
        "cdp-bulk-unknown-key",
        "POST",
        "/cdp/v1/users/_bulk",
        {"apikey": "phk_1234_nosuchkey", "scopes": "profile.write"},
        "apikey",
    ),
    ("cdp-write-revoked-form", "POST", "/cdp/v1/users", {"apikey": "not-a-key"}, "apikey"),
    (
        "cdp-jwt-not-configured",
        "POST",
        "/cdp/v1/users/_search",
        {"Authorization": "Bearer x.y.z", "orgId": "1234"},
        "Authorization",
    ),
    ("crm-bulk-no-token", "PUT", "/v2/crm/people/_bulk", {}, "Authorization"),
    (
        "crm-unknown-token",
        "POST",
        "/v2/crm/people",
        {"Authorization": "Bearer pht_1234_nosuchtoken"},
        "Authorization",
    ),
]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    ("method", "path", "headers", "field"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED]
)
def test_no_body_is_read_before_the_credential_is_checked(
    app: FastAPI, org: OrgFixture, chunked: bool, method: str, path: str, headers: dict[str, str], field: str
) -> None:
    status, answer_headers, error, reads = _call(app, method, path, headers, chunked)
    assert (status, reads) == (401, 0), error
    assert error["success"] is False and error["status"] == 401 and error["message"].startswith(field), error
    # The unread body is not wanted: the connection is not kept for the next request.
    assert answer_headers.get("connection") == "close"


def test_a_valid_credential_gets_its_body_read(app: FastAPI, org: OrgFixture) -> None:
    status, _, answer, reads = _call(app, "POST", "/cdp/v1/users/_bulk", org.headers("profile.write"))
    assert reads > 1
    # The padding record is refused on its own (no orgId): the body was read and parsed.
    assert status == 200 and answer[0]["status"] == 400, answer
