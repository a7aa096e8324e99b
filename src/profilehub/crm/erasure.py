"""Hard deletion of CRM people: by ``DELETE /people/{id}`` and by a CDP erasure of their profile.

Apart from ``people.py`` so that the profile service can erase the people linked to a profile
without importing the CRM's write path (which imports the profile service).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.engine import Connection

from profilehub.crm import record_store as store
from profilehub.crm.objects import LOCK, PEOPLE
from profilehub.crm.records import scrub_change_values
from profilehub.idempotency import forget_answers
from profilehub.store.changes import change_row, now_ms, record
from profilehub.store.database import lock_scope
from profilehub.store.events import EventRow, append_events, forget_events
from profilehub.store.tables import crm_person_emails


def lock_people(conn: Connection, org_id: int) -> None:
    """The lock of the org's CRM writes (PostgreSQL; see ``lock_scope``)."""
    lock_scope(conn, org_id, LOCK)


def erase_people(
    conn: Connection, org_id: int, person_ids: Sequence[str], actor: str, why: str | None = None
) -> list[str]:
    """Delete these people (their emails, value index, saved answers; their change rows keep names
    only); the ids of those that existed. ``why`` goes into each delete's change row."""
    if not person_ids:
        return []
    lock_people(conn, org_id)
    loaded = store.load_records(conn, org_id, PEOPLE, person_ids)
    found = [p for p in dict.fromkeys(person_ids) if p in loaded]
    if not found:
        return []
    conn.execute(
        crm_person_emails.delete().where(
            crm_person_emails.c.org_id == org_id, crm_person_emails.c.person_id.in_(found)
        )
    )
    ts = now_ms()
    for person_id in found:
        store.delete_record(conn, org_id, PEOPLE, person_id)
        scrub_change_values(conn, org_id, "crm_person", person_id)
    forget_answers(conn, org_id, found)  # saved answers of keyed writes of these people
    detail = {"reason": why} if why else None
    record(conn, [change_row(org_id, actor, "crm_person", p, "delete", detail, ts) for p in found])
    # The earlier events held the people's values; the deletions' own hold the ids only.
    forget_events(conn, org_id, found)
    append_events(conn, [EventRow(org_id, "person.deleted", ts, p, {"id": p}) for p in found])
    return found
