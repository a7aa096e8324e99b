"""Explain and undo merges: the journal of a person's writes, ``explain`` (what a write would do
now, writing nothing) and ``unmerge``. Knows nothing of HTTP; the CDP routes and the console call
these functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from profilehub.errors import BadRequest, Conflict, NotFound
from profilehub.identity.normalize import Identifier, Notice
from profilehub.identity.replay import replay
from profilehub.identity.resolve import WriteOutcome, apply_write
from profilehub.identity.storage import WriteRecord
from profilehub.identity.strategy import CRM_PERSON_ID
from profilehub.profiles import ProfileService, ProfileWrite, check_ucid, prepare_write, profile_view
from profilehub.store.changes import change_row, now_ms, record
from profilehub.store.database import lock_scope
from profilehub.store.events import PROFILE_UNMERGED, EventRow, append_events
from profilehub.store.journal_store import person_journal
from profilehub.store.person_store import replace_person
from profilehub.store.profile_storage import profile_storage

MAX_UNMERGE_VALUES = 100

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


# The notice of an unmerge that found the person as it would rebuild it.
NOTHING_UNMERGED = "nothing_unmerged"


@dataclass(frozen=True)
class Unmerged:
    """What an unmerge did: the profiles the person is now, the one holding the ucid first, and
    whether anything changed."""

    profiles: list[dict[str, Any]]
    changed: bool

    @property
    def notices(self) -> list[dict[str, Any]]:
        if self.changed:
            return []
        return [
            Notice(
                NOTHING_UNMERGED,
                "nothing changed: rebuilt without these ids linking, the person is as it was (they "
                "merged nothing, or other ids merge the same profiles)",
                field="ids",
            ).as_dict()
        ]


def _same_person(before: dict[str, Any], after: dict[str, Any]) -> bool:
    # The order of merged-in ucids is the store's, not part of the person.
    def key(view: dict[str, Any]) -> dict[str, Any]:
        return {**view, "ids": {**view["ids"], "linkedUcid": sorted(view["ids"]["linkedUcid"])}}

    return key(before) == key(after)


def _unmerge_ids(
    service: ProfileService, strategy: Any, ids: Any, region: str
) -> list[tuple[str, Any, list[Identifier]]]:
    """``{idType or namespace: [values]}`` as ``(key, value, the stored ids it stands for)``."""
    if not isinstance(ids, dict) or not ids:
        raise BadRequest("must name at least one idType (or namespace) with values", field="ids")
    out: list[tuple[str, Any, list[Identifier]]] = []
    total = 0
    for key, raw in ids.items():
        values = service._values(raw, f"ids.{key}", MAX_UNMERGE_VALUES)
        total += len(values)
        if total > MAX_UNMERGE_VALUES:
            raise BadRequest(f"at most {MAX_UNMERGE_VALUES} values in one unmerge", field="ids")
        out += [(key, v, service._lookup_keys(strategy, key, v, "ids", region)) for v in values]
    return out


def _unmerge_job(service: ProfileService, org_id: int, region: str, ucid: str, ids: Any, actor: str) -> Any:
    def job(conn: Connection) -> Unmerged:
        strategy = service.strategies.get(conn, org_id)
        r = strategy.check_region(region)
        wanted = check_ucid(ucid, "ucid")
        asked = _unmerge_ids(service, strategy, ids, r)
        lock_scope(conn, org_id, f"profiles:{r}")
        storage = profile_storage(conn)
        hit = storage.resolve_ucids(org_id, [wanted]).get(wanted)
        if hit is None or hit[1] != r:
            raise NotFound(f"no profile with ucid {wanted} in region {r} of org {org_id}", field="ucid")
        master = hit[0]
        person = [master, *storage.linked_ucids(org_id, [master]).get(master, [])]
        journal = person_journal(conn, org_id, person)
        now_held = set(storage.load_profiles(org_id, [master])[master].ids)
        journaled = {i for _, rec in journal for i in rec.ids}
        held = now_held | journaled
        absent = [f"{key} {value!r}" for key, value, idents in asked if not held.intersection(idents)]
        if absent:
            first = next(key for key, _, idents in asked if not held.intersection(idents))
            raise BadRequest(
                f"not on profile {master} (nor in its writes): {', '.join(absent)}", field=f"ids.{first}"
            )
        born = {rec.ucid for _, rec in journal if rec.created}
        if lost := [u for u in person if u not in born]:
            raise Conflict(
                f"the journal no longer holds the first writes of {', '.join(lost)} (kept by retention, "
                "or written before the journal existed), so this person cannot be rebuilt; nothing changed",
                field="ucid",
            )
        if unrecorded := sorted({i.id_type for i in now_held - journaled}):
            raise Conflict(
                f"the person holds ids no journaled write gave it ({', '.join(unrecorded)}), so it cannot "
                "be rebuilt from its journal; nothing changed",
                field="ucid",
            )
        non_linking = frozenset(i for _, _, idents in asked for i in idents if i in held)
        # Ids of the person's writes that another person holds now stay theirs, the link of a
        # CRM person deleted since is not made again, and an id suppressed since (an erased
        # person's, which a write here carried while its owner held it) is attached to no one,
        # as a write would drop it (see ``replay``); the rest is replayed.
        owners = storage.find_owners(org_id, r, journaled - now_held)
        suppression = (
            strategy.suppression if strategy.suppression and strategy.suppression.active(r) else None
        )
        taken = frozenset(
            i
            for i in journaled - now_held
            if owners.get(i, master) not in person
            or i.id_type == CRM_PERSON_ID
            or (suppression is not None and suppression.holds(r, i))
        )
        rebuilt = replay(strategy, [rec for _, rec in journal], non_linking, taken=taken)
        masters = rebuilt.masters(org_id)
        first = rebuilt.storage.resolve_ucids(org_id, [wanted])[wanted][0]
        order = [first, *(m for m in masters if m != first)]
        states = rebuilt.storage.load_profiles(org_id, order)
        linked = rebuilt.storage.linked_ucids(org_id, order)
        views = [profile_view(strategy, states[m], linked.get(m, [])) for m in order]
        if order == [master]:
            now = profile_view(
                strategy,
                storage.load_profiles(org_id, [master])[master],
                storage.linked_ucids(org_id, [master]).get(master, []),
            )
            if _same_person(now, views[0]):
                # Rebuilt as it is: no change to record, and no profile.unmerged telling
                # subscribers a person was split that was not.
                return Unmerged([now], changed=False)
        replace_person(
            conn,
            org_id,
            person,
            rebuilt.storage,
            [(seq, rec) for (seq, _), rec in zip(journal, rebuilt.records, strict=True)],
        )
        ts = now_ms()
        id_types = sorted({i.id_type for i in non_linking})
        record(
            conn,
            [
                change_row(
                    org_id,
                    actor,
                    "profile",
                    m,
                    "unmerge",
                    {"region": r, "from": master, "fromUcids": person, "idTypes": id_types, "ucids": masters},
                    ts,
                )
                for m in masters
            ],
        )
        append_events(
            conn,
            [
                EventRow(org_id, PROFILE_UNMERGED, ts, v["ucid"], {"profile": v, "unmergedFrom": master}, r)
                for v in views
            ],
        )
        return Unmerged(views, changed=True)

    return job


def unmerge(service: ProfileService, org_id: int, region: str, ucid: str, ids: Any, actor: str) -> Unmerged:
    """Rebuild the person ``ucid`` belongs to from its journal as if ``ids`` had never linked
    anything (docs/unmerge.md), as one writer job. Answers the resulting profiles, the one now
    holding ``ucid`` first; a rebuild that gives the person as it is writes nothing."""
    result: Unmerged = service.db.write(_unmerge_job(service, org_id, region, ucid, ids, actor))
    return result


async def aunmerge(
    service: ProfileService, org_id: int, region: str, ucid: str, ids: Any, actor: str
) -> Unmerged:
    result: Unmerged = await service.db.awrite(_unmerge_job(service, org_id, region, ucid, ids, actor))
    return result
