"""One delivery attempt: a POST of the event, signed the Standard Webhooks way.

Headers: ``webhook-id`` (the event id, the same on every attempt, so receivers can drop
repeats), ``webhook-timestamp`` (epoch seconds of this attempt) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``), made by the ``standardwebhooks``
package receivers verify with.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from standardwebhooks.webhooks import Webhook

USER_AGENT = "profilehub-webhooks"
# httpx logs every request's URL at INFO: an endpoint's URL may carry a token, and a busy endpoint
# would fill the server's log. Delivery failures are in `webhook list` instead.
logging.getLogger("httpx").setLevel(logging.WARNING)
# Kept in the endpoint's state and shown by `webhook list`: enough to tell why, never a body.
MAX_ERROR_CHARS = 200


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


class WebhookSender:
    """An HTTP client with a timeout on every phase: a slow or unreachable endpoint costs its own
    delivery at most ``timeout`` seconds, and never anything of the server's writes.

    Requests go out from a pool of threads on httpx's blocking client, which costs about a third
    of the CPU per request of its asyncio client (measured: 0.9 against 2.5 ms on this project's
    2-core machine); the threads wait on sockets without holding the interpreter."""

    def __init__(self, timeout: float, threads: int = 32) -> None:
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,  # a redirect is not a receipt; the endpoint's URL is to be fixed
            limits=httpx.Limits(max_connections=threads * 2, max_keepalive_connections=threads * 2),
            headers={"user-agent": USER_AGENT},
        )
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="profilehub-webhook")

    def post(self, url: str, signer: Webhook, event_id: str, body: str, at: float) -> Outcome:
        """POST ``body`` signed by ``signer`` (``Webhook(secret)``) as of epoch seconds ``at``."""
        try:
            response = self._client.post(
                url, content=body.encode(), headers=signed_headers(signer, event_id, body, at)
            )
        except httpx.TimeoutException:
            return Outcome(False, "timed out")
        except httpx.HTTPError as exc:
            return Outcome(False, (f"{type(exc).__name__}: {exc}")[:MAX_ERROR_CHARS])
        if 200 <= response.status_code < 300:
            return Outcome(True)
        return Outcome(False, f"HTTP {response.status_code}")

    def close(self) -> None:
        self.pool.shutdown(wait=True)  # requests under way end within the timeout
        self._client.close()
