"""SIGTERM to ``profilehub serve`` while writes are queued: every write whose request the server
had taken (its connection accepted) before the signal is answered, not reset, and every write
answered 2xx is in the database after the process exits; on both databases."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from profilehub.profiles import ProfileService
from profilehub.store.database import Database
from tests.serve_process import new_org, serve

REQUESTS = 24
RECORDS = 100  # per _bulk request: enough that the writer is still busy when the signal comes


def _bulk_request(apikey: str, org_id: int, n: int, host: str) -> bytes:
    records = [
        {
            "orgId": org_id,
            "region": "EU",
            "ids": {"email": f"r{n}-{i}@acme.com"},
            "upsert": {"profile": {"n": i}},
        }
        for i in range(RECORDS)
    ]
    body = json.dumps(records).encode()
    head = (
        f"POST /cdp/v1/users/_bulk HTTP/1.1\r\nHost: {host}\r\napikey: {apikey}\r\n"
        f"scopes: profile.write\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def _read_answer(sock: socket.socket) -> tuple[int | None, str]:
    """(status, '') for a whole answer; (None, what went wrong) for a reset or a cut answer."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except OSError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return None, f"no whole answer: {data[:200]!r}"
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        None,
    )
    if length is not None and len(body) != length:
        return None, f"answer cut at {len(body)} of {length} bytes"
    return int(head.split(b" ")[1]), ""


def test_sigterm_answers_and_keeps_every_queued_write(database_url: str, tmp_path: Path) -> None:
    org = new_org(database_url)
    with serve(database_url, tmp_path) as server:
        host, port = "127.0.0.1", server.port
        probe = f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
        socks = []
        for _ in range(REQUESTS):
            sock = socket.create_connection((host, port), timeout=120)
            # An answer on it first: the server has accepted this connection, which stays open.
            sock.sendall(probe)
            assert _read_one(sock)[0] == 200
            socks.append(sock)
        for n, sock in enumerate(socks):
            sock.sendall(_bulk_request(org.apikey, org.org_id, n, f"{host}:{port}"))
        answers: list[tuple[int | None, str, float]] = [(None, "not read", 0.0)] * REQUESTS

        def read(n: int) -> None:
            status, problem = _read_answer(socks[n])
            answers[n] = (status, problem, time.monotonic())

        readers = [threading.Thread(target=read, args=(n,)) for n in range(REQUESTS)]
        for t in readers:
            t.start()
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        for t in readers:
            t.join(timeout=120)
        # uvicorn re-raises the signal once shut down: "killed by SIGTERM" is its clean exit.
        assert server.proc.wait(timeout=120) in (0, -signal.SIGTERM), server.log.read_text()[-2000:]
    for sock in socks:
        sock.close()
    problems = [(n, a[1]) for n, a in enumerate(answers) if a[0] is None]
    assert problems == [], problems
    assert [a[0] for a in answers] == [200] * REQUESTS
    # The test means something only if writes were still queued when the signal came.
    answered_after = sum(1 for a in answers if a[2] > signalled)
    if answered_after == 0:
        pytest.fail("every write was answered before SIGTERM: raise RECORDS so some are still queued")
    # Every acknowledged write is in the database after the process exited.
    db = Database(database_url)
    try:
        service = ProfileService(db)
        for n in range(REQUESTS):
            emails = [f"r{n}-{i}@acme.com" for i in range(RECORDS)]
            found = service.search(org.org_id, None, {"email": emails})
            assert len(found) == RECORDS, (n, len(found))
    finally:
        db.close()
    assert "Waiting for application shutdown" in server.log.read_text()


def _read_one(sock: socket.socket) -> tuple[int, bytes]:
    """One answer on a kept-alive connection: (status, head); EOF or a reset raise."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed without an answer after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("answer cut")
        body += chunk
    return int(head.split(b" ")[1]), head.lower()


def test_a_request_begun_on_an_open_connection_is_answered_after_sigterm(
    database_url: str, tmp_path: Path
) -> None:
    org = new_org(database_url)
    with serve(database_url, tmp_path) as server:
        host, port = "127.0.0.1", server.port
        address = f"{host}:{port}"
        probe = f"GET /healthz HTTP/1.1\r\nHost: {address}\r\n\r\n".encode()
        begun, idle = (socket.create_connection((host, port), timeout=60) for _ in range(2))
        for sock in (begun, idle):
            # A first answer: the server has accepted this connection, which stays open.
            sock.sendall(probe)
            assert _read_one(sock)[0] == 200
        begun_request = _single_write(org.apikey, org.org_id, "begun@acme.com", address)
        begun.sendall(begun_request[:40])  # the request line and part of the headers
        time.sleep(0.3)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        begun.sendall(begun_request[40:])
        status, head = _read_one(begun)
        assert status == 200 and b"connection: close" in head
        # A connection with no request in progress at the signal: one sent within the grace.
        idle.sendall(_single_write(org.apikey, org.org_id, "idle@acme.com", address))
        status, head = _read_one(idle)
        assert status == 200 and b"connection: close" in head
        assert server.proc.wait(timeout=60) in (0, -signal.SIGTERM)
        begun.close()
        idle.close()
    db = Database(database_url)
    try:
        found = ProfileService(db).search(org.org_id, None, {"email": ["begun@acme.com", "idle@acme.com"]})
        assert len(found) == 2
    finally:
        db.close()


def _single_write(apikey: str, org_id: int, email: str, host: str) -> bytes:
    body = json.dumps({"orgId": org_id, "region": "EU", "upsert": {}, "ids": {"email": email}}).encode()
    head = (
        f"POST /cdp/v1/users HTTP/1.1\r\nHost: {host}\r\napikey: {apikey}\r\nscopes: profile.write\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body
