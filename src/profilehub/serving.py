"""The HTTP/1.1 connection handling of ``profilehub serve``: uvicorn's httptools protocol with
read timeouts and answers in the one error shape where uvicorn would answer in plain text.

uvicorn waits for a request's headers and body for as long as the client likes: 500 clients
sending a header line or a body byte now and then held 500 connections for as long as they
kept at it. Here the headers must arrive within ``PROFILEHUB_HEADER_TIMEOUT_SECONDS`` of the
connection being opened (or of the request's first byte, on a kept-alive connection) and the
body within ``PROFILEHUB_BODY_TIMEOUT_SECONDS`` after its headers; otherwise the client gets a
408 and the connection is closed. An idle kept-alive connection is closed by uvicorn after
``PROFILEHUB_KEEP_ALIVE_SECONDS`` (``workers.uvicorn_options``).

At shutdown (SIGTERM) uvicorn stops accepting connections, lets each request in progress finish,
and closes every other connection at once, the ones whose next request has begun to arrive
included (its headers not yet complete, or its bytes not yet read): that request was reset.
A change feed's long poll in progress answers within a second (what it has, maybe nothing).
Here a request that has begun is answered (then the connection closes), and a connection
with no request in progress is kept ``SHUTDOWN_GRACE_SECONDS`` for one to begin.

Requests the parser refuses (a bad request line or header, ``Content-Length: -1``, an unknown
method) never reach the app; they are answered here, in the one error shape, and the connection
is closed (nothing after the error can be framed).
"""

from __future__ import annotations

import functools
import sys
from asyncio import TimerHandle

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from profilehub.config import Settings
from profilehub.errors import error_body
from profilehub.feeds import stop_waiting


@functools.cache
def _timeouts() -> tuple[int, int]:
    # Read once per worker process; ``profilehub serve`` has checked the settings at start-up.
    settings = Settings.from_env()
    return settings.header_timeout_seconds, settings.body_timeout_seconds


def error_bytes(status: int, message: str, field: str) -> bytes:
    """A whole HTTP response carrying the one error body, closing the connection."""
    body = orjson.dumps(error_body(status, message, {field: message}))
    return b"".join(
        [
            STATUS_LINE[status],
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


SHUTDOWN_GRACE_SECONDS = 1.0


class HttpProtocol(HttpToolsProtocol):
    _header_timer: TimerHandle | None = None
    _body_timer: TimerHandle | None = None
    _request_begun = False
    _shutting_down = False

    def connection_made(self, transport):  # type: ignore[no-untyped-def]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        # Cancelled by on_message_complete, which follows at once when there is no body.
        self._body_timer = self.loop.call_later(_timeouts()[1], self._body_timed_out)
        self._request_begun = False
        super().on_headers_complete()
        if self._shutting_down and self.cycle is not None:
            self.cycle.keep_alive = False  # answered, then closed

    def shutdown(self) -> None:
        self._shutting_down = True
        stop_waiting()  # long polls of the change feeds answer now rather than at their end
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False
        elif not self._request_begun:
            self.loop.call_later(SHUTDOWN_GRACE_SECONDS, self._close_if_idle)

    def _close_if_idle(self) -> None:
        idle = self.cycle is None or self.cycle.response_complete
        if idle and not self._request_begun and not self.transport.is_closing():
            self.transport.close()

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        # Called by data_received while it handles the parser's exception: name what was wrong.
        exc = sys.exc_info()[1]
        if isinstance(exc, httptools.HttpParserInvalidMethodError):
            status, message = 501, "method: unknown HTTP method; use GET, HEAD, POST, PUT, PATCH or DELETE"
        else:
            detail = str(exc).rstrip(".") if exc is not None else "malformed"
            status, message = 400, f"request: not valid HTTP/1.1 ({detail})"
        self.transport.write(error_bytes(status, message, message.split(":", 1)[0]))
        self.transport.close()

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(_timeouts()[0], self._headers_timed_out)

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        busy = self.cycle is not None and not self.cycle.response_complete
        self._time_out(not busy, f"headers: not received within {_timeouts()[0]} s", "headers")

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.flow.read_paused:
            # We stopped reading, the client did not stop sending: the app has not taken the body
            # yet (a ``_bulk`` waiting for its turn). The client gets its full time again.
            self._body_timer = self.loop.call_later(_timeouts()[1], self._body_timed_out)
            return
        cycle = self.cycle
        answer = cycle is not None and not cycle.response_started
        if cycle is not None:
            # The app, waiting for the body, sees the client gone; what it sends is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        self._time_out(answer, f"body: not received within {_timeouts()[1]} s", "body")

    def _time_out(self, answer: bool, message: str, field: str) -> None:
        if self.transport.is_closing():
            return
        self.logger.info("closing a slow connection: %s", message)
        if answer:
            self.transport.write(error_bytes(408, message, field))
        self.transport.close()
