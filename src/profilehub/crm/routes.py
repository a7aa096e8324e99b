"""CRM routes (``/v2/crm``): authenticate the bearer token, call the core, shape the answer."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

import fastapi.responses
from fastapi import APIRouter, Body, Depends, Path, Query, Request, Security
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool

from profilehub.auth import CredentialKind, Principal, check_crm_scope
from profilehub.cdp.models import ChangesPage, ErrorBody
from profilehub.crm import companies, objects, people, records
from profilehub.crm.models import (
    AttributeAnswer,
    AttributeCreate,
    AttributeUpdate,
    BulkAnswer,
    BulkPeopleWrite,
    CompaniesPage,
    CompanyAnswer,
    CompanyWrite,
    DeletedAnswer,
    ObjectAnswer,
    ObjectCreate,
    ObjectsAnswer,
    PeoplePage,
    PersonAnswer,
    PersonWrite,
    RecordAnswer,
    RecordsPage,
)
from profilehub.crm.people import PersonResult
from profilehub.crm.record_store import Page
from profilehub.crm.records import RecordResult
from profilehub.errors import ProfilehubError, Unauthorized, Unprocessable, error_body
from profilehub.feeds import parse_query, pull
from profilehub.http import JSONResponse, checked_principal, domain_error_response, notices_header
from profilehub.idempotency_http import answered
from profilehub.openapi_extras import MATCH_AND_NOTICES_HEADERS, NOTICES_HEADER
from profilehub.profiles import ProfileService
from profilehub.request_log import note_org
from profilehub.store.database import Database

T = TypeVar("T")
# Every route returns its own ``JSONResponse``; the default class below only tells the OpenAPI
# generator that answers are JSON described by the ``responses`` models (with profilehub's own
# response class it adds ``{"type": "string"}`` beside each model).
# The dialect's query parameters each take one value. A repeated one was silently read as its last
# value: an upsert sent with two matchingAttributes matched, and updated, by the one put last.
_ONE_VALUE = ("matchingAttribute", "count", "page", "search", "after", "limit", "wait")


async def _one_value_each(request: Request) -> None:
    for name in _ONE_VALUE:
        if len(request.query_params.getlist(name)) > 1:
            raise Unprocessable("given more than once; send it once", field=name)


router = APIRouter(
    prefix="/v2/crm",
    tags=["CRM"],
    default_response_class=fastapi.responses.JSONResponse,
    dependencies=[Depends(_one_value_each)],
)
_bearer = HTTPBearer(
    auto_error=False, description="A CRM token: `profilehub token create --scopes crm:write`"
)

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "A value breaks a rule (type, uniqueness, reference); `message` and `errors` name the field",
        401: "Missing or unknown bearer token",
        403: "The token lacks the scope (crm:read for reads, crm:write for writes)",
        404: "No such record, object or attribute in this org",
        409: "An email or domain already belongs to another record (named in the message)",
        422: "The request's shape is wrong; `errors` has one entry per field",
    }.items()
}
MATCHES_HEADER = "X-Profilehub-Matches"


def _record_id(value: str) -> str:
    """A record id as stored: ids are UUIDs, answered in lower case and read in any case (RFC 9562),
    as a person's ``companyId`` and the CDP dialect's ucids are; what is no UUID names no record."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return value


PersonId = Annotated[
    str, Path(description="The person's `id`, as answered when it was created"), AfterValidator(_record_id)
]
CompanyId = Annotated[
    str, Path(description="The company's `id`, as answered when it was created"), AfterValidator(_record_id)
]
ObjectSlug = Annotated[
    str, Path(description="The object's slug: `people`, `companies` or a custom object's (e.g. `products`)")
]
AttributeKey = Annotated[str, Path(description="The attribute's key (e.g. `sku`)")]
RecordObject = Annotated[str, Path(description="A custom object's slug (e.g. `products`)")]
RecordId = Annotated[
    str, Path(description="The record's `id`, as answered when it was created"), AfterValidator(_record_id)
]
COUNT = Query(20, ge=1, le=100, description="Page size, 1-100")
PAGE = Query(1, ge=1, le=1_000_000, description="Page number, from 1")
SEARCH = Query(None, max_length=200, description="Case-insensitive text search")
RECORD_BODY = Body(
    description="Flat object: attribute key to value, typed as the object's attributes",
    examples=[{"sku": "DRESS-001", "price": 29, "inventory_count": 150}],
)


def crm_principal(write: bool) -> Callable[..., Awaitable[Principal]]:
    async def dependency(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Security(_bearer)
    ) -> Principal:
        principal = checked_principal(request.scope) or crm_credential(
            request.app.state, None if credentials is None else credentials.credentials
        )
        note_org(request.scope, principal.org_id)
        check_crm_scope(principal, write)
        return principal

    return dependency


# A 401 of a bearer-token API says which scheme it takes (RFC 6750, section 3), as clients and
# proxies expect of one.
BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="profilehub"'}


def crm_credential(state: Any, token: str | None) -> Principal:
    """Who calls, from the bearer token; 401 if nobody. Also run by the credential gate."""
    if token is None:
        raise Unauthorized(
            "header is required: Authorization: Bearer <token>",
            field="Authorization",
            headers=BEARER_CHALLENGE,
        )
    try:
        principal: Principal = state.verifier.verify(
            state.db.read, token, CredentialKind.TOKEN, "Authorization"
        )
    except Unauthorized as exc:
        raise Unauthorized(exc.message, field=exc.field, headers=BEARER_CHALLENGE) from exc
    return principal


reader = Depends(crm_principal(write=False))
writer = Depends(crm_principal(write=True))


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _profiles(request: Request) -> ProfileService:
    service: ProfileService = request.app.state.profiles
    return service


async def _read(request: Request, query: Callable[[Connection], T]) -> T:
    db = _db(request)

    def run() -> T:
        with db.read() as conn:
            return query(conn)

    return await run_in_threadpool(run)


def _answer(status: int, key: str, body: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"success": True, "status": status, key: body}, status_code=status, headers=headers)


def _page(request: Request, items: list[dict[str, Any]], page: Page) -> JSONResponse:
    """The vendor's pagination: ``count`` is the items of this page, ``previousPage`` and
    ``nextPage`` the paths of those pages (its clients follow them), with the request's other
    parameters (``count``, ``search``) kept so that following them walks the same list."""
    pagination = page.pagination()
    pagination["count"] = len(items)
    for key in ("previousPage", "nextPage"):
        if pagination[key] is not None:
            query = [(k, v) for k, v in request.query_params.multi_items() if k != "page"]
            pagination[key] = f"{request.url.path}?{urlencode([*query, ('page', pagination[key])])}"
    return JSONResponse({"success": True, "status": 200, "collection": items, "pagination": pagination})


def _written(key: str, result: PersonResult | RecordResult, body: dict[str, Any]) -> JSONResponse:
    status = 201 if result.created else 200
    headers = {MATCHES_HEADER: str(result.matches), **notices_header(result.notices)}
    return _answer(status, key, body, headers)


def _deleted() -> JSONResponse:
    return JSONResponse({"success": True, "status": 200})


def _body(model: PersonWrite | CompanyWrite | AttributeUpdate) -> dict[str, Any]:
    return model.model_dump(exclude_unset=True)


# --- people ---


@router.put(
    "/people/_bulk",
    summary="Create or update up to 1,000 people",
    responses={
        200: {"model": BulkAnswer, "description": "One result per record, in request order"},
        **ERRORS,
    },
)
async def bulk_upsert_people(
    request: Request,
    body: BulkPeopleWrite,
    matchingAttribute: str = Query("email", description="As for PUT /v2/crm/people"),
    principal: Principal = writer,
) -> Response:
    """Each record is upserted as by `PUT /v2/crm/people`, in order; a bad record is reported at its
    index with its error while the others are written."""
    job = people.people_upsert_job(
        _profiles(request), principal.org_id, body.people, matchingAttribute, principal.actor
    )
    return await answered(_db(request), job, _bulk_answer)


def _bulk_answer(results: list[PersonResult | ProfilehubError]) -> Response:
    if isinstance(results, people.FailedCall):
        return domain_error_response(results.error)
    items: list[dict[str, Any]] = []
    for index, result in enumerate(results):
        if isinstance(result, ProfilehubError):
            items.append({"index": index, **error_body(result.status, result.message, result.errors)})
        else:
            status = 201 if result.created else 200
            items.append(
                {
                    "index": index,
                    "success": True,
                    "status": status,
                    "person": result.person,
                    "matches": result.matches,
                }
            )
    ok = all(item["success"] for item in items)
    return JSONResponse({"success": ok, "status": 200, "results": items})


async def _write_person(
    request: Request, body: PersonWrite, matching: str | None, principal: Principal
) -> Response:
    return await write_person_answer(request.app.state, _body(body), matching, principal)


async def write_person_answer(
    state: Any, body: dict[str, Any], matching: str | None, principal: Principal, shaped: bool = False
) -> Response:
    """Upsert (``matching`` None: create) one person and answer it; also the fast path's answer
    (``crm/fast.py``)."""

    def render(results: list[PersonResult | ProfilehubError]) -> Response:
        [result] = results
        if isinstance(result, ProfilehubError):
            return domain_error_response(result)
        return _written("person", result, result.person)

    job = people.people_upsert_job(
        state.profiles, principal.org_id, [body], matching, principal.actor, shaped
    )
    return await answered(state.db, job, render)


@router.put(
    "/people",
    summary="Create or update a person (upsert by matching attribute)",
    responses={
        200: {
            "model": PersonAnswer,
            "description": "Updated: a person with the matching value was found",
            "headers": MATCH_AND_NOTICES_HEADERS,
        },
        201: {
            "model": PersonAnswer,
            "description": "Created: no person matched",
            "headers": MATCH_AND_NOTICES_HEADERS,
        },
        **ERRORS,
    },
)
async def upsert_person(
    request: Request,
    body: PersonWrite,
    matchingAttribute: str = Query(
        "email",
        description="Attribute to find the person by: email (any of a person's emails), a standard slug such as "
        "phone_number, or a custom attribute key. Several matches: the oldest is updated and the "
        f"`{MATCHES_HEADER}` header says how many matched.",
    ),
    principal: Principal = writer,
) -> Response:
    """Matched by email, the body's emails are added to the person's (none removed, the primary stays).
    Fields left out are kept."""
    return await _write_person(request, body, matchingAttribute, principal)


@router.post(
    "/people",
    status_code=201,
    summary="Create a person",
    responses={
        201: {"model": PersonAnswer, "description": "Created", "headers": MATCH_AND_NOTICES_HEADERS},
        **ERRORS,
    },
)
async def create_person(request: Request, body: PersonWrite, principal: Principal = writer) -> Response:
    """Create a person without matching; an email of another person is still a 409."""
    return await _write_person(request, body, None, principal)


@router.get(
    "/people",
    summary="List people",
    responses={200: {"model": PeoplePage, "description": "A page"}, **ERRORS},
)
async def list_people(
    request: Request,
    count: int = COUNT,
    page: int = PAGE,
    search: str | None = SEARCH,
    principal: Principal = reader,
) -> JSONResponse:
    """In creation order; `search` looks in names, emails, job title, location and phone number."""
    items, found = await _read(
        request, lambda c: people.list_people(c, principal.org_id, page=page, count=count, search=search)
    )
    return _page(request, items, found)


@router.get(
    "/people/{id}",
    summary="Get a person",
    responses={200: {"model": PersonAnswer, "description": "OK"}, **ERRORS},
)
async def get_person(request: Request, id: PersonId, principal: Principal = reader) -> JSONResponse:
    return _answer(200, "person", await _read(request, lambda c: people.get_person(c, principal.org_id, id)))


@router.patch(
    "/people/{id}",
    summary="Update a person",
    responses={200: {"model": PersonAnswer, "description": "Updated", "headers": NOTICES_HEADER}, **ERRORS},
)
async def patch_person(
    request: Request, id: PersonId, body: PersonWrite, principal: Principal = writer
) -> JSONResponse:
    """Fields left out are kept; `emails` given replaces the list; `null` clears a field."""
    result = await _db(request).awrite(
        people.patch_person_job(_profiles(request), principal.org_id, id, _body(body), principal.actor)
    )
    return _answer(200, "person", result.person, notices_header(result.notices))


@router.delete(
    "/people/{id}",
    summary="Delete a person",
    responses={200: {"model": DeletedAnswer, "description": "Deleted"}, **ERRORS},
)
async def delete_person(request: Request, id: PersonId, principal: Principal = writer) -> JSONResponse:
    await _db(request).awrite(
        people.delete_person_job(_profiles(request), principal.org_id, id, principal.actor)
    )
    return _deleted()


# --- companies ---


async def _write_company(
    request: Request, body: CompanyWrite, matching: str | None, principal: Principal
) -> Response:
    job = companies.upsert_company_job(principal.org_id, _body(body), matching, principal.actor)
    return await answered(_db(request), job, lambda result: _written("company", result, result.body))


@router.put(
    "/companies",
    summary="Create or update a company by domain",
    responses={
        200: {"model": CompanyAnswer, "description": "Updated", "headers": MATCH_AND_NOTICES_HEADERS},
        201: {"model": CompanyAnswer, "description": "Created", "headers": MATCH_AND_NOTICES_HEADERS},
        **ERRORS,
    },
)
async def upsert_company(
    request: Request,
    body: CompanyWrite,
    matchingAttribute: str = Query("domain", description="Only domain"),
    principal: Principal = writer,
) -> Response:
    return await _write_company(request, body, matchingAttribute, principal)


@router.post(
    "/companies",
    status_code=201,
    summary="Create a company",
    responses={
        201: {"model": CompanyAnswer, "description": "Created", "headers": MATCH_AND_NOTICES_HEADERS},
        **ERRORS,
    },
)
async def create_company(request: Request, body: CompanyWrite, principal: Principal = writer) -> Response:
    return await _write_company(request, body, None, principal)


@router.get(
    "/companies",
    summary="List companies",
    responses={200: {"model": CompaniesPage, "description": "A page"}, **ERRORS},
)
async def list_companies(
    request: Request,
    count: int = COUNT,
    page: int = PAGE,
    search: str | None = SEARCH,
    principal: Principal = reader,
) -> JSONResponse:
    """In creation order; `search` looks in name, domain and location."""
    items, found = await _read(
        request,
        lambda c: companies.list_companies(c, principal.org_id, page=page, count=count, search=search),
    )
    return _page(request, items, found)


@router.get(
    "/companies/{id}",
    summary="Get a company",
    responses={200: {"model": CompanyAnswer, "description": "OK"}, **ERRORS},
)
async def get_company(request: Request, id: CompanyId, principal: Principal = reader) -> JSONResponse:
    return _answer(
        200, "company", await _read(request, lambda c: companies.get_company(c, principal.org_id, id))
    )


@router.patch(
    "/companies/{id}",
    summary="Update a company",
    responses={200: {"model": CompanyAnswer, "description": "Updated", "headers": NOTICES_HEADER}, **ERRORS},
)
async def patch_company(
    request: Request, id: CompanyId, body: CompanyWrite, principal: Principal = writer
) -> JSONResponse:
    result = await _db(request).awrite(
        companies.patch_company_job(principal.org_id, id, _body(body), principal.actor)
    )
    return _answer(200, "company", result.body, notices_header(result.notices))


@router.delete(
    "/companies/{id}",
    summary="Delete a company",
    responses={200: {"model": DeletedAnswer, "description": "Deleted"}, **ERRORS},
)
async def delete_company(request: Request, id: CompanyId, principal: Principal = writer) -> JSONResponse:
    """Its people are kept and lose their company."""
    await _db(request).awrite(companies.delete_company_job(principal.org_id, id, principal.actor))
    return _deleted()


# --- objects and attributes ---


@router.get(
    "/objects",
    summary="List objects",
    responses={200: {"model": ObjectsAnswer, "description": "OK"}, **ERRORS},
)
async def list_objects(request: Request, principal: Principal = reader) -> JSONResponse:
    return _answer(200, "objects", await _read(request, lambda c: objects.list_objects(c, principal.org_id)))


@router.post(
    "/objects",
    status_code=201,
    summary="Create a custom object",
    responses={201: {"model": ObjectAnswer, "description": "Created"}, **ERRORS},
)
async def create_object(request: Request, body: ObjectCreate, principal: Principal = writer) -> JSONResponse:
    fields = body.model_dump(exclude_unset=True)
    view = await _db(request).awrite(
        lambda c: objects.create_object(c, principal.org_id, fields, principal.actor)
    )
    return _answer(201, "object", view)


@router.get(
    "/objects/{slug}",
    summary="Get an object and its attributes",
    responses={200: {"model": ObjectAnswer, "description": "OK"}, **ERRORS},
)
async def get_object(request: Request, slug: ObjectSlug, principal: Principal = reader) -> JSONResponse:
    return _answer(
        200, "object", await _read(request, lambda c: objects.object_view(c, principal.org_id, slug))
    )


@router.post(
    "/objects/{slug}/attributes",
    status_code=201,
    summary="Add an attribute to an object",
    responses={201: {"model": AttributeAnswer, "description": "Created"}, **ERRORS},
)
async def add_attribute(
    request: Request, slug: ObjectSlug, body: AttributeCreate, principal: Principal = writer
) -> JSONResponse:
    fields = body.model_dump(exclude_unset=True)
    view = await _db(request).awrite(
        lambda c: objects.add_attribute(c, principal.org_id, slug, fields, principal.actor)
    )
    return _answer(201, "attribute", view)


@router.patch(
    "/objects/{slug}/attributes/{key}",
    summary="Update an attribute",
    responses={200: {"model": AttributeAnswer, "description": "Updated"}, **ERRORS},
)
async def update_attribute(
    request: Request,
    slug: ObjectSlug,
    key: AttributeKey,
    body: AttributeUpdate,
    principal: Principal = writer,
) -> JSONResponse:
    """Type, key and isUnique cannot change; `options` replaces the list."""
    fields = _body(body)
    view = await _db(request).awrite(
        lambda c: objects.update_attribute(c, principal.org_id, slug, key, fields, principal.actor)
    )
    return _answer(200, "attribute", view)


# --- records of custom objects ---


@router.get(
    "/changes",
    summary="Follow CRM changes",
    responses={200: {"model": ChangesPage, "description": "The events after `after`"}, **ERRORS},
)
async def changes(
    request: Request,
    after: str | None = Query(
        default=None, description="An event `id` (or a page's `next`); absent: from the first."
    ),
    limit: str | None = Query(default=None, description="Events per page, 1 to 1000 (default 100)."),
    wait: str | None = Query(
        default=None,
        description="Seconds (0 to 30, default 0) to wait for an event when none follows `after` (long poll).",
    ),
    principal: Principal = reader,
) -> Response:
    """The org's `person.*`, `company.*` and `record.*` events after the cursor, in commit order
    (see docs/events.md)."""
    body = await pull(
        _db(request), principal.org_id, "crm", parse_query(after, limit, wait), gone=request.is_disconnected
    )
    return Response(body, media_type="application/json")


@router.put(
    "/{objectSlug}",
    summary="Create or update a record (upsert by matching attribute)",
    responses={
        200: {"model": RecordAnswer, "description": "Updated", "headers": MATCH_AND_NOTICES_HEADERS},
        201: {"model": RecordAnswer, "description": "Created", "headers": MATCH_AND_NOTICES_HEADERS},
        **ERRORS,
    },
)
async def upsert_record(
    request: Request,
    objectSlug: RecordObject,
    body: dict[str, Any] = RECORD_BODY,
    matchingAttribute: str = Query(description="Key of the attribute to match by (exact equality)"),
    principal: Principal = writer,
) -> Response:
    """The body is flat: attribute key to value. Several matches: the oldest is updated."""
    job = records.upsert_record_job(principal.org_id, objectSlug, body, matchingAttribute, principal.actor)
    return await answered(_db(request), job, lambda result: _written("record", result, result.body))


@router.post(
    "/{objectSlug}",
    status_code=201,
    summary="Create a record",
    responses={
        201: {"model": RecordAnswer, "description": "Created", "headers": MATCH_AND_NOTICES_HEADERS},
        **ERRORS,
    },
)
async def create_record(
    request: Request,
    objectSlug: RecordObject,
    body: dict[str, Any] = RECORD_BODY,
    principal: Principal = writer,
) -> Response:
    job = records.upsert_record_job(principal.org_id, objectSlug, body, None, principal.actor)
    return await answered(_db(request), job, lambda result: _written("record", result, result.body))


@router.get(
    "/{objectSlug}",
    summary="List records",
    responses={200: {"model": RecordsPage, "description": "A page"}, **ERRORS},
)
async def list_records(
    request: Request,
    objectSlug: RecordObject,
    count: int = COUNT,
    page: int = PAGE,
    search: str | None = SEARCH,
    principal: Principal = reader,
) -> JSONResponse:
    items, found = await _read(
        request,
        lambda c: records.list_records(
            c, principal.org_id, objectSlug, page=page, count=count, search=search
        ),
    )
    return _page(request, items, found)


@router.get(
    "/{objectSlug}/{id}",
    summary="Get a record",
    responses={200: {"model": RecordAnswer, "description": "OK"}, **ERRORS},
)
async def get_record(
    request: Request, objectSlug: RecordObject, id: RecordId, principal: Principal = reader
) -> JSONResponse:
    return _answer(
        200, "record", await _read(request, lambda c: records.get_record(c, principal.org_id, objectSlug, id))
    )


@router.patch(
    "/{objectSlug}/{id}",
    summary="Update a record",
    responses={200: {"model": RecordAnswer, "description": "Updated"}, **ERRORS},
)
async def patch_record(
    request: Request,
    objectSlug: RecordObject,
    id: RecordId,
    body: dict[str, Any] = RECORD_BODY,
    principal: Principal = writer,
) -> JSONResponse:
    result = await _db(request).awrite(
        records.patch_record_job(principal.org_id, objectSlug, id, body, principal.actor)
    )
    return _answer(200, "record", result.body)


@router.delete(
    "/{objectSlug}/{id}",
    summary="Delete a record",
    responses={200: {"model": DeletedAnswer, "description": "Deleted"}, **ERRORS},
)
async def delete_record(
    request: Request, objectSlug: RecordObject, id: RecordId, principal: Principal = writer
) -> JSONResponse:
    await _db(request).awrite(records.delete_record_job(principal.org_id, objectSlug, id, principal.actor))
    return _deleted()
