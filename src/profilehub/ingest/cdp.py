"""The CDP sink: records in the ``POST /cdp/v1/users`` body form, written by ``write_batch``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from profilehub.errors import BadRequest, Forbidden, ProfilehubError
from profilehub.ingest.runner import Outcome, Sink
from profilehub.profiles import ProfileService, ProfileWrite

_KEYS = {"orgId", "region", "ids", "upsert", "ucid"}


def profile_write(record: dict[str, Any], org_id: int, region: str) -> ProfileWrite:
    """A record as a write of ``org_id``; ``orgId`` and ``region`` default to the import's."""
    unknown = sorted(set(record) - _KEYS)
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}", field=unknown[0])
    record_org = record.get("orgId", org_id)
    if record_org != org_id:
        raise Forbidden(f"the record is for org {record_org!r}, the import for org {org_id}", field="orgId")
    record_region = record.get("region", region)
    if not isinstance(record_region, str):
        raise BadRequest("must be a region code", field="region")
    ucid = record.get("ucid")
    if ucid is not None and not isinstance(ucid, str):
        raise BadRequest("must be a ucid (a UUID string)", field="ucid")
    return ProfileWrite(org_id, record_region, record.get("ids") or {}, record.get("upsert") or {}, ucid)


def cdp_sink(service: ProfileService, org_id: int, region: str, actor: str) -> Sink:
    def write(records: Sequence[dict[str, Any]]) -> Sequence[Outcome]:
        out: list[Outcome | None] = [None] * len(records)
        writes: list[ProfileWrite] = []
        positions: list[int] = []
        for index, record in enumerate(records):
            try:
                writes.append(profile_write(record, org_id, region))
                positions.append(index)
            except ProfilehubError as exc:
                out[index] = exc
        for index, result in zip(positions, service.write_batch(writes, actor), strict=True):
            out[index] = result
        return [o for o in out if o is not None]

    return write
