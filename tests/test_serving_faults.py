"""What a real ``profilehub serve`` does with clients that are slow, anonymous or not speaking
proper HTTP: raw sockets against a served process. The behaviour is the HTTP layer's, the same
for both databases, so the server runs on SQLite."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import OrgFixture
from tests.serve_process import new_org, serve

TIMEOUT = 1  # the server's header timeout here, in seconds
BODY_TIMEOUT = 3  # and its body timeout: beyond the 1 s pause before refusing a large anonymous body


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, OrgFixture]]:
    home = tmp_path_factory.mktemp("serve")
    url = f"sqlite:///{home / 'profilehub.db'}"
    org = new_org(url)
    with serve(
        url,
        home,
        access_log=True,
        PROFILEHUB_HEADER_TIMEOUT_SECONDS=str(TIMEOUT),
        PROFILEHUB_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT),
    ) as served:
        yield served.port, org


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    # Long enough for any timeout of the server's to have fired several times over.
    sock.settimeout(10 * BODY_TIMEOUT + 5)
    return sock


def _until_closed(sock: socket.socket, trickle: bytes = b"") -> bytes:
    """Everything the server sends until it closes; ``trickle`` is sent a byte at a time meanwhile.

    A server closing while the client still sends resets the connection, and the client may then
    lose what was sent to it: a reset counts as closed, with whatever arrived before it.
    """
    received = b""
    try:
        for byte in trickle:
            sock.sendall(bytes([byte]))
            sock.settimeout(0.2)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            received += chunk
            if not chunk:
                return received
        # Not closed yet (or never trickling): wait, far longer than the server's timeouts.
        sock.settimeout(10 * BODY_TIMEOUT + 5)
        while chunk := sock.recv(65536):
            received += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    return received


def _timed_out(raw: bytes, field: str) -> None:
    # Closed, and if the answer outran the reset, it is a 408 naming what was late.
    if raw:
        _error(raw, 408, field)


def _answer(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def _error(raw: bytes, status: int, field: str) -> dict[str, Any]:
    code, headers, body = _answer(raw)
    assert code == status, raw
    assert headers["content-type"] == "application/json"
    error: dict[str, Any] = json.loads(body)
    assert error["success"] is False and error["status"] == status, error
    assert error["message"].startswith(f"{field}:"), error
    return error


def test_a_connection_stuck_in_its_headers_is_closed(server: tuple[int, OrgFixture]) -> None:
    port, _ = server
    with _connect(port) as partial:
        partial.sendall(b"POST /cdp/v1/users HTTP/1.1\r\nHost: x\r\n")
        _error(_until_closed(partial), 408, "headers")
    # A header line a byte at a time is no way around it, nor sending nothing at all.
    with _connect(port) as trickling:
        _timed_out(_until_closed(trickling, b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 200), "headers")
    with _connect(port) as silent:
        _error(_until_closed(silent), 408, "headers")


def test_a_connection_stuck_in_its_body_is_closed(server: tuple[int, OrgFixture]) -> None:
    port, org = server
    head = (
        "POST /cdp/v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"apikey: {org.apikey}\r\nscopes: profile.write\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    # Each connected when used: an idle connection would meet the header timeout instead.
    with _connect(port) as stalled:
        stalled.sendall(head + b'{"orgId": 1234')
        _error(_until_closed(stalled), 408, "body")
    with _connect(port) as trickling:
        trickling.sendall(head)
        _timed_out(_until_closed(trickling, b" " * 200), "body")


def test_an_anonymous_8_mb_body_is_refused_on_its_headers_alone(server: tuple[int, OrgFixture]) -> None:
    port, _ = server
    with _connect(port) as sock:
        # Headers only: the 401 comes without the server waiting for (or reading) the body.
        sock.sendall(
            b"POST /cdp/v1/users/_bulk HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 8000000\r\n\r\n"
        )
        raw = _until_closed(sock)
    _error(raw, 401, "apikey")
    assert _answer(raw)[1]["connection"] == "close"


@pytest.mark.parametrize(
    ("request_bytes", "status", "field"),
    [
        (b"POST /cdp/v1/users HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, "request"),
        (b"POST /cdp/v1/users HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n", 400, "request"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n", 400, "request"),
        (b"FOO /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 501, "method"),
    ],
    ids=["negative-length", "bad-length", "bad-header-name", "unknown-method"],
)
def test_framing_errors_use_the_error_shape(
    server: tuple[int, OrgFixture], request_bytes: bytes, status: int, field: str
) -> None:
    port, _ = server
    with _connect(port) as sock:
        sock.sendall(request_bytes)
        _error(_until_closed(sock), status, field)


def test_head_answers_as_get_without_a_body(server: tuple[int, OrgFixture]) -> None:
    port, _ = server
    get = httpx.get(f"http://127.0.0.1:{port}/healthz")
    with _connect(port) as sock:
        sock.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, headers, body = _answer(_until_closed(sock))
    assert (status, body) == (200, b"")
    assert headers["content-length"] == get.headers["content-length"]


def test_an_idle_kept_alive_connection_outlives_the_clients_own_idle_limit(
    server: tuple[int, OrgFixture],
) -> None:
    # uvicorn closed it after 5 s, httpx's own pool limit: a client reusing it just then got its
    # request reset (ReadError under load). Kept 75 s now, the client lets it go first.
    port, _ = server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() and conn.sock is not None
        first = conn.sock
        time.sleep(6)  # idle past the old limit
        conn.request("GET", "/healthz")
        answer = conn.getresponse()
        assert answer.status == 200 and answer.read()
        assert conn.sock is first  # the same connection, not one made again
    finally:
        conn.close()
