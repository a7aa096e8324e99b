"""One structured JSON log line per request, request ids, and unexpected errors logged whole.

The access line names the route *template* (``/v2/crm/people/{id}``), never the path as sent, and
never a header, query or body value: paths and bodies carry ids (emails, phone numbers) and
attribute values, which must not end up in logs. The org id comes from the credential, noted with
``note_org`` by the credential gate, the rate limiter and the auth dependencies. An answer given
before routing is named by the route its path would have reached (``RouteTemplates``).
"""

from __future__ import annotations

import contextvars
import json
import logging
import logging.config
import re
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import orjson

from profilehub.errors import error_body

if TYPE_CHECKING:
    # Types only: the CLI takes this module's log format (``configure_logging``), and loading the
    # web stack for it was a good part of every command's start-up.
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from profilehub.metrics import Metrics

access_log = logging.getLogger("profilehub.access")
error_log = logging.getLogger("profilehub.errors")

REQUEST_ID_HEADER = "X-Request-Id"
_SCOPE_KEY = "profilehub.request"
# A client's own id is kept when it looks like an id (a UUID, a trace id): bounded, no spaces or
# quotes, nothing that could forge a log field. Anything else is replaced by a fresh one.
_SANE_ID = re.compile(rb"[A-Za-z0-9._:/+=-]{1,128}")

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class RequestNote:
    """What inner layers learn about a request, read by the access log when it is answered."""

    __slots__ = ("org_id", "request_id", "route")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.route: str | None = None
        self.org_id: int | None = None


def note_org(scope: Scope, org_id: int) -> None:
    """Record the org of the credential that authenticated this request (for the access log)."""
    note = scope.get(_SCOPE_KEY)
    if note is not None:
        note.org_id = org_id


def note_route(scope: Scope, template: str) -> None:
    """Record the route template for a request answered without the router (the fast write path)."""
    note = scope.get(_SCOPE_KEY)
    if note is not None:
        note.route = template


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            if _SANE_ID.fullmatch(value):
                return bytes(value).decode("ascii")
            break
    return uuid.uuid4().hex


class RequestLogMiddleware:
    """Outermost layer: give each request an id, echo it, log one line, and turn an unexpected
    exception into a logged 500 in the error shape (with the id, so a report can be matched)."""

    def __init__(self, app: ASGIApp, metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.templates = RouteTemplates()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        note = RequestNote(_request_id(scope))
        scope[_SCOPE_KEY] = note
        token = request_id_var.set(note.request_id)
        id_header = (b"x-request-id", note.request_id.encode("ascii"))
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), id_header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            error_log.exception("unhandled error", extra=_fields(scope, note, 500, start))
            if not started:
                await _internal_error(send_with_id)
        finally:
            if note.route is None:
                # Answered before the router (the credential gate's 401, the body limit's 413, the
                # rate limiter's 429, a 503 while the credentials cannot be read): named by the
                # route its path would have reached, as the route's own answers are. Only a path
                # no route serves stays unnamed (and these are all the lookup costs extra).
                note.route = self.templates.of(scope)
            if self.metrics is not None:
                self.metrics.request(scope["method"], note.route, status, time.perf_counter() - start)
            if access_log.isEnabledFor(logging.INFO):
                _log_access(_fields(scope, note, status, start))
            request_id_var.reset(token)


class RouteNoteMiddleware:
    """Innermost layer: after routing, note the matched route's template for the access log (outer
    layers may hold a copy of the scope, which the router does not update)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            note = scope.get(_SCOPE_KEY)
            route = scope.get("route")
            if route is None and (endpoint := scope.get("endpoint")) is not None:
                # Routes that are not API routes (/openapi.json, /docs) note only their endpoint.
                routes = getattr(scope.get("app"), "routes", ())
                route = next((r for r in routes if getattr(r, "endpoint", None) is endpoint), None)
            if note is not None and note.route is None and route is not None:
                note.route = getattr(route, "path", None)


class RouteTemplates:
    """The template of the route that serves a request's path, looked up without routing it."""

    def __init__(self) -> None:
        self._table: list[tuple[re.Pattern[str], str, frozenset[str]]] = []
        self._made_of = -1

    def of(self, scope: Scope) -> str | None:
        routes = getattr(scope.get("app"), "routes", None)
        if not routes:
            return None
        if len(routes) != self._made_of:  # made on first use, again if routes were added since
            self._table = self._make(routes)
            self._made_of = len(routes)
        path: str = scope["path"]
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        first = None
        # As the router picks: the first route of the path and method, else the first of the path
        # (it answers 405).
        for pattern, template, methods in self._table:
            if pattern.match(path):
                if not methods or method in methods:
                    return template
                first = first or template
        return first

    @staticmethod
    def _make(routes: list[Any]) -> list[tuple[re.Pattern[str], str, frozenset[str]]]:
        from starlette.routing import Mount, compile_path

        table = []
        for entry in _route_entries(routes):
            template = getattr(entry, "path", None)
            if not template:
                continue
            if isinstance(getattr(entry, "original_route", entry), Mount):
                pattern, _, _ = compile_path(template.rstrip("/") + "/{path:path}")
            else:
                pattern, _, _ = compile_path(template)
            table.append((pattern, template, frozenset(getattr(entry, "methods", None) or ())))
        return table


def _route_entries(routes: list[Any]) -> Iterable[Any]:
    entries: Callable[[list[Any]], Iterable[Any]]
    try:  # FastAPI 0.16x groups an included router's routes in one entry of app.routes
        from fastapi.routing import iter_route_contexts as entries
    except ImportError:  # earlier FastAPI lists every route in app.routes itself
        entries = iter
    return entries(routes)


def _log_access(fields: dict[str, Any]) -> None:
    # The record made directly: Logger.info would also walk the stack for the caller's file and
    # line, which an access line does not show, at a cost paid on every request.
    record = logging.LogRecord(access_log.name, logging.INFO, __file__, 0, "request", None, None)
    record.__dict__.update(fields)
    access_log.handle(record)


def _fields(scope: Scope, note: RequestNote, status: int, start: float) -> dict[str, Any]:
    return {
        "method": scope["method"],
        "route": note.route,
        "status": status,
        "ms": round((time.perf_counter() - start) * 1000, 2),
        "org_id": note.org_id,
        "request_id": note.request_id,
    }


async def _internal_error(send: Send) -> None:
    body = json.dumps(error_body(500, "internal error; it has been logged")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# --- formatting ---

_RECORD_FIELDS = ("method", "route", "status", "ms", "org_id", "request_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request fields, a traceback.

    Cheap on purpose (orjson, the date text made once a second): the access log formats a line
    for every request."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self._time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in _RECORD_FIELDS:
            if name in record.__dict__:
                line[name] = record.__dict__[name]
        if "request_id" not in line and (current := request_id_var.get()) is not None:
            line["request_id"] = current
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


LOG_LEVELS = ("debug", "info", "warning", "error")


def configure_logging(level: str, access: bool) -> None:
    """Make this process's log ``logging_config``'s (JSON lines on stderr) from here on."""
    logging.config.dictConfig(logging_config(level, access))


def logging_config(level: str, access: bool) -> dict[str, Any]:
    """``logging.dictConfig`` for ``profilehub serve``: everything (uvicorn's own lines too) as JSON
    on stderr at ``level``; the access log on or off on its own, whatever the level."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": handler},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            # Its "running migrations" chatter at every start is not news; its warnings are.
            "alembic": {"handlers": [], "level": "WARNING", "propagate": True},
            "uvicorn": {"handlers": [], "level": level.upper(), "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level.upper(), "propagate": True},
            # Replaced by profilehub.access (uvicorn's line has the raw path, ids included).
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
            "profilehub.access": {
                "handlers": ["stderr"],
                "level": "INFO" if access else "CRITICAL",
                "propagate": False,
            },
        },
    }
