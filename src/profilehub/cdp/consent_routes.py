"""``POST /cdp/v1/users/_consent``: a person's consent as of a time, and its ledger. Thin: the work
is in ``profilehub.consent_history``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from starlette.concurrency import run_in_threadpool

from profilehub.auth import Principal, check_org
from profilehub.cdp.routes import ERRORS, _service, cdp_principal
from profilehub.consent_history import MAX_AT, consent_answer, consent_of
from profilehub.http import JSONResponse
from profilehub.profiles import ProfileService

router = APIRouter(prefix="/cdp/v1", tags=["CDP profiles"])


class ConsentRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "orgId": 1234,
                    "region": "EU",
                    "ucid": "0191e5a0-7c3e-7d51-9a5e-3f1d2c4b5a69",
                    "at": 1767225600000,
                }
            ]
        },
    )

    orgId: StrictInt
    region: str = Field(min_length=1, max_length=16)
    ucid: str = Field(description="Any ucid of the person (its master or one merged into it).")
    at: StrictInt | None = Field(
        default=None,
        ge=0,
        lt=MAX_AT,
        description="Epoch milliseconds: the consent as it stood then, and the ledger up to then. "
        "Default: now.",
    )


class ConsentEntryView(BaseModel):
    attribute: str
    value: Any = Field(description="The value written; null: the attribute was removed.")
    ts: int = Field(description="When it was written (epoch ms).")
    actor: str = Field(description="Who wrote it (the credential's prefix, or the import).")
    source: str = Field(
        description="How it came: api, bulk, import, crm, unmerge, or merge (a value a merge "
        "brought from a merged profile, or a denial it kept)."
    )


class ConsentAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ucid: str = Field(description="The person's ucid (its master).")
    consent: dict[str, Any] = Field(description="The person's consent attributes as of `at`.")
    history: list[ConsentEntryView] = Field(
        description="Every consent value written to the person's profiles up to `at`, oldest first."
    )


@router.post(
    "/users/_consent",
    summary="A person's consent as of a time, with its ledger",
    response_class=JSONResponse,
    responses={200: {"model": ConsentAnswer, "description": "The consent and its history"}, **ERRORS},
)
async def consent_history(
    body: ConsentRequest,
    principal: Principal = Depends(cdp_principal("profile.read")),
    service: ProfileService = Depends(_service),
) -> JSONResponse:
    """The consent of the person `ucid` belongs to as it stood at `at` (default now), and every
    consent value written to the person's profiles up to then, with time, actor and source. An
    unknown or erased ucid is a 404. See docs/privacy.md."""
    check_org(principal, body.orgId)
    found = await run_in_threadpool(consent_of, service, body.orgId, body.region, body.ucid, body.at)
    return JSONResponse(consent_answer(found))
