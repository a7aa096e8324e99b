"""``POST /cdp/v1/users/_bulk``: up to 1,000 writes of the ``POST /cdp/v1/users`` form at once.

The body is a JSON array of write bodies. Every record is read on its own by ``parse_write`` (as
the single endpoint reads its body), so a bad record becomes an error at its index while the good
ones are written; the good ones go to the profile service as one batch (in request order), which
resolves exactly as the same records sent singly.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends
from fastapi.responses import Response
from pydantic import BaseModel, Field

from profilehub.auth import Principal
from profilehub.cdp.models import ErrorBody, Profile, parse_write
from profilehub.cdp.routes import ERRORS, _service, cdp_principal
from profilehub.errors import PayloadTooLarge, ProfilehubError, error_body
from profilehub.http import JSONResponse
from profilehub.idempotency_http import answered
from profilehub.profiles import ProfileService, ProfileWrite, WriteResult

MAX_BULK_WRITES = 1000

router = APIRouter(prefix="/cdp/v1", tags=["CDP profiles"])


class BulkItem(BaseModel):
    index: int = Field(description="Position of the record in the request array, from 0.")
    status: int = Field(description="200 written, or the status the single endpoint would answer.")
    profile: Profile | None = None
    error: ErrorBody | None = None
    notices: list[dict[str, Any]] | None = Field(
        default=None, description="What this write ignored or refused (the single endpoint's header)."
    )


def _answer(index: int, outcome: WriteResult | ProfilehubError) -> dict[str, Any]:
    if isinstance(outcome, ProfilehubError):
        return {
            "index": index,
            "status": outcome.status,
            "error": error_body(outcome.status, outcome.message, outcome.errors),
        }
    item: dict[str, Any] = {"index": index, "status": 200, "profile": outcome.profile}
    if outcome.notices:
        item["notices"] = outcome.notices
    return item


@router.post(
    "/users/_bulk",
    summary="Write up to 1,000 user profiles",
    response_class=JSONResponse,
    responses={200: {"model": list[BulkItem], "description": "One answer per record, in order"}, **ERRORS},
)
async def write_users_bulk(
    records: list[Any] = Body(
        description="A JSON array of up to 1,000 bodies of `POST /cdp/v1/users`, each with the "
        "apikey's `orgId`.",
        # Items are validated one by one (a bad one is answered at its index), so the parameter
        # takes anything; the document still says what each item is.
        json_schema_extra={
            "items": {"$ref": "#/components/schemas/WriteUserRequest"},
            "maxItems": MAX_BULK_WRITES,
        },
    ),
    principal: Principal = Depends(cdp_principal("profile.write")),
    service: ProfileService = Depends(_service),
) -> Response:
    """Resolve and write every record in order, as if sent one by one; answer per record.

    A record that is refused (bad shape, foreign org, unknown idType, unknown ucid ...) is answered
    at its index with the error the single endpoint would give; the others are written.
    """
    if len(records) > MAX_BULK_WRITES:
        raise PayloadTooLarge(
            f"at most {MAX_BULK_WRITES} writes per request, got {len(records)}", field="body"
        )
    answers: list[dict[str, Any] | None] = [None] * len(records)
    writes: list[ProfileWrite] = []
    positions: list[int] = []
    for index, raw in enumerate(records):
        try:
            writes.append(parse_write(raw, principal.org_id, "bulk"))
            positions.append(index)
        except ProfilehubError as exc:
            answers[index] = _answer(index, exc)
    if not writes:
        return JSONResponse(answers)

    def render(results: list[WriteResult | ProfilehubError]) -> JSONResponse:
        out = list(answers)
        for index, outcome in zip(positions, results, strict=True):
            out[index] = _answer(index, outcome)
        return JSONResponse(out)

    return await answered(service.db, service.write_job(writes, principal.actor), render, service.observe)
