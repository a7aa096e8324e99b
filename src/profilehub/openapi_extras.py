"""What every operation can answer, declared in the OpenAPI document so clients and conformance
checkers see exactly what is sent.

The body limit and media-type check run before any route (413, 415 on every route with a body),
the database can be briefly unreachable on every route (503), and every answer carries
``X-Request-Id``. Per-route headers (``X-Profilehub-Notices``, ``X-Profilehub-Matches``) are
declared by the routes that send them, with the definitions below.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

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
    "503": "Database temporarily unavailable; retry after `Retry-After` seconds",
}
_WITH_BODY: dict[str, str] = {
    "413": "Body larger than PROFILEHUB_MAX_BODY_BYTES (or too many records)",
    "415": "Content-Type is not JSON",
}


def _declare(schema: dict[str, Any], models: Sequence[type[BaseModel]]) -> None:
    schema.setdefault("components", {}).setdefault("headers", {})["RequestId"] = REQUEST_ID
    schemas = schema["components"].setdefault("schemas", {})
    for model in models:
        schemas.setdefault(
            model.__name__, model.model_json_schema(ref_template="#/components/schemas/{model}")
        )
    for ops in schema.get("paths", {}).values():
        for op in ops.values():
            responses = op.setdefault("responses", {})
            extra = {**_COMMON, **(_WITH_BODY if "requestBody" in op else {})}
            for status, description in extra.items():
                responses.setdefault(status, {"description": description, "content": ERROR_SCHEMA})
            for response in responses.values():
                response.setdefault("headers", {})["X-Request-Id"] = {
                    "$ref": "#/components/headers/RequestId"
                }


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
