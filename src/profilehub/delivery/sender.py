"""One delivery attempt: a POST of the event, signed the Standard Webhooks way.

Headers: ``webhook-id`` (the event id, the same on every attempt, so receivers can drop
repeats), ``webhook-timestamp`` (epoch seconds of this attempt) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``), made by the ``standardwebhooks``
package receivers verify with.
"""

from __future__ import annotations

import base64
import http.client
import logging
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
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
# longer one is dropped with its connection.
MAX_ANSWER_BYTES = 64 * 1024


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


class WebhookSender:
    """Requests with a timeout on every phase (connect, send, each read): a slow or unreachable
    endpoint costs its own delivery at most about ``timeout`` seconds, and never anything of the
    server's writes.

    Requests go out from a pool of threads, each keeping one HTTP/1.1 connection alive per
    endpoint host, on the standard library's ``http.client``: a fifth of the CPU per request of
    httpx's blocking client, itself a third of its asyncio client's (bench/NOTES-delivery.md).
    The threads wait on sockets without holding the interpreter. Proxy variables (HTTP_PROXY...)
    are not used: deliveries go straight to the endpoint; https endpoints are verified against the
    system's certificate authorities.
    """

    def __init__(self, timeout: float, threads: int = 32) -> None:
        self.timeout = timeout
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="profilehub-webhook")
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None

    def _connection(self, where: Address) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection to ``where`` and whether it was used before (kept alive)."""
        conns: dict[tuple[bool, str, int], http.client.HTTPConnection] | None = getattr(
            self._local, "conns", None
        )
        if conns is None:
            conns = self._local.conns = {}
        key = (where.https, where.host, where.port)
        conn = conns.get(key)
        if conn is not None:
            # No socket: the last answer closed it; http.client opens a new one on the request.
            return conn, conn.sock is not None
        if where.https:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            conn = http.client.HTTPSConnection(
                where.host, where.port, timeout=self.timeout, context=self._tls
            )
        else:
            conn = http.client.HTTPConnection(where.host, where.port, timeout=self.timeout)
        conns[key] = conn
        with self._lock:
            self._all.append(conn)
        return conn, False

    def post(self, url: str, signer: Webhook, event_id: str, body: str, at: float) -> Outcome:
        """POST ``body`` signed by ``signer`` (``Webhook(secret)``) as of epoch seconds ``at``."""
        where = address(url)
        headers = signed_headers(signer, event_id, body, at)
        headers["host"] = where.host_header
        if where.authorization:
            headers["authorization"] = where.authorization
        payload = body.encode()
        for _ in range(2):
            conn, reused = self._connection(where)
            try:
                conn.request("POST", where.target, body=payload, headers=headers)
                answer = conn.getresponse()
                answer.read(MAX_ANSWER_BYTES)
                if not answer.isclosed():
                    conn.close()  # an answer longer than we read: the connection is not reusable
                status = answer.status
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                conn.close()
                if reused:
                    # The receiver closed the kept-alive connection while it was idle: send again
                    # on a new one (at least once, same webhook-id).
                    continue
                return Outcome(False, _error(exc))
            except TimeoutError:
                conn.close()
                return Outcome(False, "timed out")
            except (OSError, http.client.HTTPException, ValueError) as exc:
                conn.close()
                return Outcome(False, _error(exc))
            if 200 <= status < 300:
                return Outcome(True)
            return Outcome(False, f"HTTP {status}")
        return Outcome(False, "the connection closed twice before an answer")

    def close(self) -> None:
        self.pool.shutdown(wait=True)  # requests under way end within the timeout
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


def _error(exc: BaseException) -> str:
    return (f"{type(exc).__name__}: {exc}")[:MAX_ERROR_CHARS]
