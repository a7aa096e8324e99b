"""One delivery attempt: a POST of the event, signed the Standard Webhooks way.

Headers: ``webhook-id`` (the event id, the same on every attempt, so receivers can drop
repeats), ``webhook-timestamp`` (epoch seconds of this attempt) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``), made by the ``standardwebhooks``
package receivers verify with.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from urllib.parse import unquote

import httpx
from standardwebhooks.webhooks import Webhook

USER_AGENT = "profilehub-webhooks"
# httpx logs every request's URL at INFO: an endpoint's URL may carry a token, and a busy endpoint
# would fill the server's log. Delivery failures are in `webhook list` instead.
logging.getLogger("httpx").setLevel(logging.WARNING)
# Kept in the endpoint's state and shown by `webhook list`: enough to tell why, never a body.
MAX_ERROR_CHARS = 200
# A receiver's answer body is read (so the connection can be used again) up to this much; a
# longer one is dropped with its connection. Its status line and headers: at most this much.
MAX_ANSWER_BYTES = 64 * 1024
MAX_HEAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    error: str | None = None


def signed_headers(signer: Webhook, event_id: str, body: str, at: float) -> dict[str, str]:
    moment = datetime.fromtimestamp(int(at), tz=UTC)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at)),
        "webhook-signature": signer.sign(event_id, moment, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


@dataclass(frozen=True)
class Address:
    """Where an endpoint's URL sends requests: the connection's end and the request's target."""

    https: bool
    host: str
    port: int
    target: str  # path and query
    host_header: str
    authorization: str | None  # from a URL's user:password@, as a browser or httpx would send it


@lru_cache(maxsize=1024)
def address(url: str) -> Address:
    """The parts of an endpoint's URL (checked by ``endpoints.check_url``) a request needs; the
    host IDNA-encoded as httpx does."""
    parsed = httpx.URL(url)
    https = parsed.scheme == "https"
    host = parsed.raw_host.decode("ascii")
    port = parsed.port or (443 if https else 80)
    default = port == (443 if https else 80)
    shown = f"[{host}]" if ":" in host else host
    authorization = None
    if parsed.userinfo:
        user, _, password = parsed.userinfo.decode("ascii").partition(":")
        pair = f"{unquote(user)}:{unquote(password)}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode("ascii")
    return Address(
        https=https,
        host=host,
        port=port,
        target=parsed.raw_path.decode("ascii") or "/",
        host_header=shown if default else f"{shown}:{port}",
        authorization=authorization,
    )


class BadAnswer(ValueError):
    """The endpoint's answer is not HTTP/1.x as we read it."""


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class WebhookSender:
    """A minimal HTTP/1.1 client on the deliverer's event loop, keeping connections alive per
    endpoint host: each attempt (connecting, sending, the whole answer) has ``timeout`` seconds,
    so a slow or unreachable endpoint costs its own delivery at most that, and never anything of
    the server's writes.

    Why not a client library: measured per request on this project's 2-core machine, httpx's
    asyncio client cost 2.5 ms of CPU, its blocking one from a thread pool 0.9 ms (plus the
    interpreter lock handed between 32 threads), the standard library's ``http.client`` 0.15 ms
    plus the same threads; this, in one thread, needs none of them (bench/NOTES-delivery.md).
    It sends one POST with a ``content-length`` and reads the status, the headers and the body
    (by length, chunked or to the end) of the answer, which is all a webhook needs.
    """

    def __init__(self, timeout: float, connections: int = 32) -> None:
        self.timeout = timeout
        self.connections = connections  # kept open per host, at most
        self._idle: dict[tuple[bool, str, int], list[Connection]] = {}
        self._tls: ssl.SSLContext | None = None

    async def _open(self, where: Address) -> Connection:
        tls = None
        if where.https:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        return await asyncio.open_connection(
            where.host, where.port, ssl=tls, server_hostname=where.host if tls else None, limit=MAX_HEAD_BYTES
        )

    def _reuse(self, where: Address) -> Connection | None:
        idle = self._idle.get((where.https, where.host, where.port))
        while idle:
            reader, writer = idle.pop()
            if not writer.is_closing() and not reader.at_eof():
                return reader, writer
            writer.close()
        return None

    def _keep(self, where: Address, conn: Connection) -> None:
        idle = self._idle.setdefault((where.https, where.host, where.port), [])
        if len(idle) < self.connections:
            idle.append(conn)
        else:
            conn[1].close()

    async def post(self, url: str, signer: Webhook, event_id: str, body: str, at: float) -> Outcome:
        """POST ``body`` signed by ``signer`` (``Webhook(secret)``) as of epoch seconds ``at``."""
        where = address(url)
        request = _request(where, signed_headers(signer, event_id, body, at), body.encode())
        for _ in range(2):
            conn = self._reuse(where)
            reused = conn is not None
            try:
                async with asyncio.timeout(self.timeout):
                    if conn is None:
                        conn = await self._open(where)
                    reader, writer = conn
                    writer.write(request)
                    await writer.drain()
                    status, keep = await _answer(reader)
            except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as exc:
                if conn is not None:
                    conn[1].close()
                if reused and not (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                    # The receiver had closed the kept-alive connection while it was idle: send
                    # again on a new one (at least once, with the same webhook-id).
                    continue
                return Outcome(False, "the connection closed before an answer")
            except TimeoutError:
                if conn is not None:
                    conn[1].close()
                return Outcome(False, "timed out")
            except (OSError, BadAnswer, asyncio.LimitOverrunError, ValueError) as exc:
                if conn is not None:
                    conn[1].close()
                return Outcome(False, _error(exc))
            except BaseException:  # cancelled (a stop past its grace): the connection is in an unknown state
                if conn is not None:
                    conn[1].close()
                raise
            if keep:
                self._keep(where, conn)
            else:
                conn[1].close()
            if 200 <= status < 300:
                return Outcome(True)
            return Outcome(False, f"HTTP {status}")
        return Outcome(False, "the connection closed twice before an answer")

    def close(self) -> None:
        for idle in self._idle.values():
            for _, writer in idle:
                writer.close()
        self._idle.clear()


def _request(where: Address, headers: dict[str, str], payload: bytes) -> bytes:
    lines = [f"POST {where.target} HTTP/1.1", f"host: {where.host_header}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if where.authorization:
        lines.append(f"authorization: {where.authorization}")
    lines.append(f"content-length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """The answer's status, and whether its connection can carry the next request (its body was
    read whole). Interim answers (1xx) are skipped."""
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        parts = lines[0].split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise BadAnswer(f"not an HTTP/1.x answer: {lines[0][:80]!r}")
        status = int(parts[1])
        fields: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip().lower()
        if not 100 <= status < 200 or status == 101:
            break
    keep = parts[0] == b"HTTP/1.1" and b"close" not in fields.get(b"connection", b"")
    if status in (101, 204, 304):
        return status, keep and status != 101
    if b"chunked" in fields.get(b"transfer-encoding", b""):
        return status, keep and await _chunks(reader)
    length = fields.get(b"content-length")
    if length is None:
        return status, False  # the body runs to the connection's end: not read, the connection closed
    if not length.isdigit():
        raise BadAnswer(f"content-length {length[:40]!r}")
    if int(length) > MAX_ANSWER_BYTES:
        return status, False
    await reader.readexactly(int(length))
    return status, keep


async def _chunks(reader: asyncio.StreamReader) -> bool:
    """Read a chunked body through its trailers; False (left unread) past ``MAX_ANSWER_BYTES``."""
    read = 0
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip() or b"x", 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the end
                pass
            return True
        read += size
        if read > MAX_ANSWER_BYTES:
            return False
        await reader.readexactly(size + 2)


def _error(exc: BaseException) -> str:
    return (f"{type(exc).__name__}: {exc}")[:MAX_ERROR_CHARS]
