"""Request and response shapes of the CDP dialect, as its vendor documents them, and the one
reader of a write body (``parse_write``).

Ids and upsert contents are checked by the core (which names the field in its errors); the
models here pin the top-level shape and describe everything for OpenAPI.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from profilehub.errors import BadRequest, Forbidden, shape_errors
from profilehub.profiles import ProfileWrite

VENDOR_EXAMPLE: dict[str, Any] = {
    "orgId": 1234,
    "region": "EU",
    "ucid": "d7a6bc75-2c87-4650-91dc-c212771866c9",
    "ids": {"email_sha256_lowercase": "0a0601cfc9d014580fcf0b0"},
    "upsert": {
        "profile": {"user_gender": "M"},
        "mkt_preferences": {"telemarketing": "market", "sms_optin": "yes"},
        "consent": {"gdpr_advertising": "yes"},
    },
}


class WriteUserRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [VENDOR_EXAMPLE]})

    orgId: StrictInt = Field(description="Organisation identifier; must be the apikey's org.")
    region: str = Field(min_length=1, max_length=16, description="Region code to scope the write.")
    ids: dict[str, Any] = Field(
        default_factory=dict,
        description="Map of idType to a single value (e.g. email, email_sha256_lowercase, AdId). "
        "Raw email and cellphone values are normalised and hashed into the derived idTypes.",
    )
    upsert: dict[str, Any] = Field(
        description="Attributes by category (profile, mkt_preferences, consent); null removes one. "
        "Required, as the vendor marks it (`{}` writes ids only).",
    )
    ucid: UUID | None = Field(default=None, description="Target a specific profile.")

    def to_write(self) -> ProfileWrite:
        return ProfileWrite(
            self.orgId, self.region, self.ids, self.upsert, str(self.ucid) if self.ucid else None
        )


def shape_error(exc: ValidationError) -> BadRequest:
    """A write body's shape errors as one ``BadRequest``: every field in ``errors``, the first
    one as its ``field`` (the import's reject reason)."""
    errors = shape_errors(exc.errors(), WriteUserRequest.model_fields)
    first = next(iter(errors), "body")
    return BadRequest("; ".join(f"{f}: {m}" for f, m in errors.items()), field=first, errors=errors)


def parse_write(raw: Any, org_id: int, source: str = "api") -> ProfileWrite:
    """The one reading of a ``POST /cdp/v1/users`` body, for every entry point (the route, its fast
    path, ``_bulk`` and ``profilehub import cdp``), so a body is refused alike wherever it is sent.

    ``org_id`` is the caller's org (the credential's, or the import's). Returns the write, or raises
    a ``BadRequest`` naming the field (shape) or a ``Forbidden`` (another org's ``orgId``).
    ``source`` names the entry point in the consent ledger (api, bulk, import).
    """
    if not isinstance(raw, dict):
        raise BadRequest("must be a write body (a JSON object)", field="body")
    try:
        body = WriteUserRequest.model_validate(raw)
    except ValidationError as exc:
        raise shape_error(exc) from exc
    if body.orgId != org_id:
        raise Forbidden(f"{body.orgId} is not this credential's (or import's) org {org_id}", field="orgId")
    write = body.to_write()
    write.source = source
    return write


class SearchUsersRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"orgId": 1234, "regions": ["EU"], "search": {"email": ["jane.doe@acme.com"]}}]
        },
    )

    orgId: StrictInt
    regions: list[str] | None = Field(
        default=None, description="Regions to search; default all of the org's."
    )
    search: dict[str, Any] = Field(
        description="idType, namespace or `ucid` to an array of values (at most 1,000 in all)."
    )


class DeleteUsersRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "orgId": 1234,
                    "region": "EU",
                    "ids": {"email": ["jane.doe@acme.com"]},
                    "sendEmailNotification": False,
                }
            ]
        },
    )

    orgId: StrictInt
    region: str = Field(min_length=1, max_length=16)
    ids: dict[str, Any] = Field(description="Exactly one idType (or `ucid`) with at most 400 values.")
    sendEmailNotification: StrictBool = Field(
        default=False,
        description="Recorded on the erasure's receipt and in the change log, and emitted as an "
        "`erasure.notification_requested` event for the org's mailer; profilehub sends no email itself.",
    )
    suppress: StrictBool = Field(
        default=True,
        description="Keep a keyed fingerprint of every erased id (never the value), so later writes "
        "and imports carrying one drop it (docs/privacy.md); false skips it.",
    )


class IdRecord(BaseModel):
    model_config = ConfigDict(extra="allow")
    ts: str = Field(alias="_ts", description="Epoch ms when the id was last seen.")


class Profile(BaseModel):
    ucid: str
    region: str
    created_ts: int = Field(description="Epoch ms")
    updated_ts: int = Field(description="Epoch ms")
    profile: dict[str, Any] = Field(description="Attributes, with `_ts` (epoch ms string).")
    mkt_preferences: dict[str, Any]
    consent: dict[str, Any]
    ids: dict[str, list[Any]] = Field(
        description="Namespace to [{idType: value, _ts}], plus `linkedUcid`: ucids merged into this one."
    )


class DeleteUsersResponse(BaseModel):
    ucids: list[str]
    deletedProfiles: int
    profilesNotFound: list[str] = Field(description="The values (as text) that matched no profile.")
    deletedPeople: int = Field(
        description="CRM people linked to the erased profiles, deleted with them (docs/crm.md)."
    )
    suppressedIds: int = Field(
        description='Fingerprints of erased ids newly suppressed (0 with `"suppress": false`): '
        "a raw email or phone number counts once per form a write can carry (raw and each hash)."
    )
    receiptId: str = Field(
        description="The erasure's signed receipt: GET /cdp/v1/erasures/{receiptId} (docs/privacy.md)."
    )


class UnsuppressRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"orgId": 1234, "region": "EU", "ids": {"email": ["jane.doe@acme.com"]}}]
        },
    )

    orgId: StrictInt
    region: str = Field(min_length=1, max_length=16)
    ids: dict[str, Any] = Field(
        description="idType (or namespace) to values, at most 400 in all; a raw email or phone "
        "number lifts every hashed form of it too."
    )


class UnsuppressResponse(BaseModel):
    orgId: int
    region: str
    removedFingerprints: int = Field(description="How many suppressed fingerprints were removed.")


class ErasureCounts(BaseModel):
    model_config = ConfigDict(extra="allow")
    profiles: int = Field(description="Profiles erased (the masters the request's ids found).")
    mergedProfiles: int = Field(description="Profiles merged into them, erased with them.")
    ids: int = Field(description="Ids (rows of the identity graph) erased.")
    journalRows: int = Field(description="Journal entries (applied writes) erased.")
    consentRows: int = Field(description="Consent ledger entries erased.")
    events: int = Field(description="Earlier change events of the erased ucids deleted.")
    deletedPeople: int = Field(description="Linked CRM people deleted.")
    valuesNotFound: int = Field(description="Values of the request that matched no profile.")
    suppressedIds: int = Field(description="Fingerprints of the erased ids newly suppressed.")


class ErasureReceipt(BaseModel):
    """A signed erasure receipt (docs/privacy.md): `profilehub receipt verify FILE` checks it."""

    model_config = ConfigDict(extra="allow")
    format: str = Field(description="`profilehub-erasure-receipt/1`.")
    receiptId: str
    orgId: int
    region: str
    erasedAt: int = Field(description="Epoch ms of the erasure.")
    erasedBy: str = Field(description="Who erased, as the change log names it (`apikey:<prefix>`).")
    by: str = Field(description="The idType (or `ucid`) the request named; never its values.")
    ucids: list[str] = Field(description="Every erased ucid: each profile found, then those merged into it.")
    counts: ErasureCounts
    sendEmailNotification: bool
    algorithm: str = Field(description="`Ed25519`.")
    keyId: str = Field(description="First 16 hex digits of SHA-256 of the raw public key.")
    publicKey: str = Field(description="The signing key, base64 of its 32 raw bytes.")
    signature: str = Field(
        description="Ed25519 signature (base64) of the canonical form of every other field."
    )


class ErrorBody(BaseModel):
    success: bool = False
    status: int
    message: str
    errors: dict[str, str] | None = None


class ChangeEvent(BaseModel):
    """One change event (docs/events.md); the CDP and CRM feeds answer the same shape."""

    id: str = Field(description="The event's cursor: pass it (or the page's `next`) as `after`.")
    type: str = Field(description="`profile.created`, `person.updated`, …: see docs/events.md.")
    orgId: int
    region: str | None = Field(default=None, description="CDP events only: the profile's region.")
    ts: int = Field(description="Epoch ms of the change.")
    data: dict[str, Any] = Field(
        description="`profile` (with `mergedUcids` on a merge), `ucids` on an erasure; "
        "`person`, `company`, `record`, or `id` on a delete."
    )


class ChangesPage(BaseModel):
    changes: list[ChangeEvent] = Field(description="In commit order; empty when nothing followed `after`.")
    next: str = Field(
        description="The `after` of the next page: the last event's id after a full page, else past "
        "everything the read looked at (other feeds' events too), or `after` again when nothing followed it."
    )
