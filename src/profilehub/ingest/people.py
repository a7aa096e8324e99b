"""The CRM people sink: records in the ``PUT /v2/crm/people`` body form, upserted by a matching
attribute and read as the endpoint reads its body (``crm.models.parse_person``, then the core)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from profilehub.crm.objects import PEOPLE, custom_attributes
from profilehub.crm.people import MAX_BATCH, resolve_matching, upsert_people_batch
from profilehub.ingest.runner import Outcome, Sink
from profilehub.profiles import ProfileService
from profilehub.store.database import Database


def people_sink(
    db: Database, org_id: int, matching_attribute: str, actor: str, clock: Callable[[], int] | None = None
) -> Sink:
    """``clock``: the time of each write (epoch ms), the wall clock when None (``import --at``)."""
    profiles = ProfileService(db, clock=clock)  # one strategy cache for the whole import

    def write(records: Sequence[dict[str, Any]]) -> Sequence[Outcome]:
        out: list[Outcome] = []
        for start in range(0, len(records), MAX_BATCH):
            part = list(records[start : start + MAX_BATCH])
            out += upsert_people_batch(db, org_id, part, matching_attribute, actor, profiles)
        return out

    return write


def check_matching_attribute(db: Database, org_id: int, matching_attribute: str) -> None:
    """Raise unless people of the org can be matched by ``matching_attribute``: checked before the
    file is read, as an unknown one would refuse every record."""
    with db.read() as conn:
        resolve_matching(matching_attribute, custom_attributes(conn, org_id, PEOPLE))
