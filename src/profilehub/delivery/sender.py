"""One delivery attempt: a POST of the event, signed the Standard Webhooks way.

Headers: ``webhook-id`` (the event id, the same on every attempt, so receivers can drop
repeats), ``webhook-timestamp`` (epoch seconds of this attempt) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``), made by the ``standardwebhooks``
package receivers verify with.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import cast
from urllib.parse import unquote

import httptools
import httpx
from standardwebhooks.webhooks import Webhook

USER_AGENT = "profilehub-webhooks"
# Kept in the endpoint's state and shown by `webhook list`: enough to tell why, never a body.
MAX_ERROR_CHARS = 200
# A receiver's answer body is read (so the connection can be used again) up to this much; a
# longer one is dropped with its connection.
MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    error: str | None = None
    # Seconds the receiver asked to be left alone (``Retry-After`` on a 429 or 503), if it did.
    retry_after: float | None = None


# A ``Retry-After`` is honoured on these answers (RFC 6585 §4, RFC 9110 §10.2.3); elsewhere it
# means nothing for a retry.
RETRY_AFTER_STATUSES = frozenset({429, 503})


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A ``Retry-After`` value (delay-seconds or an HTTP-date) as seconds from ``now`` (epoch
    seconds), never below 0; None when absent or unreadable (then the schedule alone decides)."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not str.isdigit's "²" (latin-1 decoded)
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is GMT; a date without a zone is read as such
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


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
    """The endpoint's answer is not HTTP/1.x (``httptools`` could not parse it)."""


class Closed(ConnectionError):
    """The connection ended before the whole answer; ``answered``: some of it had arrived."""

    def __init__(self, answered: bool) -> None:
        super().__init__("the connection closed before an answer")
        self.answered = answered


class _Connection(asyncio.Protocol):
    """One kept-alive connection to an endpoint's host. ``httptools`` (llhttp, the parser of
    Node.js and of uvicorn) reads the answers as they arrive; ``send``'s future resolves with
    the status and whether the connection can carry the next request.

    It resolves as soon as both are known: at the answer's end (its body read, by length or
    chunked), or at its headers when the body runs to the connection's end (not read: the
    connection is closed), or past ``MAX_ANSWER_BYTES`` of body (likewise)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[tuple[int, bool]] | None = None
        self._status = 0
        self._body = 0
        self._answered = False  # bytes of the current answer have arrived
        self.retry_after: str | None = None  # the current answer's ``Retry-After`` header

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (create_connection's); not checked with isinstance: uvloop's
        # transports do not derive from asyncio's classes.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            # Nothing asked for (or the answer is settled): a receiver talking out of turn. The
            # connection cannot be trusted for the next request.
            self.close()
            return
        self._answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.close()  # a 101: the status is settled already, the connection is no more HTTP
        except httptools.HttpParserError as exc:
            self._fail(BadAnswer(f"not an HTTP/1.x answer: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(Closed(self._answered))

    # httptools' callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"retry-after":
            self.retry_after = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.retry_after = None  # an interim answer's headers are not the answer's
            return  # interim: the answer follows
        if self._waiter is None or self._waiter.done():
            self.close()  # a second answer in one read: out of turn, as above
            return
        self._status, self._body = status, 0
        if not self._parser.should_keep_alive():
            self._settle(status, False)

    def on_body(self, body: bytes) -> None:
        self._body += len(body)
        if self._body > MAX_ANSWER_BYTES:
            self._settle(self._status, False)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return
        self._settle(status, status != 101 and self._parser.should_keep_alive())

    # ours
    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def send(self, request: bytes) -> asyncio.Future[tuple[int, bool]]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._answered = False
        self.retry_after = None
        self.transport.write(request)
        return self._waiter

    def _settle(self, status: int, keep: bool) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((status, keep))

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class WebhookSender:
    """Webhook requests on the deliverer's event loop, keeping connections alive per endpoint
    host: each attempt (connecting, sending, the whole answer) has ``timeout`` seconds, so a
    slow or unreachable endpoint costs its own delivery at most that, and never anything of the
    server's writes.

    The answers are read by ``httptools``; what is ours is the request's bytes (a POST with a
    ``content-length``: a request line and headers) and the pool of idle connections. Why not a
    whole client library: the deliverer's CPU comes out of the writes' on a small machine, and
    per request (signing included, 32 at a time, ``python -m bench.webhook_client``) httpx's
    asyncio client cost 2.8 ms of CPU, aiohttp's (tuned: one session, no cookies, no
    decompression) 0.13 ms, h11 over these same connections 0.10 ms, and this 0.05 ms
    (bench/NOTES-delivery.md).
    """

    def __init__(self, timeout: float, connections: int = 32) -> None:
        self.timeout = timeout
        self.connections = connections  # kept open per host, at most
        self._idle: dict[tuple[bool, str, int], list[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None

    async def _open(self, where: Address) -> _Connection:
        tls = None
        if where.https:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        _, conn = await asyncio.get_running_loop().create_connection(
            _Connection, where.host, where.port, ssl=tls, server_hostname=where.host if tls else None
        )
        return conn

    def _reuse(self, where: Address) -> _Connection | None:
        idle = self._idle.get((where.https, where.host, where.port))
        while idle:
            conn = idle.pop()
            if conn.usable:
                return conn
        return None

    def _keep(self, where: Address, conn: _Connection) -> None:
        idle = self._idle.setdefault((where.https, where.host, where.port), [])
        if len(idle) < self.connections:
            idle.append(conn)
        else:
            conn.close()

    async def post(self, url: str, signer: Webhook, event_id: str, body: str, at: float) -> Outcome:
        """POST ``body`` signed by ``signer`` (``Webhook(secret)``) as of epoch seconds ``at``."""
        try:
            where = address(url)
        except (httpx.InvalidURL, ValueError) as exc:
            return Outcome(False, _error(exc))
        request = _request(where, signed_headers(signer, event_id, body, at), body.encode())
        for _ in range(2):
            conn = self._reuse(where)
            reused = conn is not None
            try:
                async with asyncio.timeout(self.timeout):
                    if conn is None:
                        conn = await self._open(where)
                    status, keep = await conn.send(request)
            except Closed as exc:
                if reused and not exc.answered:
                    # The receiver had closed the kept-alive connection while it was idle: send
                    # again on a new one (at least once, with the same webhook-id).
                    continue
                return Outcome(False, "the connection closed before an answer")
            except TimeoutError:
                if conn is not None:
                    conn.close()
                return Outcome(False, "timed out")
            except (OSError, BadAnswer, ValueError, OverflowError) as exc:
                # OverflowError: a port out of range (an endpoint registered before URLs were
                # checked for it) fails the attempt like any connection that cannot be made.
                if conn is not None:
                    conn.close()
                return Outcome(False, _error(exc))
            except BaseException:  # cancelled (a stop past its grace): the connection is in an unknown state
                if conn is not None:
                    conn.close()
                raise
            if keep:
                self._keep(where, conn)
            else:
                conn.close()
            if 200 <= status < 300:
                return Outcome(True)
            wait = None
            if status in RETRY_AFTER_STATUSES:
                wait = retry_after_seconds(conn.retry_after, at)
            return Outcome(False, f"HTTP {status}", retry_after=wait)
        return Outcome(False, "the connection closed twice before an answer")

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


def _request(where: Address, headers: dict[str, str], payload: bytes) -> bytes:
    lines = [f"POST {where.target} HTTP/1.1", f"host: {where.host_header}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if where.authorization:
        lines.append(f"authorization: {where.authorization}")
    lines.append(f"content-length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


def _error(exc: BaseException) -> str:
    return (f"{type(exc).__name__}: {exc}")[:MAX_ERROR_CHARS]
