"""What every operation can answer, declared in the OpenAPI document so clients and conformance
checkers see exactly what is sent.

The body limit and media-type check run before any route (413, 415 on every route with a body),
the database can be briefly unreachable or the writer full on every route (503 with
`Retry-After`), and every answer carries ``X-Request-Id``. The API's routes can answer an org's
rate limit (429 with `Retry-After` and the ``RateLimit-*`` headers, which a limited org's other
answers carry too). The writes that honour ``Idempotency-Key`` declare it, its 409 (in flight),
422 (another request under the key) and the ``Idempotent-Replayed`` header of a replay. Per-route
headers (``X-Profilehub-Notices``, ``X-Profilehub-Matches``) are declared by the routes that send
them, with the definitions below.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from profilehub.idempotency import FIELD as IDEMPOTENCY_KEY
from profilehub.idempotency import MAX_KEY_LENGTH
from profilehub.idempotency_http import GUARDED, REPLAYED_HEADER
from profilehub.ratelimit import LIMITED_PREFIXES

ERROR_SCHEMA = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
REQUEST_ID = {
    "description": "The request's own `X-Request-Id` when it is a sane id (1-128 characters of "
    "`A-Za-z0-9._:/+=-`), else a new one; the server's log line for the request names it.",
    "required": True,
    "schema": {"type": "string", "maxLength": 128},
}
NOTICES_HEADER: dict[str, Any] = {
    "X-Profilehub-Notices": {
        "description": "Present when the write ignored or refused something (a blocked id, an id over "
        "a limit, a merge refused): a JSON array of objects with `code`, `message` and, when it is about one, `field`.",
        "required": False,
        "schema": {"type": "string"},
    }
}
MATCHES_HEADER: dict[str, Any] = {
    "X-Profilehub-Matches": {
        "description": "How many existing records matched the matching attribute (0 when created); "
        "with several, the oldest was updated.",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
}
MATCH_AND_NOTICES_HEADERS = {**MATCHES_HEADER, **NOTICES_HEADER}

_COMMON: dict[str, str] = {
    "503": "Database temporarily unavailable, or the writer's queue full; retry after `Retry-After` seconds",
}
_WITH_BODY: dict[str, str] = {
    "413": "Body larger than PROFILEHUB_MAX_BODY_BYTES (or too many records)",
    "415": "Content-Type is not JSON, or the body has a Content-Encoding (only identity is taken)",
}
_LIMITED: dict[str, str] = {
    "429": "Over the org's rate limit (`profilehub org rate-limit`); retry after `Retry-After` seconds",
}
_KEYED: dict[str, str] = {
    "409": "A request with this `Idempotency-Key` is being answered; retry after `Retry-After` seconds",
    "422": "The body does not fit the route's schema, or this `Idempotency-Key` was used for another "
    "request (method, path, query or body differ) in the last 24 hours",
}


def _header(description: str, required: bool, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema or {"type": "integer"}}


RETRY_AFTER = _header(
    "Seconds to wait before sending the request again.", True, {"type": "integer", "minimum": 0}
)
# Sent on every answer to an org that has a rate limit, so optional in general; always on a 429.
_RATE_LIMIT_HEADERS = {
    "RateLimit-Limit": "Requests the org may make in its tightest window.",
    "RateLimit-Remaining": "Requests left in that window.",
    "RateLimit-Reset": "Seconds until that window starts again.",
}
IDEMPOTENCY_KEY_PARAMETER: dict[str, Any] = {
    "name": IDEMPOTENCY_KEY,
    "in": "header",
    "required": False,
    "description": "Makes the write safe to repeat: for 24 hours, the same request under the same key "
    "gets the first answer again (with `Idempotent-Replayed: true`) and writes nothing; another "
    "request under it gets 422, and one sent while the first is being answered 409. Keys are the "
    "org's (any of its credentials may repeat a request). A UUID is a good key.",
    # check_key's rule: printable ASCII, surrounding spaces ignored
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_KEY_LENGTH,
        "pattern": "^[ -~]*[!-~][ -~]*$",
    },
}
ACCEPT_ENCODING = _header(
    "`identity`: sent when the 415 is for the body's `Content-Encoding`; bodies are taken uncompressed.",
    False,
    {"type": "string", "enum": ["identity"]},
)
REPLAYED = _header(
    "`true` when this is the saved answer of an earlier request under the same `Idempotency-Key`.",
    False,
    {"type": "string", "enum": ["true"]},
)


def _declare(schema: dict[str, Any], models: Sequence[type[BaseModel]]) -> None:
    components = schema.setdefault("components", {}).setdefault("headers", {})
    components["RequestId"] = REQUEST_ID
    components["RetryAfter"] = RETRY_AFTER
    for name, description in _RATE_LIMIT_HEADERS.items():
        components[name.replace("-", "")] = _header(description, False, {"type": "integer", "minimum": 0})
    schemas = schema["components"].setdefault("schemas", {})
    for model in models:
        schemas.setdefault(
            model.__name__, model.model_json_schema(ref_template="#/components/schemas/{model}")
        )
    for path, ops in schema.get("paths", {}).items():
        limited = path.startswith(LIMITED_PREFIXES)
        for method, op in ops.items():
            pattern = GUARDED.get(method.upper())
            keyed = pattern is not None and pattern.match(path) is not None
            responses = op.setdefault("responses", {})
            extra = {
                **_COMMON,
                **(_WITH_BODY if "requestBody" in op else {}),
                **(_LIMITED if limited else {}),
            }
            for status, description in extra.items():
                responses.setdefault(status, {"description": description, "content": ERROR_SCHEMA})
            if keyed:
                op.setdefault("parameters", []).append(IDEMPOTENCY_KEY_PARAMETER)
                for status, description in _KEYED.items():
                    if status in responses:  # the route's own 409/422 besides
                        description = f"{responses[status]['description']}; or: {description}"
                    responses[status] = {**responses.get(status, {}), "description": description}
                    responses[status]["content"] = ERROR_SCHEMA
            for status, response in responses.items():
                _declare_headers(status, response.setdefault("headers", {}), limited, keyed)


def _declare_headers(status: str, headers: dict[str, Any], limited: bool, keyed: bool) -> None:
    headers["X-Request-Id"] = {"$ref": "#/components/headers/RequestId"}
    if limited and status in ("429", "503"):
        # Every 429 and every 503 of the API's routes says when to come back.
        headers["Retry-After"] = {"$ref": "#/components/headers/RetryAfter"}
    if keyed and status == "409":
        # Sent with the key's 409 (in flight), not with a route's own conflicts.
        headers["Retry-After"] = {**RETRY_AFTER, "required": False}
    if limited:
        for name in _RATE_LIMIT_HEADERS:
            ref = name.replace("-", "")
            # Sent on every answer to a limited org, so optional; always sent with a 429.
            headers[name] = (
                {**_header(_RATE_LIMIT_HEADERS[name], True, {"type": "integer", "minimum": 0})}
                if status == "429"
                else {"$ref": f"#/components/headers/{ref}"}
            )
    if status == "415":
        headers["Accept-Encoding"] = ACCEPT_ENCODING
    if keyed and status.startswith("2"):
        headers[REPLAYED_HEADER] = REPLAYED


def install_openapi_extras(app: FastAPI, models: Sequence[type[BaseModel]] = ()) -> None:
    """Wrap ``app.openapi`` (after ``install_openapi_errors``) to add the common answers once, and
    the schemas of ``models``: bodies a route reads itself (from a ``$ref``) rather than by a
    parameter's type, which FastAPI would not otherwise put in the document."""
    build = app.openapi
    declared = False

    def openapi() -> dict[str, Any]:
        nonlocal declared
        schema = build()
        if not declared:
            _declare(schema, models)
            declared = True
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
