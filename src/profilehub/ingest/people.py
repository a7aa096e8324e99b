"""The CRM people sink: records in the ``PUT /v2/crm/people`` body form, upserted by a matching attribute."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from profilehub.crm.people import MAX_BATCH, upsert_people_batch
from profilehub.ingest.runner import Outcome, Sink
from profilehub.store.database import Database


def person_body(record: dict[str, Any]) -> dict[str, Any]:
    """A CSV column mapped to ``emails`` holds one address; the API wants an array."""
    emails = record.get("emails")
    if isinstance(emails, str):
        return {**record, "emails": [emails]}
    return record


def people_sink(db: Database, org_id: int, matching_attribute: str, actor: str) -> Sink:
    def write(records: Sequence[dict[str, Any]]) -> Sequence[Outcome]:
        out: list[Outcome] = []
        for start in range(0, len(records), MAX_BATCH):
            part = [person_body(r) for r in records[start : start + MAX_BATCH]]
            out += upsert_people_batch(db, org_id, part, matching_attribute, actor)
        return out

    return write
