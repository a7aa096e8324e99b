"""A PostgreSQL host that silently drops packets (a firewall, a host gone from the network) must
not hold requests: a new connection gives up after PROFILEHUB_DB_CONNECT_TIMEOUT_SECONDS and the
request answers 503 with Retry-After, as when the database refuses connections.

The proxy drops the open connections, then accepts new ones and never answers them. The client
waits far longer than the timeout (no assertion on speed: the answer must come at all).
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from profilehub.app import create_app
from profilehub.config import Settings
from tests.conftest import make_org
from tests.served import TcpProxy, served

WRITE = {"orgId": 1234, "region": "EU", "ids": {"crm_id": "C-1"}, "upsert": {"profile": {"a": 1}}}


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_requests_answer_503_when_the_database_host_drops_packets(database_url: str) -> None:
    parts = urlsplit(database_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    url = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    app = create_app(Settings(database_url=url, credential_cache_seconds=0, db_connect_timeout_seconds=2))
    org = make_org(app.state.db)
    headers = {**org.headers(), "Content-Type": "application/json"}
    try:
        with served(app) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=90) as client:
            assert client.post("/cdp/v1/users", json=WRITE, headers=headers).status_code == 200
            proxy.black_hole()
            search = {"orgId": 1234, "search": {"crm_id": ["C-1"]}}
            for what, method, path, body in [
                ("write", "POST", "/cdp/v1/users", WRITE),
                ("search", "POST", "/cdp/v1/users/_search", search),
                ("readiness", "GET", "/readyz", None),
            ]:
                # Without a connect timeout this waits until the client gives up (ReadTimeout).
                answer = client.request(method, path, json=body, headers=headers)
                assert answer.status_code == 503, (what, answer.text)
                assert answer.headers.get("retry-after") == "1", what
                assert json.loads(answer.text)["message"].startswith("database:"), (what, answer.text)
    finally:
        proxy.cut()
        app.state.db.close()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_open_connections_give_up_on_a_silent_host_after_the_connect_timeout(database_url: str) -> None:
    """An open connection to a host gone silent: libpq's ``tcp_user_timeout`` ends what it sent
    after the connect timeout (unacknowledged data is retransmitted for ~15 minutes otherwise).
    The kernel enforces it, so what is checked here is that every connection carries it, and that
    a URL's own value is kept."""
    from profilehub.store.database import Database

    db = Database(database_url, connect_timeout=3)
    try:
        with db.read() as conn:
            parameters = conn.connection.driver_connection.info.get_parameters()
        assert parameters.get("tcp_user_timeout") == "3000", parameters
    finally:
        db.close()
    own = f"{database_url}{'&' if '?' in database_url else '?'}tcp_user_timeout=12345"
    db = Database(own)
    try:
        with db.read() as conn:
            assert conn.connection.driver_connection.info.get_parameters()["tcp_user_timeout"] == "12345"
    finally:
        db.close()
