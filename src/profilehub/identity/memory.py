"""``MemoryStorage``: the profile graph in plain dicts, a reference ``ProfileStorage``.

It gives the identity rules a store without a database: the rules' unit tests run on it, and a
whole component of writes can be replayed through ``apply_write`` in memory and its final rows
written afterwards. It answers every call exactly as the SQL storage does (ids keep their owner
and ``_ts`` the same way, merged-away profiles keep resolving to their master, linked ucids come
oldest first), so a result computed here is the result the database would hold.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from profilehub.identity.normalize import Identifier
from profilehub.identity.storage import Data, ProfileChange, ProfileState, ProfileStorage, WriteRecord


@dataclass
class StoredProfile:
    """A profile row: a master holds data and ids; a merged-away one only points at its master."""

    region: str
    created_ts: int
    updated_ts: int
    data: Data
    merged_into: str | None = None
    ids: dict[Identifier, int] = field(default_factory=dict)  # what it owns (masters only)


def _copy(data: Data) -> dict[str, dict[str, Any]]:
    # Writes replace attribute values, never change them in place, so two levels are enough.
    return {category: dict(attrs) for category, attrs in data.items()}


class MemoryStorage:
    """All orgs' profiles, ids, change log and journal in memory (not thread-safe: one writer at a time)."""

    def __init__(self) -> None:
        self.profiles: dict[tuple[int, str], StoredProfile] = {}
        self.owners: dict[tuple[int, str, Identifier], tuple[str, int]] = {}  # id -> (owner, ts)
        self.changes: list[ProfileChange] = []
        self.writes: list[WriteRecord] = []  # the journal, in write order
        self._linked: dict[tuple[int, str], list[tuple[int, str]]] = {}  # master -> [(created, ucid)]

    # --- reads ---
    def find_owners(self, org_id: int, region: str, ids: Iterable[Identifier]) -> dict[Identifier, str]:
        owners = self.owners
        return {i: row[0] for i in ids if (row := owners.get((org_id, region, i))) is not None}

    def resolve_ucids(self, org_id: int, ucids: Iterable[str]) -> dict[str, tuple[str, str]]:
        out: dict[str, tuple[str, str]] = {}
        for u in ucids:
            row = self.profiles.get((org_id, u))
            if row is not None:
                out[u] = (row.merged_into or u, row.region)
        return out

    def load_profiles(self, org_id: int, ucids: Iterable[str]) -> dict[str, ProfileState]:
        states: dict[str, ProfileState] = {}
        for u in sorted(set(ucids)):
            row = self.profiles.get((org_id, u))
            if row is not None:
                states[u] = ProfileState(
                    u, row.region, row.created_ts, row.updated_ts, _copy(row.data), dict(row.ids)
                )
        return states

    def linked_ucids(self, org_id: int, masters: Iterable[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for m in masters:
            linked = self._linked.get((org_id, m))
            if linked:
                out[m] = [u for _, u in linked]
        return out

    def ids_of_type(self, org_id: int, masters: Iterable[str], id_type: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for m in masters:
            row = self.profiles.get((org_id, m))
            values = sorted(i.value for i in (row.ids if row else {}) if i.id_type == id_type)
            if values:
                out[m] = values
        return out

    def masters(self, org_id: int) -> list[str]:
        """The org's master ucids, oldest first."""
        found = [
            (row.created_ts, u)
            for (o, u), row in self.profiles.items()
            if o == org_id and not row.merged_into
        ]
        return [u for _, u in sorted(found)]

    # --- writes ---
    def insert_profile(self, org_id: int, state: ProfileState) -> None:
        key = (org_id, state.ucid)
        if key in self.profiles:
            raise ValueError(f"profile {state.ucid} exists already")
        self.profiles[key] = StoredProfile(state.region, state.created_ts, state.updated_ts, state.data)

    def _master(self, org_id: int, ucid: str) -> StoredProfile:
        row = self.profiles.get((org_id, ucid))
        if row is None or row.merged_into is not None:
            raise ValueError(f"profile {ucid} is not a master in the store")
        return row

    def update_profile(self, org_id: int, state: ProfileState) -> None:
        row = self._master(org_id, state.ucid)
        row.updated_ts, row.data = state.updated_ts, state.data

    def mark_merged(self, org_id: int, merged: list[str], master: str, now_ms: int) -> None:
        into = self._master(org_id, master)
        linked = self._linked.setdefault((org_id, master), [])
        for m in merged:
            row = self._master(org_id, m)
            linked.append((row.created_ts, m))
            for created_ts, u in self._linked.pop((org_id, m), []):
                linked.append((created_ts, u))
                self.profiles[(org_id, u)].merged_into = master
            row.merged_into, row.data, row.updated_ts = master, {}, now_ms
            for ident, ts in row.ids.items():
                self.owners[(org_id, row.region, ident)] = (master, ts)
                into.ids[ident] = ts
            row.ids = {}
        linked.sort()

    def insert_ids(self, org_id: int, region: str, ucid: str, ids: dict[Identifier, int]) -> None:
        row = self._master(org_id, ucid)
        for ident, ts in ids.items():
            key = (org_id, region, ident)
            previous = self.owners.get(key)
            if previous is not None and previous[0] != ucid:
                raise ValueError(f"{ident} belongs to profile {previous[0]}")
            self.owners[key] = (ucid, ts)
            row.ids[ident] = ts

    def delete_ids(self, org_id: int, region: str, ids: Iterable[Identifier]) -> None:
        for ident in set(ids):
            row = self.owners.pop((org_id, region, ident), None)
            if row is not None:
                self.profiles[(org_id, row[0])].ids.pop(ident, None)

    def touch_ids(self, org_id: int, region: str, ids: Iterable[Identifier], ts: int) -> None:
        for ident in set(ids):
            key = (org_id, region, ident)
            row = self.owners.get(key)
            if row is not None:
                self.owners[key] = (row[0], ts)
                self.profiles[(org_id, row[0])].ids[ident] = ts

    def take(
        self, org_id: int, ucids: Iterable[str]
    ) -> tuple[dict[str, StoredProfile], dict[tuple[str, Identifier], tuple[str, int]]]:
        """Remove profiles ``ucids`` and the ids they own and give back their rows (the ids', by
        region and id: owner and ``_ts``): a replay done with a component of profiles (every one
        its writes made, merged-away ones included) keeps no more of it in memory."""
        profiles: dict[str, StoredProfile] = {}
        owners: dict[tuple[str, Identifier], tuple[str, int]] = {}
        for u in ucids:
            row = self.profiles.pop((org_id, u), None)
            if row is None:
                continue
            profiles[u] = row
            self._linked.pop((org_id, u), None)
            for ident in row.ids:
                owners[(row.region, ident)] = self.owners.pop((org_id, row.region, ident))
        return profiles, owners

    def record_change(self, change: ProfileChange) -> None:
        self.changes.append(change)

    def record_write(self, record: WriteRecord) -> None:
        self.writes.append(record)


if TYPE_CHECKING:  # mypy checks that it is a ProfileStorage; nothing to do at run time
    _conforms: ProfileStorage = MemoryStorage()
