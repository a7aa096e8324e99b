"""CDP routes: authenticate, hand the body to the profile service, shape the answer."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Security
from fastapi.responses import Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from profilehub.auth import PREFIX, CredentialKind, Principal, check_cdp_scopes, check_org, wrong_kind_hint
from profilehub.cdp.models import (
    ChangesPage,
    DeleteUsersRequest,
    DeleteUsersResponse,
    ErasureReceipt,
    ErrorBody,
    Profile,
    SearchUsersRequest,
    UnsuppressRequest,
    UnsuppressResponse,
    parse_write,
)
from profilehub.errors import ProfilehubError, Unauthorized
from profilehub.feeds import parse_query, pull
from profilehub.http import (
    FastRoute,
    JSONResponse,
    checked_principal,
    database_error_response,
    domain_error_response,
    notices_header,
)
from profilehub.idempotency_http import answered
from profilehub.oidc import JwtVerifier, token_scopes
from profilehub.openapi_extras import NOTICES_HEADER
from profilehub.orgs import MAX_ORG_ID
from profilehub.profiles import ProfileService, ProfileWrite, WriteResult
from profilehub.request_log import note_org, note_route
from profilehub.routing_errors import method_not_allowed
from profilehub.store.receipt_store import load_receipt

router = APIRouter(prefix="/cdp/v1", tags=["CDP profiles"])
_bearer = HTTPBearer(
    scheme_name="okta_jwt",
    auto_error=False,
    description="OIDC/Okta JWT (instead of apikey); needs the orgId header. See docs/api.md.",
)
_apikey = APIKeyHeader(
    name="apikey", scheme_name="apikey", auto_error=False, description="Long-lasting client key"
)

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "Bad input; the message and `errors` name the field",
        401: "Missing or unknown apikey",
        403: "Scope not granted or not requested, or a foreign orgId",
        404: "Unknown ucid",
        413: "Body too large",
        415: "Content-Type is not JSON, or the body has a Content-Encoding",
        503: "Database temporarily unavailable; retry after `Retry-After` seconds",
    }.items()
}


def cdp_principal(scope: str) -> Callable[..., Awaitable[Principal]]:
    async def dependency(
        request: Request,
        apikey: str | None = Security(_apikey),
        bearer: HTTPAuthorizationCredentials | None = Security(_bearer),
        org_header: str | None = Header(
            default=None, alias="orgId", description="Organisation id; required with a JWT."
        ),
        scopes: str | None = Header(
            default=None,
            description="Comma-separated scopes for this call: profile.read, profile.write, profile.delete",
        ),
    ) -> Principal:
        principal = checked_principal(request.scope) or await cdp_credential(
            request.app.state, apikey, None if bearer is None else bearer.credentials, org_header
        )
        note_org(request.scope, principal.org_id)
        check_cdp_scopes(principal, scopes, scope)
        return principal

    return dependency


async def cdp_credential(
    state: Any, apikey: str | None, bearer: str | None, org_header: str | None
) -> Principal:
    """Who calls, from the ``apikey`` header or a bearer JWT (with ``orgId``); 401 if nobody.

    Also run by the credential gate before the body is read, so both answer alike.
    """
    if apikey:
        principal: Principal = state.verifier.verify(state.db.read, apikey, CredentialKind.APIKEY, "apikey")
        return principal
    if bearer is not None:
        if bearer.startswith(f"{PREFIX[CredentialKind.APIKEY]}_"):
            raise Unauthorized("send the apikey in the apikey header, not as a bearer token", field="apikey")
        if hint := wrong_kind_hint(bearer, CredentialKind.APIKEY):
            raise Unauthorized(hint, field="Authorization")
        return await _jwt_principal(state, bearer, org_header)
    raise Unauthorized("header is required (or Authorization: Bearer <JWT> with orgId)", field="apikey")


async def _jwt_principal(state: Any, token: str, org_header: str | None) -> Principal:
    verifier: JwtVerifier | None = state.jwt
    if verifier is None:
        raise Unauthorized(
            "JWT authentication is not configured on this server; use apikey", field="Authorization"
        )
    org_text = (org_header or "").strip()
    if not org_text.isdigit() or len(org_text) > 19 or not 1 <= int(org_text) <= MAX_ORG_ID:
        raise Unauthorized(f"header is required with a JWT: an integer from 1 to {MAX_ORG_ID}", field="orgId")
    claims = await run_in_threadpool(verifier.claims, token)
    principal: Principal = await run_in_threadpool(
        state.verifier.verify_jwt_subject,
        state.db.read,
        int(org_text),
        verifier.issuer,
        str(claims["sub"]),
        token_scopes(claims),
    )
    return principal


def _service(request: Request) -> ProfileService:
    service: ProfileService = request.app.state.profiles
    return service


@router.post(
    "/users",
    summary="Write user profile data",
    response_class=JSONResponse,
    responses={
        200: {
            "model": list[Profile],
            "description": "Profile written successfully",
            "headers": NOTICES_HEADER,
        },
        **ERRORS,
        409: {"model": ErrorBody, "description": "Every id of the write is suppressed: nothing was written"},
    },
)
async def write_user(
    body: Any = Body(
        description="The write (see WriteUserRequest); read by the same parser as `_bulk` records "
        "and imported records.",
        json_schema_extra={"$ref": "#/components/schemas/WriteUserRequest"},
    ),
    principal: Principal = Depends(cdp_principal("profile.write")),
    service: ProfileService = Depends(_service),
) -> Response:
    """Resolve the ids to one profile (creating or merging as needed) and apply `upsert` to it.

    Whatever was ignored (blocked or suppressed ids, ids over a limit, merges refused) is listed in the
    `X-Profilehub-Notices` header and in the profile's history; the body keeps the vendor's shape.
    """
    return await write_answer(service, parse_write(body, principal.org_id), principal)


def _write_answer(results: list[WriteResult | ProfilehubError]) -> JSONResponse:
    [result] = results
    if isinstance(result, ProfilehubError):
        return domain_error_response(result)
    return JSONResponse([result.profile], headers=notices_header(result.notices))


async def write_answer(service: ProfileService, write: ProfileWrite, principal: Principal) -> Response:
    """Write one profile and answer it (under an Idempotency-Key, saved with the write)."""
    job = service.write_job([write], principal.actor)
    return await answered(service.db, job, _write_answer, service.observe)


@router.post(
    "/users/_search",
    summary="Search user profiles",
    response_class=JSONResponse,
    responses={200: {"model": list[Profile], "description": "Matching profiles (may be empty)"}, **ERRORS},
)
async def search_users(
    body: SearchUsersRequest,
    principal: Principal = Depends(cdp_principal("profile.read")),
    service: ProfileService = Depends(_service),
) -> JSONResponse:
    """Find profiles by idType, by namespace (every idType in it) or by `ucid`; merged ucids resolve."""
    check_org(principal, body.orgId)
    found = await run_in_threadpool(service.search, body.orgId, body.regions, body.search)
    return JSONResponse(found)


@router.get(
    "/users/{ucid}",
    summary="Get one user profile by ucid",
    response_class=JSONResponse,
    responses={
        200: {"model": Profile, "description": "The profile (one object, not an array)"},
        **ERRORS,
        405: {
            "model": ErrorBody,
            "description": "The ucid is an action (`_search`, `_delete`, `_bulk`): POST it",
        },
    },
)
async def get_user(
    request: Request,
    ucid: str = Path(description="The profile's ucid (a UUID); a ucid merged into another answers that one"),
    orgId: int = Query(ge=1, le=MAX_ORG_ID, description="Organisation id; must be the apikey's org."),
    region: str | None = Query(
        default=None, min_length=1, max_length=16, description="The profile's region, if you want it checked."
    ),
    principal: Principal = Depends(cdp_principal("profile.read")),
    service: ProfileService = Depends(_service),
) -> Response:
    """The same profile object `_search` answers, alone. A ucid merged away answers the profile it
    was merged into (its own `ucid` is then in `ids.linkedUcid`)."""
    if (action := f"{router.prefix}/users/{ucid}") in request.app.openapi()["paths"]:
        return method_not_allowed(request, action)  # GET /users/_search: a 405, not "bad ucid"
    check_org(principal, orgId)
    return JSONResponse(await run_in_threadpool(service.get, orgId, ucid, region))


@router.post(
    "/users/_delete",
    summary="Delete user profiles",
    response_class=JSONResponse,
    responses={200: {"model": DeleteUsersResponse, "description": "What was erased"}, **ERRORS},
)
async def delete_users(
    body: DeleteUsersRequest,
    principal: Principal = Depends(cdp_principal("profile.delete")),
    service: ProfileService = Depends(_service),
) -> JSONResponse:
    """Erase the profiles owning the given ids (one idType, or `ucid`) and all merged into them."""
    check_org(principal, body.orgId)
    result = await service.adelete(
        body.orgId, body.region, body.ids, principal.actor, body.sendEmailNotification, body.suppress
    )
    return JSONResponse(result)


@router.post(
    "/users/_unsuppress",
    summary="Lift the suppression of erased ids",
    response_class=JSONResponse,
    responses={200: {"model": UnsuppressResponse, "description": "How many fingerprints went"}, **ERRORS},
)
async def unsuppress_users(
    body: UnsuppressRequest,
    principal: Principal = Depends(cdp_principal("profile.delete")),
    service: ProfileService = Depends(_service),
) -> JSONResponse:
    """Let writes carry these ids again: removes their fingerprints kept by `_delete` (see
    docs/privacy.md). A raw email or phone number lifts every hashed form of it too."""
    check_org(principal, body.orgId)
    return JSONResponse(await service.aunsuppress(body.orgId, body.region, body.ids, principal.actor))


@router.get(
    "/erasures/{receiptId}",
    summary="Get an erasure receipt",
    response_class=JSONResponse,
    responses={
        200: {"model": ErasureReceipt, "description": "The receipt, as signed"},
        **ERRORS,
        404: {"model": ErrorBody, "description": "The org has no receipt of that id"},
    },
)
async def get_erasure_receipt(
    request: Request,
    receiptId: str = Path(description="The `receiptId` a `_delete` answered."),
    orgId: int = Query(ge=1, le=MAX_ORG_ID, description="Organisation id; must be the apikey's org."),
    principal: Principal = Depends(cdp_principal("profile.delete")),
) -> JSONResponse:
    """What an erasure removed (ucids and counts, no values), when and by whom, signed with the
    org's receipt key: save it and check it offline with `profilehub receipt verify FILE`."""
    check_org(principal, orgId)

    def read() -> dict[str, Any]:
        with request.app.state.db.read() as conn:
            return load_receipt(conn, orgId, receiptId)

    return JSONResponse(await run_in_threadpool(read))


AFTER = Query(default=None, description="An event `id` (or a page's `next`); absent: from the first.")
LIMIT = Query(default=None, description="Events per page, 1 to 1000 (default 100).")
WAIT = Query(
    default=None,
    description="Seconds (0 to 30, default 0) to wait for an event when none follows `after` (long poll).",
)


@router.get(
    "/changes",
    summary="Follow profile changes",
    responses={200: {"model": ChangesPage, "description": "The events after `after`"}, **ERRORS},
)
async def changes(
    request: Request,
    orgId: int = Query(ge=1, le=MAX_ORG_ID, description="Organisation id; must be the apikey's org."),
    after: str | None = AFTER,
    limit: str | None = LIMIT,
    wait: str | None = WAIT,
    region: str | None = Query(
        default=None, min_length=1, max_length=16, description="Only this region's events."
    ),
    principal: Principal = Depends(cdp_principal("profile.read")),
    service: ProfileService = Depends(_service),
) -> Response:
    """The org's `profile.*` and `erasure.*` events after the cursor, in commit order (see docs/events.md)."""
    check_org(principal, orgId)
    query = parse_query(after, limit, wait)
    if region is not None:
        region = await run_in_threadpool(service.org_region, orgId, region)
    body = await pull(request.app.state.db, orgId, "cdp", query, region=region, gone=request.is_disconnected)
    return Response(body, media_type="application/json")


# --- the hot route without FastAPI's per-request machinery ---

# Bodies nesting deeper than this go the framework's way: its JSON parser runs deeper in the
# stack and gives up sooner, and the answer must not depend on which path read the body.
_FAST_MAX_BRACKETS = 200


class FastWriteUser(FastRoute):
    """ASGI middleware answering a plain successful ``POST /cdp/v1/users`` directly.

    FastAPI's routing, dependency solving, body handling and exception middleware cost more CPU
    per request than the write itself. This runs the very same steps as ``write_user`` (the same
    JSON parser, ``parse_write``, credential and scope checks, profile service call and response)
    and answers a write that gets that far. Whenever anything is unusual (another content type, a
    body that does not parse or that ``parse_write`` refuses, a missing or refused credential, a
    JWT) it has written nothing and sent nothing, and hands the request, body replayed,
    to the FastAPI route: every error comes from one place, with one body. The route stays
    registered, so OpenAPI documents it as before. Errors of the write itself are answered by the
    app's own handler functions.
    """

    PATH = "/cdp/v1/users"
    METHOD = "POST"

    async def answer(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> bool:
        """Answer the write and return True, or return False having done nothing visible."""
        content_type = apikey = scopes = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = content_type or value
            elif name == b"apikey":
                apikey = apikey or value
            elif name == b"scopes":
                scopes = scopes or value
        if (
            not apikey
            or content_type is None
            or content_type.split(b";", 1)[0].strip().lower() != b"application/json"
            or body.count(b"{") + body.count(b"[") > _FAST_MAX_BRACKETS
        ):
            return False
        state = scope["app"].state
        try:
            principal: Principal = state.verifier.verify(
                state.db.read, apikey.decode("latin-1"), CredentialKind.APIKEY, "apikey"
            )
            check_cdp_scopes(principal, None if scopes is None else scopes.decode("latin-1"), "profile.write")
            # What Starlette's Request.json() does, so the same bodies parse to the same values.
            write = parse_write(json.loads(body), principal.org_id)
        except sa.exc.DBAPIError as exc:
            # The credential lookup: outside FastAPI's handlers an escaping driver error would be a
            # 500 and a reset connection, so answer it as every route does (503 while it is down).
            await database_error_response(exc)(scope, receive, send)
            return True
        except (ProfilehubError, ValueError, RecursionError):
            # The route answers it, with the same parser's error.
            return False
        note_org(scope, principal.org_id)
        note_route(scope, FastWriteUser.PATH)
        service: ProfileService = state.profiles
        response: Response
        try:
            response = await write_answer(service, write, principal)
        except ProfilehubError as exc:
            response = domain_error_response(exc)
        except sa.exc.DBAPIError as exc:
            response = database_error_response(exc)
        await response(scope, receive, send)
        return True
