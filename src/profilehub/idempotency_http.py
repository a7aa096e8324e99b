"""``Idempotency-Key``, the routes' side: ``answered`` saves a keyed write's answer in the
write's own transaction (the middleware, ``profilehub.idempotency_gate``, sees the key first).

Two processes answering one key at once both write, but only one commits: the other's write
finds the key saved, is rolled back, and that request answers the first's answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from profilehub.errors import Unprocessable
from profilehub.idempotency import FIELD, Answer, IdempotencyKeys, SavedElsewhere, Stored
from profilehub.store.database import Database, then

T = TypeVar("T")
REPLAYED_HEADER = "Idempotent-Replayed"
# The writes that honour the key (method, path): CDP write and _bulk; CRM upserts and creates of
# people, companies and records (not objects/...). Other routes ignore the header. The OpenAPI
# document's path templates match too ("/v2/crm/{objectSlug}"), so it declares the header from here.
GUARDED = {
    "POST": re.compile(r"^/cdp/v1/users(/_bulk)?$|^/v2/crm/(?!objects$)[^/]+$"),
    "PUT": re.compile(r"^/v2/crm/people/_bulk$|^/v2/crm/(?!objects$)[^/]+$"),
}


@dataclass(frozen=True)
class Pending:
    keys: IdempotencyKeys
    org_id: int
    key: str
    request_hash: str


PENDING: ContextVar[Pending | None] = ContextVar("profilehub_idempotency", default=None)


def _answer_of(response: Response) -> Answer:
    headers = [
        (k.decode("latin-1"), v.decode("latin-1"))
        for k, v in response.raw_headers
        if k.lower() not in (b"content-length", b"x-request-id")
    ]
    return Answer(response.status_code, headers, bytes(response.body).decode("utf-8"))


def replay(stored: Stored) -> Response:
    answer = stored.answer
    response = Response(answer.body.encode("utf-8"), status_code=answer.status)
    for name, value in answer.headers:
        response.headers.append(name, value)
    response.headers[REPLAYED_HEADER] = "true"
    return response


def changed_request() -> Unprocessable:
    return Unprocessable(
        "this key was used in the last 24 h for another request (method, path, query or body); "
        "send a new key with a new request",
        field=FIELD,
    )


async def answered(
    db: Database,
    job: Callable[[Connection], T],
    render: Callable[[T], Response],
    committed: Callable[[T], Any] | None = None,
) -> Response:
    """Run the write ``job`` and answer ``render`` of its result; under an ``Idempotency-Key``,
    the answer is rendered and saved in the write's transaction. ``committed`` sees the result
    once it has committed."""
    pending = PENDING.get()
    if pending is None:
        value = await db.awrite(job)
        if committed is not None:
            committed(value)
        return render(value)

    def finish(conn: Connection, value: T) -> tuple[T, Response]:
        response = render(value)
        pending.keys.save(conn, pending.org_id, pending.key, pending.request_hash, _answer_of(response))
        return value, response

    try:
        done: tuple[T, Response] = await db.awrite(then(job, finish))
    except SavedElsewhere:
        # Another process saved this key first; this write was rolled back.
        def find() -> Stored | None:
            with db.read() as conn:
                return pending.keys.lookup(conn, pending.org_id, pending.key)

        stored = await run_in_threadpool(find)
        if stored is None:
            raise
        if stored.request_hash != pending.request_hash:
            raise changed_request() from None
        return replay(stored)
    value, response = done
    if committed is not None:
        committed(value)
    return response
