"""``PUT /v2/crm/people`` without FastAPI's per-request machinery: the CRM's hot route.

As ``cdp/routes.FastWriteUser`` does for CDP writes: FastAPI's routing, dependency solving and
body handling cost more CPU per request than the batched upsert itself, and the one writer
waits on the server process's CPU. This runs the route's very steps (the bearer token's
principal, its scope, the JSON parser, ``PersonWrite``'s validation, the same write and answer)
and answers an upsert that gets that far. Anything unusual (another content type, a body or
query the route would refuse, a missing or refused token) and it has written and sent nothing:
the request goes on, body replayed, to the FastAPI route, so every error comes from one place.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

import sqlalchemy as sa
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from profilehub.auth import Principal, check_crm_scope
from profilehub.crm.models import read_person_json
from profilehub.crm.routes import crm_credential, write_person_answer
from profilehub.errors import ProfilehubError
from profilehub.http import (
    FastRoute,
    checked_principal,
    database_error_response,
    domain_error_response,
)
from profilehub.request_log import note_org, note_route

# Deeper bodies go the framework's way (see cdp/routes.py: the answer must not depend on the path).
_FAST_MAX_BRACKETS = 200
# What pydantic's JSON parser reads and ``check_storable`` refuses: a NUL character (in JSON text
# only as the escape \u0000; a raw control character is a parse error) or an integer beyond 64 bits
# (19 digits or more). A body with neither, the most of them, is not walked by check_storable again.
_MAYBE_UNSTORABLE = re.compile(rb"\\u0000|[0-9]{19}")


class FastUpsertPerson(FastRoute):
    PATH = "/v2/crm/people"
    METHOD = "PUT"

    @staticmethod
    def _matching(scope: Scope) -> str | None:
        """The ``matchingAttribute`` of a query the route reads the same way (else None)."""
        raw = scope.get("query_string", b"")
        if raw == b"matchingAttribute=email":
            return "email"  # what most clients send: what parse_qsl reads it as, without parsing
        query = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
        if not query:
            return "email"  # the route's default
        if len(query) == 1 and query[0][0] == "matchingAttribute" and query[0][1]:
            value: str = query[0][1]
            return value
        return None

    async def answer(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> bool:
        """Answer the upsert and return True, or return False having done nothing visible."""
        content_type = authorization = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = content_type or value
            elif name == b"authorization":
                authorization = authorization or value
        scheme, _, token = (authorization or b"").partition(b" ")
        matching = self._matching(scope)
        if (
            scheme.lower() != b"bearer"
            or not token.strip()
            or matching is None
            or content_type is None
            or content_type.split(b";", 1)[0].strip().lower() != b"application/json"
            or body.count(b"{") + body.count(b"[") > _FAST_MAX_BRACKETS
        ):
            return False
        state = scope["app"].state
        try:
            principal: Principal = checked_principal(scope) or crm_credential(
                state, token.strip().decode("latin-1")
            )
            check_crm_scope(principal, write=True)
            # What Starlette's Request.json() and the route's body parameter do, in one step of
            # pydantic's own JSON parser (half the CPU of json.loads and then validating the
            # dict). The few bodies it reads otherwise than json.loads (a lone surrogate, a
            # byte order mark) it refuses, and the route answers them.
            person = read_person_json(body)
        except sa.exc.DBAPIError as exc:
            await database_error_response(exc)(scope, receive, send)
            return True
        except (ProfilehubError, ValueError, ValidationError, RecursionError):
            return False  # the route answers it, with the same checks' error
        note_org(scope, principal.org_id)
        note_route(scope, self.PATH)
        response: Response
        try:
            # ``person`` is what the core's shape check (``parse_person``) answers: not checked twice
            # (nor, when its text holds nothing check_storable refuses, walked by check_storable)
            shaped = _MAYBE_UNSTORABLE.search(body) is None
            response = await write_person_answer(state, person, matching, principal, shaped=shaped)
        except ProfilehubError as exc:
            response = domain_error_response(exc)
        except sa.exc.DBAPIError as exc:
            response = database_error_response(exc)
        await response(scope, receive, send)
        return True
