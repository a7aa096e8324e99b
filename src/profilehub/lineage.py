"""Explain and undo merges: the journal of a person's writes, ``explain`` (what a write would do
now, writing nothing) and ``unmerge``. Knows nothing of HTTP; the CDP routes and the console call
these functions.
"""

from __future__ import annotations

from typing import Any

from profilehub.errors import NotFound
from profilehub.identity.storage import WriteRecord
from profilehub.profiles import ProfileService, check_ucid
from profilehub.store.journal_store import person_journal
from profilehub.store.profile_storage import profile_storage


def journal_entry(record: WriteRecord) -> dict[str, Any]:
    """One write of the journal as the console and the API show it."""
    return {
        "ts": record.ts,
        "actor": record.actor,
        "ucid": record.ucid,
        "created": record.created,
        "namedUcid": record.named_ucid,
        "ids": [{"idType": i.id_type, "value": i.value} for i in record.ids],
        "upsert": record.upsert,
        "merged": [{"ucid": u, "via": via} for u, via in record.merges.items()],
    }


def journal(service: ProfileService, org_id: int, ucid: str) -> list[dict[str, Any]]:
    """The writes that made the person ``ucid`` belongs to, oldest first (404: no such ucid)."""
    wanted = check_ucid(ucid, "ucid")
    with service.db.read() as conn:
        storage = profile_storage(conn)
        master = storage.resolve_ucids(org_id, [wanted]).get(wanted)
        if master is None:
            raise NotFound(f"no profile with ucid {wanted} in org {org_id}", field="ucid")
        ucids = [master[0], *storage.linked_ucids(org_id, [master[0]]).get(master[0], [])]
        return [journal_entry(record) for _, record in person_journal(conn, org_id, ucids)]
