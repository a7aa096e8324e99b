"""While the database is unreachable every route answers 503 with Retry-After, in the one error
shape, on a keep-alive connection that stays open: never a 500, never a reset.

PostgreSQL goes away through a proxy that drops every connection and refuses new ones (the shared
server keeps running); SQLite goes away when its file can no longer be opened. The credential
cache is off, so every request checks its credential against the database, as after the cache
expired during an outage.
"""

from __future__ import annotations

import http.client
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from fastapi import FastAPI

from profilehub.app import create_app
from profilehub.config import Settings
from tests.conftest import OrgFixture, make_org
from tests.served import TcpProxy, served

WRITE = {"orgId": 1234, "region": "EU", "ids": {"crm_id": "C-1"}, "upsert": {"profile": {"a": 1}}}


def _routes(org: OrgFixture) -> list[tuple[str, str, str, Any, dict[str, str]]]:
    cdp = {**org.headers(), "Content-Type": "application/json"}
    crm = {**org.bearer, "Content-Type": "application/json"}
    return [
        # (what, method, path, body, headers)
        ("CDP write, fast path", "POST", "/cdp/v1/users", WRITE, cdp),
        ("CDP write, curl's content type", "POST", "/cdp/v1/users", WRITE, {**org.headers()}),
        ("CDP search", "POST", "/cdp/v1/users/_search", {"orgId": 1234, "search": {"crm_id": ["C-1"]}}, cdp),
        (
            "CDP delete",
            "POST",
            "/cdp/v1/users/_delete",
            {"orgId": 1234, "region": "EU", "ids": {"crm_id": ["C-1"]}},
            cdp,
        ),
        ("CDP bulk", "POST", "/cdp/v1/users/_bulk", [WRITE], cdp),
        ("CRM list", "GET", "/v2/crm/people", None, crm),
        ("CRM create", "POST", "/v2/crm/people", {"firstName": "Ada", "emails": ["ada@acme.com"]}, crm),
        ("CRM bulk", "PUT", "/v2/crm/people/_bulk", {"people": [{"emails": ["bo@acme.com"]}]}, crm),
        ("readiness", "GET", "/readyz", None, {}),
    ]


def _request(
    conn: http.client.HTTPConnection, method: str, path: str, body: Any, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def _check_every_route(
    app: FastAPI, org: OrgFixture, take_database_away: Callable[[], None], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "profilehub.access")
    with served(app) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        status, _, text = _request(
            conn, "POST", "/cdp/v1/users", WRITE, {**org.headers(), "Content-Type": "application/json"}
        )
        assert status == 200, text
        keep_alive = conn.sock
        take_database_away()
        caplog.clear()
        for what, method, path, body, headers in _routes(org):
            # A reset would raise here (RemoteDisconnected) or drop the socket.
            status, answer_headers, text = _request(conn, method, path, body, headers)
            assert status == 503, (what, status, text)
            assert answer_headers.get("retry-after") == "1", (what, answer_headers)
            error = json.loads(text)
            assert error["success"] is False and error["status"] == 503, (what, error)
            assert error["message"].startswith("database:"), (what, error)
            assert conn.sock is keep_alive, f"{what}: the connection was closed"
        # Each 503 is logged (and counted) under its route, the credential check's before routing too.
        access = [r for r in caplog.records if r.name == "profilehub.access"]
        assert [(r.method, r.route, r.status) for r in access] == [  # type: ignore[attr-defined]
            (method, path, 503) for _, method, path, _, _ in _routes(org)
        ]
        # Alive all the same: restarting the process would not bring the database back.
        status, _, text = _request(conn, "GET", "/healthz", None, {})
        assert status == 200, text
        conn.close()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_every_route_answers_503_while_postgresql_is_unreachable(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    parts = urlsplit(database_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    netloc = f"{parts.username}@127.0.0.1:{proxy.port}"
    app = create_app(
        Settings(database_url=urlunsplit(parts._replace(netloc=netloc)), credential_cache_seconds=0)
    )
    try:
        _check_every_route(app, make_org(app.state.db), proxy.cut, caplog)
    finally:
        app.state.db.close()


def test_every_route_answers_503_while_the_sqlite_file_cannot_be_opened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "data"
    home.mkdir()
    app = create_app(Settings(database_url=f"sqlite:///{home / 'profilehub.db'}", credential_cache_seconds=0))

    def take_database_away() -> None:
        # As when the volume is gone: opened connections are dropped, new ones cannot open the file.
        shutil.move(home, tmp_path / "gone")
        app.state.db.engine.dispose()
        app.state.db._writer_engine.dispose()

    try:
        _check_every_route(app, make_org(app.state.db), take_database_away, caplog)
    finally:
        app.state.db.close()
