"""Explain and undo merges: the journal of a person's writes, ``explain`` (what a write would do
now, writing nothing) and ``unmerge``. Knows nothing of HTTP; the CDP routes and the console call
these functions.
"""

from __future__ import annotations

from typing import Any

from profilehub.errors import NotFound
from profilehub.identity.resolve import WriteOutcome, apply_write
from profilehub.identity.storage import WriteRecord
from profilehub.profiles import ProfileService, ProfileWrite, check_ucid, prepare_write
from profilehub.store.changes import now_ms
from profilehub.store.journal_store import person_journal
from profilehub.store.profile_storage import profile_storage

# What an explanation calls the profile a write would create (its ucid is made by the write).
NEW_PROFILE = "(new profile)"


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


def explain(service: ProfileService, write: ProfileWrite, actor: str) -> dict[str, Any]:
    """What ``write`` would do now, writing nothing: the same resolution as the write path
    (``apply_write``), run on a storage of a read transaction that is never flushed.

    Bad input fails as the write would (the same ``prepare_write``).
    """
    with service.db.read() as conn:
        strategy = service.strategies.get(conn, write.org_id)
        prepared = prepare_write(strategy, write, actor)
        storage = profile_storage(conn, journal=False)
        outcome = apply_write(storage, strategy, prepared, now_ms(), new_ucid=lambda: NEW_PROFILE)
        # Leaving the block ends the transaction; the storage's writes were never flushed.
    return explanation(outcome, write.ucid)


def explanation(outcome: WriteOutcome, named_ucid: str | None) -> dict[str, Any]:
    """The answer of ``_explain`` from a write's outcome."""
    via: dict[str, list[dict[str, str]]] = {}
    for ident, owner in outcome.owners.items():
        via.setdefault(owner, []).append({"idType": ident.id_type, "value": ident.value})
    if outcome.named is not None and named_ucid is not None:
        via.setdefault(outcome.named, []).append({"idType": "ucid", "value": named_ucid})
    refused = []
    for ucid in sorted(outcome.refused):
        notice = next(
            (
                n
                for n in outcome.notices
                if n.code == "merge_refused" and ucid in (n.detail or {}).get("ucids", [])
            ),
            None,
        )
        message = (
            notice.message
            if notice
            else f"kept apart: the write names profile {outcome.master.ucid}, which it lands on instead"
        )
        refused.append({"ucid": ucid, "code": "merge_refused", "message": message})
    return {
        "master": None if outcome.created else outcome.master.ucid,
        "matches": [
            {"ucid": u, "via": sorted(v, key=lambda i: (i["idType"], i["value"]))}
            for u, v in sorted(via.items())
        ],
        "merges": list(outcome.merged),
        "refused": refused,
        "notices": [n.as_dict() for n in outcome.notices],
    }
