"""Admin HTTP API for webhook endpoints (``/admin/v1/webhooks``): the ``profilehub webhook``
commands over HTTP, for the operator.

Authentication: ``Authorization: Bearer <PROFILEHUB_ADMIN_TOKEN>``, one server-wide token. An
endpoint receives every change of an org's people, so adding one is an operator's act, not
something an org's apikey or CRM token may do. Without the setting, the API answers 401.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import fastapi.responses
from fastapi import APIRouter, Depends, Path, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool

from profilehub.cdp.models import ErrorBody
from profilehub.delivery import endpoints
from profilehub.errors import Unauthorized
from profilehub.http import JSONResponse
from profilehub.orgs import MAX_ORG_ID
from profilehub.store.database import Database
from profilehub.store.events import EVENT_TYPES, last_event_id, parse_cursor

T = TypeVar("T")
router = APIRouter(prefix="/admin/v1", tags=["admin"], default_response_class=fastapi.responses.JSONResponse)
_bearer = HTTPBearer(auto_error=False, description="The server's PROFILEHUB_ADMIN_TOKEN")
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "Bad input (a URL that is not http(s) with a host, an unknown event type); "
        "`message` names the field",
        401: "Missing or wrong admin token, or PROFILEHUB_ADMIN_TOKEN is not set on the server",
        404: "No such org or webhook endpoint",
    }.items()
}
EndpointId = Annotated[str, Path(description="The endpoint's id (`wh_<orgId>_<12 hex>`)", max_length=64)]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    orgId: int = Field(ge=1, le=MAX_ORG_ID)
    url: str = Field(max_length=endpoints.MAX_URL_LENGTH, description="An http(s) URL to POST events to")
    events: list[str] = Field(
        default_factory=list,
        max_length=len(EVENT_TYPES),
        description=f"Event types to send (none: all): {', '.join(EVENT_TYPES)}",
    )


class WebhookReplay(BaseModel):
    model_config = ConfigDict(extra="forbid")

    after: str = Field(
        max_length=20, description="An event id (`0`: the beginning); every later event is sent again"
    )


class WebhookEndpoint(BaseModel):
    id: str
    orgId: int
    url: str
    events: list[str]
    state: str = Field(description="enabled, failing (retrying) or disabled")
    createdTs: int
    disabledTs: int | None
    disabledReason: str | None
    cursor: str = Field(description="The last event id handled (delivered, skipped or pending)")
    failingSince: int | None
    lastError: str | None
    delivered: int
    pending: int = Field(description="Events waiting for a retry or behind one of their key")


class WebhookAnswer(BaseModel):
    success: bool = True
    status: int
    webhook: WebhookEndpoint


class WebhookCreated(WebhookAnswer):
    secret: str = Field(description="The signing secret (whsec_...); not shown again")


class WebhookList(BaseModel):
    success: bool = True
    status: int
    webhooks: list[WebhookEndpoint]


def check_admin(request: Request, credentials: HTTPAuthorizationCredentials | None) -> None:
    token: str = request.app.state.settings.admin_token
    if not token:
        raise Unauthorized(
            "the admin API is off: set PROFILEHUB_ADMIN_TOKEN on the server (or use profilehub webhook)",
            field="Authorization",
            headers={"WWW-Authenticate": "Bearer"},
        )
    sent = "" if credentials is None else credentials.credentials
    # Compared in constant time: the token is a secret.
    if not hmac.compare_digest(sent.encode(), token.encode()):
        raise Unauthorized(
            "send Authorization: Bearer <PROFILEHUB_ADMIN_TOKEN>",
            field="Authorization",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _admin(request: Request, credentials: HTTPAuthorizationCredentials | None = Security(_bearer)) -> None:
    check_admin(request, credentials)


admin = Depends(_admin)


async def _write(request: Request, job: Callable[[Connection], T]) -> T:
    db: Database = request.app.state.db
    return await db.awrite(job)


async def _read(request: Request, query: Callable[[Connection], T]) -> T:
    db: Database = request.app.state.db

    def run() -> T:
        with db.read() as conn:
            return query(conn)

    return await run_in_threadpool(run)


def _answer(status: int, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"success": True, "status": status, **body}, status_code=status)


@router.post(
    "/webhooks",
    status_code=201,
    summary="Create a webhook endpoint (answers its signing secret, once)",
    responses={201: {"model": WebhookCreated, "description": "Created"}, **ERRORS},
    dependencies=[admin],
)
async def create_webhook(request: Request, body: WebhookCreate) -> JSONResponse:
    def create(conn: Connection) -> endpoints.CreatedEndpoint:
        return endpoints.create_endpoint(
            conn, body.orgId, body.url, body.events, start_after=last_event_id(conn), actor="admin"
        )

    made = await _write(request, create)
    return _answer(201, {"webhook": made.endpoint.as_json(), "secret": made.secret})


@router.get(
    "/webhooks",
    summary="List an org's webhook endpoints with their delivery state",
    responses={200: {"model": WebhookList, "description": "OK"}, **ERRORS},
    dependencies=[admin],
)
async def list_webhooks(
    request: Request, orgId: int = Query(ge=1, le=MAX_ORG_ID, description="The org")
) -> JSONResponse:
    found = await _read(request, lambda c: endpoints.list_endpoints(c, orgId))
    return _answer(200, {"webhooks": [e.as_json() for e in found]})


@router.get(
    "/webhooks/{endpointId}",
    summary="One webhook endpoint and its delivery state",
    responses={200: {"model": WebhookAnswer, "description": "OK"}, **ERRORS},
    dependencies=[admin],
)
async def get_webhook(request: Request, endpointId: EndpointId) -> JSONResponse:
    found = await _read(request, lambda c: endpoints.get_endpoint(c, endpointId))
    return _answer(200, {"webhook": found.as_json()})


def _state_route(enabled: bool) -> Callable[..., Any]:
    async def change(request: Request, endpointId: EndpointId) -> JSONResponse:
        found = await _write(request, lambda c: endpoints.set_enabled(c, endpointId, enabled, actor="admin"))
        return _answer(200, {"webhook": found.as_json()})

    return change


router.post(
    "/webhooks/{endpointId}/disable",
    summary="Stop delivering to an endpoint (its events wait)",
    responses={200: {"model": WebhookAnswer, "description": "Disabled"}, **ERRORS},
    dependencies=[admin],
)(_state_route(False))
router.post(
    "/webhooks/{endpointId}/enable",
    summary="Deliver to an endpoint again, its waiting events first",
    responses={200: {"model": WebhookAnswer, "description": "Enabled"}, **ERRORS},
    dependencies=[admin],
)(_state_route(True))


@router.post(
    "/webhooks/{endpointId}/replay",
    summary="Send every event after an event id again, in order",
    responses={200: {"model": WebhookAnswer, "description": "Replaying"}, **ERRORS},
    dependencies=[admin],
)
async def replay_webhook(request: Request, endpointId: EndpointId, body: WebhookReplay) -> JSONResponse:
    def replay(conn: Connection) -> endpoints.Endpoint:
        return endpoints.replay_from(conn, endpointId, parse_cursor(body.after), actor="admin")

    found = await _write(request, replay)
    return _answer(200, {"webhook": found.as_json()})


@router.delete(
    "/webhooks/{endpointId}",
    summary="Delete an endpoint and its waiting events",
    responses={200: {"model": WebhookAnswer, "description": "Deleted (as it was)"}, **ERRORS},
    dependencies=[admin],
)
async def delete_webhook(request: Request, endpointId: EndpointId) -> JSONResponse:
    def delete(conn: Connection) -> endpoints.Endpoint:
        found = endpoints.get_endpoint(conn, endpointId)
        endpoints.delete_endpoint(conn, endpointId, actor="admin")
        return found

    found = await _write(request, delete)
    return _answer(200, {"webhook": found.as_json()})
