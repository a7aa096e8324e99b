"""``Idempotency-Key`` on the write routes, before the route: replay, refuse, or let it run.

A saved answer of the same request is sent again (with ``Idempotent-Replayed: true``) and nothing
reaches the route; another request under the key is a 422; the key being answered right now in
this process is a 409 with ``Retry-After: 1`` (refused, not queued: the client retries). Otherwise
the route runs with the key pending, and ``idempotency_http.answered`` saves its answer.
"""

from __future__ import annotations

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from profilehub.errors import Conflict, ProfilehubError
from profilehub.gate import _header, closing
from profilehub.http import (
    checked_principal,
    database_error_response,
    domain_error_response,
    read_messages,
    replay_messages,
)
from profilehub.idempotency import FIELD, IdempotencyKeys, Stored, check_key, request_hash
from profilehub.idempotency_http import GUARDED, PENDING, Pending, changed_request, replay
from profilehub.request_log import note_org, note_route
from profilehub.store.database import Database


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pattern = GUARDED.get(scope.get("method", "")) if scope["type"] == "http" else None
        raw = _header(scope, b"idempotency-key") if pattern is not None else None
        principal = checked_principal(scope)
        if raw is None or pattern is None or principal is None or not pattern.match(scope["path"]):
            # No key, not a guarded write, or a credential the route will refuse.
            await self.app(scope, receive, send)
            return
        try:
            key = check_key(raw)
        except ProfilehubError as exc:
            await closing(domain_error_response(exc), scope)(scope, receive, send)
            return
        messages, body = await read_messages(receive)
        if body is None:  # the client went away
            await self.app(scope, replay_messages(messages, receive), send)
            return
        keys: IdempotencyKeys = scope["app"].state.idempotency
        org_id = principal.org_id
        digest = request_hash(scope["method"], scope["path"], scope.get("query_string", b""), body)
        flight = (org_id, key)
        if flight in keys.in_flight:
            busy = Conflict(
                "a request with this key is in progress; retry when it has been answered",
                field=FIELD,
                headers={"Retry-After": "1"},
            )
            await domain_error_response(busy)(scope, receive, send)
            return
        keys.in_flight.add(flight)
        try:
            response = await self._saved(keys, scope, org_id, key, digest)
            if response is not None:
                await response(scope, receive, send)
                return
            token = PENDING.set(Pending(keys, org_id, key, digest))
            try:
                await self.app(scope, replay_messages(messages, receive), send)
            finally:
                PENDING.reset(token)
        finally:
            keys.in_flight.discard(flight)

    @staticmethod
    async def _saved(
        keys: IdempotencyKeys, scope: Scope, org_id: int, key: str, digest: str
    ) -> Response | None:
        """The answer to send instead of running the route, if any."""
        db: Database = scope["app"].state.db

        def find() -> Stored | None:
            with db.read() as conn:
                return keys.lookup(conn, org_id, key)

        try:
            stored = await run_in_threadpool(find)
        except sa.exc.DBAPIError as exc:
            return database_error_response(exc)
        if stored is None:
            return None
        # Answered here, not by the route: name it in the access log and metrics as the route would.
        note_org(scope, org_id)
        note_route(scope, _template(scope["path"]))
        if stored.request_hash != digest:
            return domain_error_response(changed_request())
        return replay(stored)


def _template(path: str) -> str:
    known = (
        "/cdp/v1/users",
        "/cdp/v1/users/_bulk",
        "/v2/crm/people",
        "/v2/crm/people/_bulk",
        "/v2/crm/companies",
    )
    return path if path in known else "/v2/crm/{objectSlug}"
