"""A write batch's view of the profile store: reads once, remembers, writes everything at the end.

``apply_write`` resolves one write at a time through the calls below, exactly as it would against
the database, but each call is answered from memory when the batch already read or wrote that row.
The whole batch's ids are looked up with a few ``IN`` queries before the first write, and its
changes reach the database at ``flush`` as a handful of ``executemany`` statements, instead of
about ten statements per write. The final rows are the same as the statements one by one would
leave (nothing else writes the same org and region meanwhile: the caller holds the writer and, on
PostgreSQL, the scope lock).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.identity.normalize import Identifier
from profilehub.store.changes import record
from profilehub.store.profile_store import ProfileState, _by_type, _chunks
from profilehub.store.tables import profile_ids, profiles

IdKey = tuple[int, str, Identifier]  # (org, region, id)
IdRow = tuple[str, int] | None  # (owner ucid, ts), or no row


@dataclass
class _Row:
    """A profile row as the batch knows it, with the ids it owns (masters only)."""

    region: str
    created_ts: int
    updated_ts: int
    merged_into: str | None
    data: dict[str, dict[str, Any]]
    existed: bool
    ids: dict[Identifier, int] = field(default_factory=dict)
    ids_loaded: bool = False
    dirty: bool = False


def _copy_data(data: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    # Writes replace attribute values, never mutate them in place, so two levels are enough.
    return {category: dict(attrs) for category, attrs in data.items()}


_b = sa.bindparam
_UPDATE_ID = (
    profile_ids.update()
    .where(
        profile_ids.c.org_id == _b("k_org"),
        profile_ids.c.region == _b("k_region"),
        profile_ids.c.id_type == _b("k_type"),
        profile_ids.c.value == _b("k_value"),
    )
    .values(ucid=_b("v_ucid"), ts=_b("v_ts"))
)
_DELETE_ID = profile_ids.delete().where(
    profile_ids.c.org_id == _b("k_org"),
    profile_ids.c.region == _b("k_region"),
    profile_ids.c.id_type == _b("k_type"),
    profile_ids.c.value == _b("k_value"),
)
_UPDATE_PROFILE = (
    profiles.update()
    .where(profiles.c.org_id == _b("k_org"), profiles.c.ucid == _b("k_ucid"))
    .values(updated_ts=_b("v_updated"), data=_b("v_data"), merged_into=_b("v_merged"))
)
_RELINK = (
    profiles.update()
    .where(profiles.c.org_id == _b("k_org"), profiles.c.ucid == _b("k_ucid"))
    .values(merged_into=_b("v_merged"))
)


class BatchStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._rows: dict[tuple[int, str], _Row | None] = {}
        self._id_initial: dict[IdKey, IdRow] = {}
        self._id_final: dict[IdKey, IdRow] = {}
        self._id_dirty: set[IdKey] = set()
        # master -> [(created_ts, ucid)] merged into it, in linkedUcid order
        self._linked: dict[tuple[int, str], list[tuple[int, str]]] = {}
        # merged-away ucids whose merged_into moved to another master, and to which
        self._relinked: dict[tuple[int, str], str] = {}
        self._changes: list[dict[str, Any]] = []

    # --- reads (answered from memory once read) ---
    def _read_ids(self, org_id: int, region: str, ids: Iterable[Identifier]) -> None:
        missing = [i for i in set(ids) if (org_id, region, i) not in self._id_final]
        if not missing:
            return
        found: dict[Identifier, tuple[str, int]] = {}
        for id_type, values in _by_type(missing):
            rows = self.conn.execute(
                sa.select(profile_ids.c.value, profile_ids.c.ucid, profile_ids.c.ts).where(
                    profile_ids.c.org_id == org_id,
                    profile_ids.c.region == region,
                    profile_ids.c.id_type == id_type,
                    profile_ids.c.value.in_(values),
                )
            )
            for r in rows:
                found[Identifier(id_type, r.value)] = (r.ucid, r.ts)
        for i in missing:
            key = (org_id, region, i)
            self._id_initial[key] = self._id_final[key] = found.get(i)

    def find_owners(self, org_id: int, region: str, ids: Iterable[Identifier]) -> dict[Identifier, str]:
        ids = list(ids)
        self._read_ids(org_id, region, ids)
        owners: dict[Identifier, str] = {}
        for i in ids:
            row = self._id_final[(org_id, region, i)]
            if row is not None:
                owners[i] = row[0]
        return owners

    def _read_rows(self, org_id: int, ucids: Iterable[str], with_ids: bool) -> None:
        missing = sorted({u for u in ucids if (org_id, u) not in self._rows})
        for part in _chunks(missing):
            for r in self.conn.execute(
                sa.select(profiles).where(profiles.c.org_id == org_id, profiles.c.ucid.in_(part))
            ):
                self._rows[(org_id, r.ucid)] = _Row(
                    r.region, r.created_ts, r.updated_ts, r.merged_into, orjson.loads(r.data), True
                )
            for u in part:
                self._rows.setdefault((org_id, u), None)
        if not with_ids:
            return
        need = sorted(
            {u for u in ucids if (row := self._rows.get((org_id, u))) is not None and not row.ids_loaded}
        )
        for part in _chunks(need):
            for r in self.conn.execute(
                sa.select(
                    profile_ids.c.ucid,
                    profile_ids.c.region,
                    profile_ids.c.id_type,
                    profile_ids.c.value,
                    profile_ids.c.ts,
                ).where(profile_ids.c.org_id == org_id, profile_ids.c.ucid.in_(part))
            ):
                ident = Identifier(r.id_type, r.value)
                key = (org_id, r.region, ident)
                if key not in self._id_final:
                    self._id_initial[key] = self._id_final[key] = (r.ucid, r.ts)
                current = self._id_final[key]
                if current is not None and current[0] == r.ucid:
                    owner = self._rows[(org_id, r.ucid)]
                    assert owner is not None
                    owner.ids[ident] = current[1]
            for u in part:
                row = self._rows[(org_id, u)]
                assert row is not None
                row.ids_loaded = True

    def resolve_ucids(self, org_id: int, ucids: Iterable[str]) -> dict[str, tuple[str, str]]:
        ucids = list(ucids)
        self._read_rows(org_id, ucids, with_ids=False)
        out: dict[str, tuple[str, str]] = {}
        for u in ucids:
            row = self._rows[(org_id, u)]
            if row is not None:
                out[u] = (row.merged_into or u, row.region)
        return out

    def load_profiles(self, org_id: int, ucids: Iterable[str]) -> dict[str, ProfileState]:
        ucids = list(ucids)
        self._read_rows(org_id, ucids, with_ids=True)
        states: dict[str, ProfileState] = {}
        for u in sorted(set(ucids)):
            row = self._rows[(org_id, u)]
            if row is not None:
                states[u] = ProfileState(
                    u, row.region, row.created_ts, row.updated_ts, _copy_data(row.data), dict(row.ids)
                )
        return states

    def _read_linked(self, org_id: int, masters: Iterable[str]) -> None:
        missing = sorted({m for m in masters if (org_id, m) not in self._linked})
        for part in _chunks(missing):
            found: dict[str, list[tuple[int, str]]] = {m: [] for m in part}
            for r in self.conn.execute(
                sa.select(profiles.c.merged_into, profiles.c.ucid, profiles.c.created_ts).where(
                    profiles.c.org_id == org_id, profiles.c.merged_into.in_(part)
                )
            ):
                found[r.merged_into].append((r.created_ts, r.ucid))
            for m, linked in found.items():
                self._linked[(org_id, m)] = sorted(linked)

    def linked_ucids(self, org_id: int, masters: Iterable[str]) -> dict[str, list[str]]:
        masters = list(masters)
        self._read_linked(org_id, masters)
        out: dict[str, list[str]] = {}
        for m in masters:
            linked = self._linked[(org_id, m)]
            if linked:
                out[m] = [u for _, u in linked]
        return out

    def prefetch(self, org_id: int, region: str, ids: Iterable[Identifier], ucids: Iterable[str]) -> None:
        """Read, in a few queries, what a batch's writes will ask for one by one."""
        owners = set(self.find_owners(org_id, region, ids).values())
        targets = {master for master, _ in self.resolve_ucids(org_id, ucids).values()}
        self._read_rows(org_id, owners | targets, with_ids=True)
        self._read_linked(org_id, owners | targets)

    # --- writes (kept in memory until flush) ---
    def insert_profile(self, org_id: int, state: ProfileState) -> None:
        self._rows[(org_id, state.ucid)] = _Row(
            state.region,
            state.created_ts,
            state.updated_ts,
            None,
            _copy_data(state.data),
            existed=False,
            ids_loaded=True,
            dirty=True,
        )
        self._linked[(org_id, state.ucid)] = []

    def _row(self, org_id: int, ucid: str) -> _Row:
        self._read_rows(org_id, [ucid], with_ids=True)
        row = self._rows[(org_id, ucid)]
        assert row is not None, f"profile {ucid} is not in the store"
        return row

    def update_profile(self, org_id: int, state: ProfileState) -> None:
        row = self._row(org_id, state.ucid)
        row.updated_ts = state.updated_ts
        row.data = _copy_data(state.data)
        row.dirty = True

    def _set_id(self, org_id: int, region: str, ident: Identifier, value: IdRow) -> None:
        key = (org_id, region, ident)
        self._read_ids(org_id, region, [ident])  # flush compares with the row as it was
        self._id_final[key] = value
        self._id_dirty.add(key)

    def mark_merged(self, org_id: int, merged: list[str], master: str, now_ms: int) -> None:
        """Point ``merged`` (and whatever had been merged into them) at ``master``; move their ids."""
        self._read_linked(org_id, [master, *merged])
        into = self._row(org_id, master)
        linked = list(self._linked[(org_id, master)])
        for m in merged:
            row = self._row(org_id, m)
            linked.append((row.created_ts, m))
            for created_ts, u in self._linked[(org_id, m)]:
                linked.append((created_ts, u))
                cached = self._rows.get((org_id, u))
                if cached is not None:
                    cached.merged_into = master
                self._relinked[(org_id, u)] = master
            self._linked[(org_id, m)] = []
            row.merged_into, row.data, row.updated_ts, row.dirty = master, {}, now_ms, True
            for ident, ts in row.ids.items():
                self._set_id(org_id, row.region, ident, (master, ts))
                into.ids[ident] = ts
            row.ids = {}
        self._linked[(org_id, master)] = sorted(linked)

    def insert_ids(self, org_id: int, region: str, ucid: str, ids: dict[Identifier, int]) -> None:
        row = self._row(org_id, ucid)
        for ident, ts in ids.items():
            self._set_id(org_id, region, ident, (ucid, ts))
            row.ids[ident] = ts

    def delete_ids(self, org_id: int, region: str, ids: Iterable[Identifier]) -> None:
        for ident in set(ids):
            current = self._id_final.get((org_id, region, ident))
            if current is not None:
                owner = self._rows.get((org_id, current[0]))
                if owner is not None:
                    owner.ids.pop(ident, None)
            self._set_id(org_id, region, ident, None)

    def touch_ids(self, org_id: int, region: str, ids: Iterable[Identifier], ts: int) -> None:
        for ident in set(ids):
            current = self._id_final.get((org_id, region, ident))
            if current is None:
                continue  # as an UPDATE of a missing row: nothing
            self._set_id(org_id, region, ident, (current[0], ts))
            owner = self._rows.get((org_id, current[0]))
            if owner is not None:
                owner.ids[ident] = ts

    def record(self, rows: list[dict[str, Any]]) -> None:
        self._changes += rows

    # --- the end of the batch ---
    def flush(self) -> None:
        """Write the batch's final rows; the batch may go on and flush again."""
        conn = self.conn
        new_profiles: list[dict[str, Any]] = []
        changed_profiles: list[dict[str, Any]] = []
        for (org_id, ucid), row in self._rows.items():
            if row is None or not row.dirty:
                continue
            data = orjson.dumps(row.data).decode()
            if row.existed:
                changed_profiles.append(
                    {
                        "k_org": org_id,
                        "k_ucid": ucid,
                        "v_updated": row.updated_ts,
                        "v_data": data,
                        "v_merged": row.merged_into,
                    }
                )
            else:
                new_profiles.append(
                    {
                        "org_id": org_id,
                        "ucid": ucid,
                        "region": row.region,
                        "created_ts": row.created_ts,
                        "updated_ts": row.updated_ts,
                        "merged_into": row.merged_into,
                        "data": data,
                    }
                )
            row.existed, row.dirty = True, False
        if new_profiles:
            conn.execute(profiles.insert(), new_profiles)
        if changed_profiles:
            conn.execute(_UPDATE_PROFILE, changed_profiles)
        relinks = [
            {"k_org": org_id, "k_ucid": u, "v_merged": master}
            for (org_id, u), master in sorted(self._relinked.items())
        ]
        if relinks:
            conn.execute(_RELINK, relinks)
        self._relinked.clear()
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        deletes: list[dict[str, Any]] = []
        for key in sorted(self._id_dirty, key=lambda k: (k[0], k[1], k[2])):
            org_id, region, ident = key
            before, after = self._id_initial[key], self._id_final[key]
            where = {"k_org": org_id, "k_region": region, "k_type": ident.id_type, "k_value": ident.value}
            if after is None:
                if before is not None:
                    deletes.append(where)
            elif before is None:
                inserts.append(
                    {
                        "org_id": org_id,
                        "region": region,
                        "id_type": ident.id_type,
                        "value": ident.value,
                        "ucid": after[0],
                        "ts": after[1],
                    }
                )
            elif before != after:
                updates.append({**where, "v_ucid": after[0], "v_ts": after[1]})
            self._id_initial[key] = after
        self._id_dirty.clear()
        if deletes:
            conn.execute(_DELETE_ID, deletes)
        if updates:
            conn.execute(_UPDATE_ID, updates)
        if inserts:
            conn.execute(profile_ids.insert(), inserts)
        record(conn, self._changes)
        self._changes = []
