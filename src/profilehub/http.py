"""HTTP plumbing shared by both dialects: JSON responses, the error handlers, the body limit."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import orjson
import sqlalchemy as sa
import starlette.responses
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from profilehub.auth import Principal
from profilehub.errors import ProfilehubError, error_body, unknown_field_message
from profilehub.repeated_log import RepeatedLog
from profilehub.store.faults import classify

log = logging.getLogger(__name__)
# An outage answers every request with the same 503: said once per interval, with its count.
_outage = RepeatedLog(log)


class JSONResponse(starlette.responses.JSONResponse):
    """orjson-rendered; a JSONResponse subclass so OpenAPI documents route models as JSON."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(
    status: int, message: str, errors: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(status, message, errors), status_code=status, headers=headers)


def notices_header(notices: Sequence[dict[str, Any]]) -> dict[str, str]:
    """What a write ignored or refused, as a header, so the body keeps the vendor's shape."""
    if not notices:
        return {}
    return {"X-Profilehub-Notices": json.dumps(list(notices), ensure_ascii=True, separators=(",", ":"))}


def _field_of(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "header", "path")]
    return ".".join(parts) or "body"


def _unknown_field(request: Request, loc: Sequence[Any]) -> str:
    # Top-level body fields only: the route's body model names its fields.
    body_field = getattr(request.scope.get("route"), "body_field", None)
    model = getattr(getattr(body_field, "field_info", None), "annotation", None)
    known = getattr(model, "model_fields", {}) if len(loc) == 2 and loc[0] == "body" else {}
    return unknown_field_message(str(loc[-1]), known)


_FASTAPI_PARSE_FAILURE = "There was an error parsing the body"


def validation_status(path: str) -> int:
    # The CRM dialect answers shape errors with 422 and per-field errors, as its vendor does;
    # the CDP dialect with 400. Both use the same body.
    return 422 if path.startswith("/v2/crm") else 400


def domain_error_response(exc: ProfilehubError) -> JSONResponse:
    return error_response(exc.status, exc.message, exc.errors, exc.headers)


def database_unavailable(exc: BaseException) -> bool:
    """The database is unreachable, restarting or locked past its timeout (not a bug of ours)."""
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError) or (
        isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated
    )


def database_error_response(exc: sa.exc.DBAPIError) -> JSONResponse:
    if not database_unavailable(exc):
        log.exception("unexpected database error", exc_info=exc)
        return error_response(500, "internal error; it has been logged")
    # The database refused (full disk, unreachable, locked past its timeout): nothing was written.
    fault = classify(exc)
    _outage.say(fault.message, logging.ERROR, fault.message)
    return error_response(503, fault.message, headers={"Retry-After": "1"})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProfilehubError)
    async def _domain(_: Request, exc: ProfilehubError) -> Response:
        return domain_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors: dict[str, str] = {}
        for err in exc.errors():
            field = _field_of(err.get("loc", ()))
            if err.get("type") == "json_invalid":
                msg = "the body is not valid JSON"
                field = "body"
            elif err.get("type") == "extra_forbidden":
                msg = _unknown_field(request, err.get("loc", ()))
            elif err.get("type") == "missing":
                msg = "field required"
            else:
                msg = str(err.get("msg", "invalid"))
            errors.setdefault(field, msg)
        message = "; ".join(f"{f}: {m}" for f, m in errors.items())
        return error_response(validation_status(request.url.path), message, errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and exc.detail == _FASTAPI_PARSE_FAILURE:
            # FastAPI's words when the JSON parser itself gives up (nesting too deep, a number
            # too long, bytes that are not UTF-8): still a shape error about the body.
            message = "body: could not be parsed as JSON (not UTF-8, nested too deeply, or a number too long)"
            return error_response(validation_status(request.url.path), message, {"body": message})
        return error_response(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))

    @app.exception_handler(sa.exc.DBAPIError)
    async def _database_down(_: Request, exc: sa.exc.DBAPIError) -> Response:
        return database_error_response(exc)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unexpected error", exc_info=exc)
        return error_response(500, "internal error; it has been logged")


CONSOLE_PREFIX = "/console/"
# curl -d sends this type by default; its bodies here are JSON all the same.
_LENIENT_TYPES = (b"", b"application/x-www-form-urlencoded")


def _content_type(scope: Scope) -> bytes:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return bytes(value).split(b";")[0].strip().lower()
    return b""


# The only content coding a request body may have (RFC 9110 §8.4.1): bodies are read as sent.
ACCEPTED_ENCODING = "identity"


def content_codings(headers: Sequence[tuple[bytes, bytes]]) -> list[str]:
    """The content codings a request says its body has, ``identity`` (no coding) left out."""
    codings: list[str] = []
    for name, value in headers:
        if name == b"content-encoding":
            tokens = bytes(value).decode("latin-1").lower().split(",")
            codings += [t.strip() for t in tokens if t.strip() not in ("", ACCEPTED_ENCODING)]
    return codings


def unsupported_coding_message(codings: Sequence[str]) -> str:
    return (
        f"Content-Encoding: the body must be sent uncompressed ({ACCEPTED_ENCODING}); "
        f"got {', '.join(codings)}"
    )


async def read_messages(receive: Receive) -> tuple[list[Message], bytes | None]:
    """Every message of a request's body as received, and the body; None for the body when the
    client went away first. Hand the messages on with ``replay_messages``."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return messages, b"".join(chunks)


# Where the credential gate leaves the principal it checked from the headers, so the rate limiter,
# the idempotency gate and the routes' own credential dependencies do not check it again.
PRINCIPAL_KEY = "profilehub.principal"


def checked_principal(scope: Scope) -> Principal | None:
    """The principal the credential gate checked for this request, if it did."""
    principal: Principal | None = scope.get("state", {}).get(PRINCIPAL_KEY)
    return principal


def replay_messages(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that gives the already-read ``messages`` again, then the client's own: for a
    middleware that had to read a body before handing the request on."""
    pending = list(messages)

    async def again() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return again


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413 before any handler parses them.

    It also reads a body sent without a JSON content type (curl's default) as JSON, and refuses
    other media types, and any content coding (gzip…), with 415, so a client never sees a
    confusing shape error instead.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The console's own forms are form-encoded; only its routes read them (the size limit holds).
        if scope["method"] in ("POST", "PUT", "PATCH") and not scope["path"].startswith(CONSOLE_PREFIX):
            if codings := content_codings(scope.get("headers", ())):
                # A gzip body read as JSON was a 400 about bytes the client never wrote: RFC 7694
                # §3's answer is a 415 saying which coding is taken (Accept-Encoding).
                refusal = unsupported_coding_message(codings)
                response = error_response(
                    415,
                    refusal,
                    {"Content-Encoding": refusal.removeprefix("Content-Encoding: ")},
                    headers={"Accept-Encoding": ACCEPTED_ENCODING},
                )
                await response(scope, receive, send)
                return
            ctype = _content_type(scope)
            if ctype in _LENIENT_TYPES:
                headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
            elif not (ctype == b"application/json" or ctype.endswith(b"+json")):
                response = error_response(
                    415,
                    f"Content-Type: expected application/json, got {ctype.decode('latin-1')}",
                    {"Content-Type": "expected application/json"},
                )
                await response(scope, receive, send)
                return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                too_big = False
            if too_big:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        # No length given (chunked): read it here, bounded, then replay it.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        whole: Message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, replay_messages([whole], receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The rest of the body is not wanted: close rather than read it to reach the next request.
        response = error_response(
            413,
            f"body: the request body is larger than {self.max_bytes} bytes",
            {"body": "too large"},
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


class HeadAsGetMiddleware:
    """Answer ``HEAD`` on every ``GET`` route as ``GET`` does, without the body.

    HTTP requires it of GET resources, and FastAPI registers a ``GET`` route for ``GET`` only (a
    ``HEAD`` was a 405). The headers, ``Content-Length`` included, are the ``GET`` answer's.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


def install_openapi_errors(app: FastAPI) -> None:
    """Make the documented shape-error answers the ones we really send.

    FastAPI documents a 422 with its own body on every route with a body; ours answer 400 (CDP)
    or 422 (CRM) with the one error body instead.
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas.setdefault(
            "ErrorBody",
            {
                "title": "ErrorBody",
                "type": "object",
                "required": ["success", "status", "message"],
                "properties": {
                    "success": {"type": "boolean", "const": False},
                    "status": {"type": "integer"},
                    "message": {"type": "string", "description": "Names the offending field first."},
                    "errors": {
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                        "description": "Field path to message.",
                    },
                },
            },
        )
        for path, ops in schema.get("paths", {}).items():
            for op in ops.values():
                for param in op.get("parameters", []):
                    # Checked by the route (a missing one is a 403, per the vendor), so FastAPI
                    # sees it as optional; it is required all the same.
                    if param.get("in") == "header" and param.get("name") == "scopes":
                        param["required"] = True
                responses = op.get("responses", {})
                auto = responses.get("422", {}).get("content", {}).get("application/json", {})
                if "HTTPValidationError" not in str(auto.get("schema", "")):
                    continue
                status = str(validation_status(path))
                del responses["422"]
                responses.setdefault(
                    status,
                    {
                        "description": "Bad input; `message` and `errors` name the field",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
                        },
                    },
                )
        for unused in ("HTTPValidationError", "ValidationError"):
            if unused not in str(schema["paths"]):
                schemas.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


class FastRoute:
    """An ASGI middleware that answers one hot route itself, without FastAPI's per-request machinery.

    ``answer`` runs the route's own steps and returns True having answered, or False having
    written and sent nothing; the request then goes on, body replayed, to the FastAPI route, so
    every error comes from one place (see ``cdp/routes.FastWriteUser``).
    """

    PATH: ClassVar[str]
    METHOD: ClassVar[str]

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != self.PATH
            or scope["method"] != self.METHOD
            or scope.get("root_path")
        ):
            await self.app(scope, receive, send)
            return
        messages, body = await read_messages(receive)
        if body is not None and await self.answer(scope, body, receive, send):
            return
        await self.app(scope, replay_messages(messages, receive), send)

    async def answer(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> bool:
        raise NotImplementedError
