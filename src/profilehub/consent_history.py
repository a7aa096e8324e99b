"""The consent of a person as of a time, and the ledger behind it (``POST /cdp/v1/users/_consent``,
the console's profile page). Knows nothing of HTTP."""

from __future__ import annotations

from typing import Any

from profilehub.errors import BadRequest, NotFound
from profilehub.profiles import ProfileService, check_ucid
from profilehub.store.changes import now_ms
from profilehub.store.consent_ledger import PersonConsent, person_consent
from profilehub.store.profile_storage import profile_storage

# Epoch ms up to the year 10000: a larger `at` is a typo (seconds in ns, a date as digits...).
MAX_AT = 253_402_300_800_000


def check_at(at: Any, field: str = "at") -> int:
    if isinstance(at, bool) or not isinstance(at, int):
        raise BadRequest("must be a time in epoch milliseconds (an integer)", field=field)
    if not 0 <= at < MAX_AT:
        raise BadRequest(f"must be epoch milliseconds between 0 and {MAX_AT}", field=field)
    return at


def consent_of(
    service: ProfileService, org_id: int, region: str | None, ucid: str, at: int | None = None
) -> PersonConsent:
    """The consent of the person ``ucid`` belongs to (any of its ucids) as of ``at`` (epoch ms,
    default now), with the ledger entries up to then; 404 for a ucid the org (and region, when
    given) does not hold, erased ones included."""
    wanted = check_ucid(ucid, "ucid")
    when = check_at(at) if at is not None else now_ms()
    with service.db.read() as conn:
        strategy = service.strategies.get(conn, org_id)
        r = strategy.check_region(region) if region is not None else None
        storage = profile_storage(conn)
        hit = storage.resolve_ucids(org_id, [wanted]).get(wanted)
        if hit is None or (r is not None and hit[1] != r):
            where = f" in region {r}" if r is not None else ""
            raise NotFound(f"no profile with ucid {wanted}{where} of org {org_id}", field="ucid")
        master = hit[0]
        linked = storage.linked_ucids(org_id, [master]).get(master, [])
        return person_consent(conn, org_id, master, linked, when)


def consent_answer(found: PersonConsent) -> dict[str, Any]:
    """The API's answer: ``{"ucid", "consent", "history": [{attribute, value, ts, actor, source}]}``."""
    return {
        "ucid": found.ucid,
        "consent": found.consent,
        "history": [
            {"attribute": e.attribute, "value": e.value, "ts": e.ts, "actor": e.actor, "source": e.source}
            for e in found.history
        ],
    }
