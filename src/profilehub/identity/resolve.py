"""Resolution of one write: find candidate profiles, merge them, attach ids, apply the upsert.

The rules of docs/identity.md, on plain data: everything is read and written through a
``ProfileStorage`` (no SQL here). ``apply_write`` first plans in memory from what it reads, and
only then writes. Every domain error (an unknown ucid, say) is raised in the planning half, so a
refused write has written nothing and the writer can keep the rest of its batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from profilehub.errors import NotFound
from profilehub.identity.consent import CONSENT, consent_entries, keep_denials, merge_consent
from profilehub.identity.normalize import Identifier, Notice
from profilehub.identity.storage import ProfileChange, ProfileState, ProfileStorage, WriteRecord
from profilehub.identity.strategy import IdClass, Strategy
from profilehub.identity.ucid import new_ucid

CATEGORIES = ("profile", "mkt_preferences", "consent")
# The notice of an id not attached because the profile holds its idType's limit of values.
ID_LIMIT = "id_limit"
# The holder of a ``taken`` id (see ``apply_write``).
ANOTHER_PERSON = "(another person)"


@dataclass
class PreparedWrite:
    """A write whose ids are normalised and whose shape is valid; see ``profiles.prepare_write``."""

    org_id: int
    region: str
    ids: list[Identifier]
    upsert: dict[str, dict[str, Any] | None]
    ucid: str | None
    actor: str
    notices: list[Notice] = field(default_factory=list)
    # Ids the write's person lets go of (a CRM PATCH that drops an email): the profile the write
    # lands on (or merges in) gives them up before the write's own ids attach, and the journal
    # keeps them, so a replay lets go of them too.
    released: list[Identifier] = field(default_factory=list)
    # The path the write came by, kept in the consent ledger: api, bulk, import, crm, unmerge.
    source: str = "api"


@dataclass
class WriteOutcome:
    master: ProfileState
    linked: list[str]
    created: bool
    merged: list[str]
    notices: list[Notice]
    # How the write matched: the owner of each of its ids that had one, and the master the
    # write's ucid resolved to (``_explain`` answers these); the candidates kept apart.
    owners: dict[Identifier, str] = field(default_factory=dict)
    named: str | None = None
    refused: set[str] = field(default_factory=set)


def _primary_fits(strategy: Strategy, a: dict[Identifier, int], b: dict[Identifier, int]) -> list[str]:
    """idTypes whose primary limit the union of ``a`` and ``b`` would break (empty: it fits)."""
    counts = Counter(i.id_type for i in set(a) | set(b))
    broken = []
    for id_type, n in counts.items():
        rule = strategy.id_types.get(id_type)
        if rule and rule.id_class is IdClass.PRIMARY and n > rule.max_per_profile:
            broken.append(id_type)
    return sorted(broken)


def _plan_merges(
    strategy: Strategy, ordered: list[ProfileState], notices: list[Notice]
) -> tuple[ProfileState, list[ProfileState], set[str]]:
    """First-created is the master; each other candidate joins it unless a primary limit breaks.

    Plans on copies of the id sets, so a plan that is then overridden has changed no state.
    """
    master = ordered[0]
    planned = dict(master.ids)
    to_merge: list[ProfileState] = []
    refused: set[str] = set()
    for other in ordered[1:]:
        broken = _primary_fits(strategy, planned, other.ids)
        if broken:
            refused.add(other.ucid)
            notices.append(
                Notice(
                    "merge_refused",
                    f"profiles {master.ucid} and {other.ucid} both match this write but were kept "
                    f"apart: merging them would exceed the limit of {', '.join(broken)}",
                    "ids",
                    {"ucids": [master.ucid, other.ucid], "idTypes": broken},
                )
            )
            continue
        to_merge.append(other)
        planned.update(other.ids)
    return master, to_merge, refused


def _merge_data(
    master: dict[str, dict[str, Any]], other: dict[str, dict[str, Any]], denials: frozenset[str]
) -> list[str]:
    """Per category, the more recently written side wins attribute clashes, except that a consent
    denial on either side wins over a grant (``identity.consent``); the consent attributes whose
    denial was kept over a newer grant."""
    kept: list[str] = []
    for category, attrs in other.items():
        mine = master.get(category)
        if not mine:
            master[category] = dict(attrs)
            continue
        newer = int(attrs.get("_ts", "0")) > int(mine.get("_ts", "0"))
        if category == CONSENT:
            master[category], kept = merge_consent(mine, attrs, newer, denials)
        elif newer:
            master[category] = {**mine, **attrs}
        else:
            master[category] = {**attrs, **mine}
    return kept


def _kept_denied_notice(name: str) -> Notice:
    # Without the value: notices are kept in the change log, which holds no attribute values and
    # outlives an erasure of the person (docs/privacy.md); the profile itself shows what was kept.
    return Notice(
        "consent_kept_denied",
        f"consent.{name}: the denial was kept: when profiles merge, a denial on either side wins over a grant",
        f"consent.{name}",
        {"attribute": name},
    )


def _evict_secondary(strategy: Strategy, ids: dict[Identifier, int]) -> list[Identifier]:
    """Drop the oldest values of secondary idTypes over their limit; return what was dropped."""
    by_type: dict[str, list[Identifier]] = {}
    for i in ids:
        by_type.setdefault(i.id_type, []).append(i)
    evicted: list[Identifier] = []
    # In the strategy's order, not the dict's: a profile read from the database and the same
    # profile built up in a batch's memory hold their ids in different orders, and the
    # ``id_evicted`` notices must come out the same either way.
    for id_type, values in sorted(by_type.items(), key=lambda kv: strategy.sort_key(kv[0])):
        rule = strategy.id_types.get(id_type)
        if rule is None or rule.id_class is not IdClass.SECONDARY or len(values) <= rule.max_per_profile:
            continue
        values.sort(key=lambda i: (ids[i], i.value))
        for i in values[: len(values) - rule.max_per_profile]:
            evicted.append(i)
            del ids[i]
    return evicted


def apply_upsert(data: dict[str, dict[str, Any]], upsert: dict[str, dict[str, Any] | None], ts: int) -> None:
    for category, attrs in upsert.items():
        if attrs is None:
            data[category] = {"_ts": str(ts)}
            continue
        current = data.setdefault(category, {})
        for name, value in attrs.items():
            if value is None:
                current.pop(name, None)
            else:
                current[name] = value
        current["_ts"] = str(ts)


def _merge_causes(
    owners: dict[Identifier, str], named: str | None, merged: list[str]
) -> dict[str, list[str]]:
    """The idTypes of the write that matched each merged profile (``ucid``: the write named it)."""
    causes: dict[str, list[str]] = {m: [] for m in merged}
    for ident, owner in owners.items():
        if owner in causes and ident.id_type not in causes[owner]:
            causes[owner].append(ident.id_type)
    if named is not None and named in causes:
        causes[named].append("ucid")
    return {m: sorted(types) for m, types in causes.items()}


def apply_write(
    storage: ProfileStorage,
    strategy: Strategy,
    write: PreparedWrite,
    now: int,
    non_linking: frozenset[Identifier] = frozenset(),
    new_ucid: Callable[[], str] = new_ucid,
    taken: frozenset[Identifier] = frozenset(),
) -> WriteOutcome:
    """Resolve and apply one write at time ``now`` (epoch ms) through ``storage``.

    How an unmerge replays a person's writes: ``non_linking`` ids find no profile, and each is
    attached only where no other profile holds it; ``taken`` ids are held by someone outside the
    storage (another person), so they link nothing and are never attached. ``new_ucid`` names a
    profile the write creates.
    """
    org_id, region = write.org_id, write.region
    notices = list(write.notices)

    # --- plan (reads only) ---
    if non_linking or taken:
        owners = storage.find_owners(
            org_id, region, [i for i in write.ids if i not in non_linking and i not in taken]
        )
        held = storage.find_owners(org_id, region, [i for i in write.ids if i in non_linking])
        held.update((i, ANOTHER_PERSON) for i in write.ids if i in taken)
    else:
        owners, held = storage.find_owners(org_id, region, write.ids), {}
    candidates = set(owners.values())
    named: str | None = None
    if write.ucid is not None:
        target = storage.resolve_ucids(org_id, [write.ucid]).get(write.ucid)
        if target is not None and target[1] == region:
            named = target[0]
            candidates.add(named)
        elif not write.ids:
            raise NotFound(f"no profile with ucid {write.ucid} in region {region}", field="ucid")
        else:
            notices.append(
                Notice(
                    "ucid_not_found",
                    f"ucid: no profile {write.ucid} in region {region}; the write was resolved by its ids",
                    "ucid",
                )
            )
    if not candidates and write.ids and all(i in held for i in write.ids):
        # Every id of the write is non-linking and held: a profile of its own would hold no id,
        # found by no search and left behind by an erasure of the person by any of them. The write
        # stays with the profile holding its first such id, as it did before the unmerge.
        holders = [held[i] for i in write.ids if held[i] != ANOTHER_PERSON]
        if holders:
            candidates.add(holders[0])
    states = storage.load_profiles(org_id, candidates)
    ordered = sorted(states.values(), key=lambda s: s.sort_key)
    created = not ordered
    if created:
        master = ProfileState(new_ucid(), region, now, now, {c: {} for c in CATEGORIES})
        original_ids: dict[Identifier, int] = {}
        to_merge: list[ProfileState] = []
        refused: set[str] = set()
    else:
        master, to_merge, refused = _plan_merges(strategy, ordered, notices)
        if named is not None and named in refused:
            # The profile the client named cannot join the master: the write lands on the named
            # profile, and nothing is merged on the strength of a write that contradicts itself.
            master = states[named]
            to_merge, refused = [], {s.ucid for s in ordered if s.ucid != named}
        original_ids = dict(master.ids)
    merged: list[str] = []
    kept_denied: set[str] = set()
    consent_at_start = dict(master.data.get(CONSENT) or {})
    for other in to_merge:
        merged.append(other.ucid)
        original_ids.update(other.ids)
        master.ids.update(other.ids)
        kept_denied.update(_merge_data(master.data, other.data, strategy.consent_denials))
    # Released ids go from the profile the write lands on before its ids attach (so a new email
    # can take a dropped one's place under a limit); they are then among the ids ``gone``.
    released = [i for i in dict.fromkeys(write.released) if i not in write.ids]
    for ident in released:
        master.ids.pop(ident, None)

    touched: list[Identifier] = []
    for ident in write.ids:
        owner = owners.get(ident)
        field_name = f"ids.{ident.id_type}"
        holder = held.get(ident)
        if holder is not None and holder != master.ucid and holder not in merged:
            notices.append(
                Notice(
                    "id_owned_elsewhere",
                    f"{field_name}: belongs to profile {holder} (not linking); not attached",
                    field_name,
                    {"ucid": holder},
                )
            )
            continue
        if owner is not None and owner in refused:
            notices.append(
                Notice(
                    "id_owned_elsewhere",
                    f"{field_name}: belongs to profile {owner}; not attached",
                    field_name,
                    {"ucid": owner},
                )
            )
            continue
        if ident in master.ids:
            master.ids[ident] = now
            touched.append(ident)
            continue
        rule = strategy.id_types[ident.id_type]
        if rule.id_class is IdClass.PRIMARY:
            have = sum(1 for i in master.ids if i.id_type == ident.id_type)
            if have >= rule.max_per_profile:
                notices.append(
                    Notice(
                        ID_LIMIT,
                        f"{field_name}: profile {master.ucid} already holds {have} value(s) of "
                        f"{ident.id_type} (limit {rule.max_per_profile}); not attached",
                        field_name,
                    )
                )
                continue
        master.ids[ident] = now
    evicted = _evict_secondary(strategy, master.ids)
    for ident in evicted:
        notices.append(
            Notice(
                "id_evicted",
                f"ids.{ident.id_type}: oldest value evicted over the limit",
                f"ids.{ident.id_type}",
            )
        )
    consent_before = dict(master.data.get(CONSENT) or {})
    apply_upsert(master.data, write.upsert, now)
    kept_by_write: list[str] = []
    if merged and write.upsert.get(CONSENT):
        # The write that merges is no word of the person whose denial it would override.
        kept_by_write = keep_denials(
            consent_before, master.data[CONSENT], write.upsert[CONSENT], strategy.consent_denials
        )
        kept_denied.update(kept_by_write)
    final_consent = master.data.get(CONSENT) or {}
    notices += [_kept_denied_notice(name) for name in sorted(kept_denied) if name in final_consent]
    master.updated_ts = now

    # --- write ---
    if created:
        storage.insert_profile(org_id, master)
    else:
        storage.update_profile(org_id, master)
    if merged:
        storage.mark_merged(org_id, merged, master.ucid, now)
    gone = [i for i in original_ids if i not in master.ids]
    storage.delete_ids(org_id, region, gone)
    storage.insert_ids(
        org_id, region, master.ucid, {i: ts for i, ts in master.ids.items() if i not in original_ids}
    )
    storage.touch_ids(org_id, region, [i for i in touched if i in original_ids], now)
    causes = _merge_causes(owners, named, merged)
    storage.record_change(
        ProfileChange(
            org_id,
            write.actor,
            master.ucid,
            "create" if created else ("merge" if merged else "update"),
            {
                "region": region,
                "idTypes": sorted({i.id_type for i in write.ids}),
                "attributes": {c: sorted(a) if a else None for c, a in write.upsert.items()},
                "merged": merged,
                "mergedVia": causes,
                "notices": [n.as_dict() for n in notices],
            },
            now,
        )
    )
    storage.record_write(
        WriteRecord(
            org_id,
            region,
            master.ucid,
            created,
            tuple(write.ids),
            write.upsert,
            write.ucid,
            write.actor,
            now,
            causes,
            tuple(released),
            tuple(
                consent_entries(
                    consent_at_start,
                    consent_before if merged else None,
                    write.upsert.get(CONSENT),
                    CONSENT in write.upsert,
                    kept_by_write,
                    master.data.get(CONSENT) or {},
                    write.source,
                )
            ),
            write.source,
            tuple(i for i in write.ids if i not in master.ids),
        )
    )
    linked = storage.linked_ucids(org_id, [master.ucid]).get(master.ucid, []) if not created else []
    return WriteOutcome(master, linked, created, merged, notices, owners, named, refused)
