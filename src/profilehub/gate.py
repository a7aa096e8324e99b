"""Refuse a request without a valid credential before its body is read.

Reading and parsing come before FastAPI resolves a route's credential dependency, so without this
anyone could make the server buffer and parse 8 MB bodies: four clients without a credential
sending ``_bulk`` bodies cut a legitimate writer's rate by 15x and grew the server by 170 MB. Here
the credential is checked from the headers alone (the same functions the routes use, so the same
401 answers), and a refused request's body is never read: the answer closes the connection, as
the body after it is not wanted. Scopes and org checks stay with the routes.
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from starlette.types import ASGIApp, Receive, Scope, Send

from profilehub.cdp.routes import cdp_credential
from profilehub.crm.routes import crm_credential
from profilehub.errors import ProfilehubError
from profilehub.http import PRINCIPAL_KEY, JSONResponse, domain_error_response
from profilehub.request_log import note_org

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# A refused request announcing a larger body (or one of unknown length) is answered after this
# pause. Meanwhile the server reads nothing (uvicorn stops reading past 64 KiB), so a client
# sending large bodies without a credential spends its time waiting, not making the server accept,
# parse headers and refuse in a tight loop: on a shared machine that loop was the remaining cost.
LARGE_BODY_BYTES = 64 * 1024
REFUSAL_PAUSE_SECONDS = 1.0


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _bearer(scope: Scope) -> str | None:
    """The token of ``Authorization: Bearer <token>``, read as FastAPI's ``HTTPBearer`` reads it."""
    scheme, _, token = (_header(scope, b"authorization") or "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def has_body(scope: Scope) -> bool:
    length = _header(scope, b"content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return _header(scope, b"transfer-encoding") is not None


def _large_body(scope: Scope) -> bool:
    length = _header(scope, b"content-length")
    if length is None:
        return _header(scope, b"transfer-encoding") is not None
    return not length.strip().isdigit() or int(length) > LARGE_BODY_BYTES


def closing(response: JSONResponse, scope: Scope) -> JSONResponse:
    """``response``, closing the connection if a body was announced and is left unread."""
    if has_body(scope):
        response.headers["Connection"] = "close"
    return response


class CredentialGate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        state = scope["app"].state
        try:
            principal = None
            if path.startswith("/cdp/v1/"):
                principal = await cdp_credential(
                    state, _header(scope, b"apikey"), _bearer(scope), _header(scope, b"orgid")
                )
            elif path.startswith("/v2/crm/"):
                principal = crm_credential(state, _bearer(scope))
            if principal is not None:
                scope.setdefault("state", {})[PRINCIPAL_KEY] = principal
                # Known from here on: a 413 or 429 answered before the route names the org too.
                note_org(scope, principal.org_id)
        except ProfilehubError as exc:
            if _large_body(scope):
                await asyncio.sleep(REFUSAL_PAUSE_SECONDS)
            await closing(domain_error_response(exc), scope)(scope, receive, send)
            return
        except sa.exc.DBAPIError:
            # The credential cannot be checked while the database is down: the route tries again
            # and answers (a 503, on a connection kept open), as it did before this gate.
            pass
        await self.app(scope, receive, send)
