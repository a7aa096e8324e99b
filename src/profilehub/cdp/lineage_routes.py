"""CDP routes of merges: explain a write before it is made, undo a merge. Thin: the work is in
``profilehub.lineage``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from profilehub.auth import Principal
from profilehub.cdp.models import parse_write
from profilehub.cdp.routes import ERRORS, _service, cdp_principal
from profilehub.http import JSONResponse
from profilehub.lineage import explain
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
    responses={200: {"model": ExplainAnswer, "description": "The decision; nothing was written"}, **ERRORS},
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
