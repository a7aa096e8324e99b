"""The SQL ``ProfileStorage``: reads once, remembers, writes everything at the end.

One ``BatchStore`` per transaction. The writer resolves a batch of writes through it, and search,
get and erasure read through it too (the one implementation of profile reads). The SQL that
SQLite and PostgreSQL write differently (id lookups, bulk inserts, updates and deletes) is in
their subclasses, ``store.profile_storage``; ``profile_storage(conn)`` picks one.

``apply_write`` resolves one write at a time through the calls below, exactly as it would against
the database, but each call is answered from memory when the batch already read or wrote that row.
The whole batch's ids are looked up with a few ``IN`` queries before the first write, and its
changes reach the database at ``flush`` as a handful of bulk statements (``executemany`` on
SQLite; ``COPY`` and array statements on PostgreSQL), instead of about ten statements per write.
The final rows are the same as the statements one by one would leave (nothing else writes the
same org and region meanwhile: the caller holds the writer and, on PostgreSQL, the scope lock).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy.engine import Connection

from profilehub.identity.normalize import Identifier
from profilehub.identity.storage import ProfileChange, ProfileState, WriteRecord
from profilehub.store.changes import change_row
from profilehub.store.consent_ledger import LEDGER_COLUMNS, ledger_rows
from profilehub.store.journal_store import (
    CLOCK,
    JOURNAL_COLUMNS,
    UNATTACHED_COLUMNS,
    journal_row,
    unattached_rows,
)
from profilehub.store.rows import insert_rows

IdKey = tuple[int, str, Identifier]  # (org, region, id)
IdRow = tuple[str, int] | None  # (owner ucid, ts), or no row
# Keep IN lists well under SQLite's and psycopg's parameter limits.
CHUNK = 400


def chunks(items: list[Any]) -> Iterator[list[Any]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


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


class BatchStore(ABC):
    def __init__(self, conn: Connection, journal: bool = True, ledger: bool = True) -> None:
        self.conn = conn
        # Off only for the benches' baselines (bench/journal.py, bench/consent.py): every served
        # write is journaled and its consent values kept in the ledger.
        self.journal = journal
        self.ledger = ledger
        self._journal_rows: list[tuple[Any, ...]] = []
        self._unattached_rows: list[tuple[Any, ...]] = []
        self._ledger_rows: list[tuple[Any, ...]] = []
        self._rows: dict[tuple[int, str], _Row | None] = {}
        self._id_initial: dict[IdKey, IdRow] = {}
        self._id_final: dict[IdKey, IdRow] = {}
        self._id_dirty: set[IdKey] = set()
        # master -> [(created_ts, ucid)] merged into it, in linkedUcid order
        self._linked: dict[tuple[int, str], list[tuple[int, str]]] = {}
        # merged-away ucids whose merged_into moved to another master, and to which
        self._relinked: dict[tuple[int, str], str] = {}
        self._changes: list[dict[str, Any]] = []

    # --- what each database does its own way (store.profile_storage) ---
    @abstractmethod
    def _sql(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Rows of driver-level SQL written with ``?`` placeholders, on the DB-API cursor itself:
        the hot path skips statement building and result-row wrapping."""

    @abstractmethod
    def _parts(self, values: list[str]) -> Iterable[list[str]]:
        """``values`` in as many statements as the database needs (``_in`` matches one part)."""

    @abstractmethod
    def _in(self, values: list[str]) -> str:
        """SQL matching a column against one part of values, given as ``_values(part)``."""

    @abstractmethod
    def _values(self, values: list[str]) -> list[Any]: ...

    @abstractmethod
    def _read_ids_into(
        self, org_id: int, region: str, ids: list[Identifier], found: dict[Identifier, tuple[str, int]]
    ) -> None:
        """Put the (owner, ts) of each of ``ids`` that has a row into ``found``."""

    @abstractmethod
    def _change_many(
        self,
        verb: str,
        table: str,
        set_cols: tuple[str, ...],
        key_cols: tuple[str, ...],
        rows: list[tuple[Any, ...]],
    ) -> None:
        """UPDATE (``set_cols`` then ``key_cols`` per row) or DELETE (``key_cols``) many rows by key."""

    def _insert_many(self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        insert_rows(self.conn, table, columns, rows)

    # --- reads (answered from memory once read) ---
    def _read_ids(self, org_id: int, region: str, ids: Iterable[Identifier]) -> None:
        missing = [i for i in set(ids) if (org_id, region, i) not in self._id_final]
        if not missing:
            return
        found: dict[Identifier, tuple[str, int]] = {}
        self._read_ids_into(org_id, region, missing, found)
        for i in missing:
            key = (org_id, region, i)
            self._id_initial[key] = self._id_final[key] = found.get(i)

    def find_owners(self, org_id: int, region: str, ids: Iterable[Identifier]) -> dict[Identifier, str]:
        ids = list(ids)
        final = self._id_final
        if any((org_id, region, i) not in final for i in ids):
            self._read_ids(org_id, region, ids)
        return {i: row[0] for i in ids if (row := final[(org_id, region, i)]) is not None}

    def _loaded(self, org_id: int, ucid: str, with_ids: bool) -> bool:
        key = (org_id, ucid)
        if key not in self._rows:
            return False
        row = self._rows[key]
        return row is None or row.ids_loaded or not with_ids

    def _read_rows(self, org_id: int, ucids: Iterable[str], with_ids: bool) -> None:
        ucids = list(ucids)
        if all(self._loaded(org_id, u, with_ids) for u in ucids):
            return  # the common case once the batch is prefetched
        missing = sorted({u for u in ucids if (org_id, u) not in self._rows})
        for part in self._parts(missing):
            rows = self._sql(
                "SELECT ucid, region, created_ts, updated_ts, merged_into, data FROM profiles "
                f"WHERE org_id = ? AND ucid {self._in(part)}",
                (org_id, *self._values(part)),
            )
            for ucid, region, created_ts, updated_ts, merged_into, data in rows:
                self._rows[(org_id, ucid)] = _Row(
                    region, created_ts, updated_ts, merged_into, orjson.loads(data), True
                )
            for u in part:
                self._rows.setdefault((org_id, u), None)
        if not with_ids:
            return
        need = sorted(
            {u for u in ucids if (row := self._rows.get((org_id, u))) is not None and not row.ids_loaded}
        )
        for part in self._parts(need):
            rows = self._sql(
                "SELECT ucid, region, id_type, value, ts FROM profile_ids "
                f"WHERE org_id = ? AND ucid {self._in(part)}",
                (org_id, *self._values(part)),
            )
            for ucid, region, id_type, value, ts in rows:
                ident = Identifier(id_type, value)
                key = (org_id, region, ident)
                if key not in self._id_final:
                    self._id_initial[key] = self._id_final[key] = (ucid, ts)
                current = self._id_final[key]
                if current is not None and current[0] == ucid:
                    owner = self._rows[(org_id, ucid)]
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
        for part in self._parts(missing):
            found: dict[str, list[tuple[int, str]]] = {m: [] for m in part}
            rows = self._sql(
                "SELECT merged_into, ucid, created_ts FROM profiles "
                f"WHERE org_id = ? AND merged_into {self._in(part)}",
                (org_id, *self._values(part)),
            )
            for merged_into, ucid, created_ts in rows:
                found[merged_into].append((created_ts, ucid))
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

    def ids_of_type(self, org_id: int, masters: Iterable[str], id_type: str) -> dict[str, list[str]]:
        masters = list(masters)
        self._read_rows(org_id, masters, with_ids=True)
        out: dict[str, list[str]] = {}
        for m in masters:
            row = self._rows[(org_id, m)]
            values = sorted(i.value for i in (row.ids if row else {}) if i.id_type == id_type)
            if values:
                out[m] = values
        return out

    def known_free(self, org_id: int, region: str, ids: Iterable[Identifier]) -> None:
        """Ids the caller knows no row holds, so that no lookup asks for them: the links of CRM
        people created in this transaction (their record ids are new, and unique among the
        records; a person's link goes with the person)."""
        for ident in ids:
            key = (org_id, region, ident)
            if key not in self._id_final:
                self._id_initial[key] = self._id_final[key] = None

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
            state.data,  # not copied: see update_profile
            existed=False,
            ids_loaded=True,
            dirty=True,
        )
        self._linked[(org_id, state.ucid)] = []

    def _row(self, org_id: int, ucid: str) -> _Row:
        row = self._rows.get((org_id, ucid))
        if row is None or not row.ids_loaded:
            self._read_rows(org_id, [ucid], with_ids=True)
            row = self._rows[(org_id, ucid)]
        assert row is not None, f"profile {ucid} is not in the store"
        return row

    def update_profile(self, org_id: int, state: ProfileState) -> None:
        row = self._row(org_id, state.ucid)
        row.updated_ts = state.updated_ts
        # The row takes the state's data rather than a copy (a copy was as large again as a
        # batch's profiles: 25 MB for 1,000 of 700 attributes). Safe because a stored state is not
        # changed afterwards (the write's answer only reads it), a later write works on a copy
        # from ``load_profiles``, and a row's data is replaced, never changed in place.
        row.data = state.data
        row.dirty = True

    def _set_id(self, org_id: int, region: str, ident: Identifier, value: IdRow) -> None:
        key = (org_id, region, ident)
        if key not in self._id_final:
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

    def record_change(self, change: ProfileChange) -> None:
        self._changes.append(
            change_row(
                change.org_id, change.actor, "profile", change.ucid, change.action, change.detail, change.ts
            )
        )

    def record_write(self, record: WriteRecord) -> None:
        keep_consent = self.ledger and record.consent
        if self.journal or keep_consent:
            seq = CLOCK.next()  # the journal row and the ledger rows of one write share it
            if self.journal:
                self._journal_rows.append(journal_row(record, seq))
                if record.unattached:
                    self._unattached_rows += unattached_rows(record, seq)
            if keep_consent:
                self._ledger_rows += ledger_rows(record, seq)

    # --- the end of the batch ---
    def flush(self) -> None:
        """Write the batch's final rows; the batch may go on and flush again."""
        new_profiles: list[tuple[Any, ...]] = []
        changed_profiles: list[tuple[Any, ...]] = []
        for (org_id, ucid), row in self._rows.items():
            if row is None or not row.dirty:
                continue
            data = orjson.dumps(row.data).decode()
            if row.existed:
                changed_profiles.append((row.updated_ts, data, row.merged_into, org_id, ucid))
            else:
                new_profiles.append(
                    (org_id, ucid, row.region, row.created_ts, row.updated_ts, row.merged_into, data)
                )
            row.existed, row.dirty = True, False
        self._insert_many(
            "profiles",
            ("org_id", "ucid", "region", "created_ts", "updated_ts", "merged_into", "data"),
            new_profiles,
        )
        self._change_many(
            "UPDATE", "profiles", ("updated_ts", "data", "merged_into"), ("org_id", "ucid"), changed_profiles
        )
        self._change_many(
            "UPDATE",
            "profiles",
            ("merged_into",),
            ("org_id", "ucid"),
            [(master, org_id, u) for (org_id, u), master in sorted(self._relinked.items())],
        )
        self._relinked.clear()
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        # Ids sent again keep their owner and only move their timestamp: an UPDATE that leaves
        # the owner out leaves SQLite's ucid index alone (about a third cheaper per row).
        touches: list[tuple[Any, ...]] = []
        deletes: list[tuple[Any, ...]] = []
        for key in sorted(self._id_dirty):
            org_id, region, ident = key
            before, after = self._id_initial[key], self._id_final[key]
            if after is None:
                if before is not None:
                    deletes.append((org_id, region, ident.id_type, ident.value))
            elif before is None:
                inserts.append((org_id, region, ident.id_type, ident.value, after[0], after[1]))
            elif before[0] == after[0]:
                if before[1] != after[1]:
                    touches.append((after[1], org_id, region, ident.id_type, ident.value))
            else:
                updates.append((after[0], after[1], org_id, region, ident.id_type, ident.value))
            self._id_initial[key] = after
        self._id_dirty.clear()
        id_key = ("org_id", "region", "id_type", "value")
        self._change_many("DELETE", "profile_ids", (), id_key, deletes)
        self._change_many("UPDATE", "profile_ids", ("ucid", "ts"), id_key, updates)
        self._change_many("UPDATE", "profile_ids", ("ts",), id_key, touches)
        self._insert_many("profile_ids", ("org_id", "region", "id_type", "value", "ucid", "ts"), inserts)
        self._insert_many(
            "changes",
            ("org_id", "change_id", "ts", "actor", "entity", "entity_id", "action", "detail"),
            [
                (
                    c["org_id"],
                    c["change_id"],
                    c["ts"],
                    c["actor"],
                    c["entity"],
                    c["entity_id"],
                    c["action"],
                    c["detail"],
                )
                for c in self._changes
            ],
        )
        self._changes = []
        self._insert_many("profile_writes", JOURNAL_COLUMNS, self._journal_rows)
        self._journal_rows = []
        self._insert_many("journal_unattached", UNATTACHED_COLUMNS, self._unattached_rows)
        self._unattached_rows = []
        self._insert_many("consent_ledger", LEDGER_COLUMNS, self._ledger_rows)
        self._ledger_rows = []
