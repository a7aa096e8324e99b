"""CDP routes of merges: explain a write before it is made, undo a merge. Thin: the work is in
``profilehub.lineage``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from starlette.concurrency import run_in_threadpool

from profilehub.auth import Principal, check_org
from profilehub.cdp.models import ErrorBody, Profile, parse_write
from profilehub.cdp.routes import ERRORS, _service, cdp_principal
from profilehub.http import JSONResponse, notices_header
from profilehub.lineage import aunmerge, explain
from profilehub.openapi_extras import NOTICES_HEADER
from profilehub.profiles import ProfileService

router = APIRouter(prefix="/cdp/v1", tags=["CDP profiles"])


class IdMatch(BaseModel):
    idType: str = Field(
        description="The idType (as stored: raw values are normalised and hashed), or `ucid`."
    )
    value: str


class ExplainMatch(BaseModel):
    ucid: str = Field(description="A profile the write matches (always a master).")
    via: list[IdMatch] = Field(description="The write's ids (or its `ucid`) that this profile holds.")


class ExplainRefusal(BaseModel):
    ucid: str = Field(description="A matching profile the write would keep apart.")
    code: str
    message: str


class ExplainAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    master: str | None = Field(description="The profile the write would land on; null: it would create one.")
    matches: list[ExplainMatch]
    merges: list[str] = Field(description="The ucids the write would merge into the master.")
    refused: list[ExplainRefusal]
    notices: list[dict[str, Any]] = Field(
        description="What the write would ignore or refuse (the `X-Profilehub-Notices` of the write)."
    )


@router.post(
    "/users/_explain",
    summary="Explain what a write would do",
    response_class=JSONResponse,
    responses={
        200: {"model": ExplainAnswer, "description": "The decision; nothing was written"},
        **ERRORS,
        409: {
            "model": ErrorBody,
            "description": "Every id of the write is suppressed (as the write would be)",
        },
    },
)
async def explain_write(
    body: Any = Body(
        description="A write (see WriteUserRequest), read by the write's own parser.",
        json_schema_extra={"$ref": "#/components/schemas/WriteUserRequest"},
    ),
    principal: Principal = Depends(cdp_principal("profile.read")),
    service: ProfileService = Depends(_service),
) -> JSONResponse:
    """The body of a `POST /cdp/v1/users` write. Answers what that write would do now (the profile
    it lands on, the profiles it matches and through which ids, the merges it makes or refuses, its
    notices), by the same rules as the write, and writes nothing. Bad input fails as the write would."""
    write = parse_write(body, principal.org_id)
    return JSONResponse(await run_in_threadpool(explain, service, write, principal.actor))


class UnmergeRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "orgId": 1234,
                    "region": "EU",
                    "ucid": "0191e5a0-7c3e-7d51-9a5e-3f1d2c4b5a69",
                    "ids": {"crm_id": ["crm-1"]},
                }
            ]
        },
    )

    orgId: StrictInt
    region: str = Field(min_length=1, max_length=16)
    ucid: str = Field(description="Any ucid of the person (its master or one merged into it).")
    ids: dict[str, Any] = Field(
        description="idType (or namespace) to the values that should never have linked anything "
        "(at most 100 in all); a raw email or phone stands for its hashes. Each must be on the person."
    )


@router.post(
    "/users/_unmerge",
    summary="Undo a merge",
    response_class=JSONResponse,
    responses={
        200: {
            "model": list[Profile],
            "description": "The profiles the person became, the one holding `ucid` first (a "
            "`nothing_unmerged` notice: the person is as it was, and nothing was written)",
            "headers": NOTICES_HEADER,
        },
        **ERRORS,
        409: {
            "model": ErrorBody,
            "description": "The person's journal is incomplete (retention): it cannot be rebuilt",
        },
    },
)
async def unmerge_person(
    body: UnmergeRequest,
    principal: Principal = Depends(cdp_principal("profile.write")),
    service: ProfileService = Depends(_service),
) -> JSONResponse:
    """Rebuild the person `ucid` belongs to from the journal of its writes, in order, as if the
    listed ids had never linked anything: each stays with the profile it first attached to, and
    profiles merged in only through them come back under their own ucids with their own
    attributes and ids. See docs/unmerge.md."""
    check_org(principal, body.orgId)
    result = await aunmerge(service, body.orgId, body.region, body.ucid, body.ids, principal.actor)
    return JSONResponse(result.profiles, headers=notices_header(result.notices))
