"""A writer transaction's view of an org's people: reads once, remembers, writes at ``flush``.

The person writes of one writer turn (64 concurrent upserts, a bulk call, an import batch) look
up their emails' owners and their previous records in two queries, decide one by one in memory
exactly as they would against the tables, and reach the database at ``flush`` as a few
``executemany`` statements, as the CDP dialect's ``BatchStore`` does for profiles (about eight
statements per person before: most of a CRM upsert's time went to building and running them).

A caller that must read the tables themselves (a match by an attribute other than email, a
uniqueness check) flushes first: what the batch holds is then in the tables, and what it
remembers stays true, since nothing else writes the org's people meanwhile (the caller holds the
writer and the org's ``crm`` lock).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.crm import record_store as store
from profilehub.crm.objects import PEOPLE
from profilehub.crm.record_store import StoredRecord
from profilehub.crm.values import match_key
from profilehub.store.rows import insert_rows
from profilehub.store.tables import crm_person_emails

_CHUNK = 500


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


class PeopleBatch:
    def __init__(self, conn: Connection, org_id: int) -> None:
        self.conn = conn
        self.org_id = org_id
        self._owner: dict[str, str | None] = {}  # email (lower case) -> person id, None: free
        self._records: dict[str, StoredRecord | None] = {}
        self._seq: int | None = None
        # pending writes, by person id (a later write of the same person replaces the earlier)
        self._new: dict[str, tuple[StoredRecord, str]] = {}
        self._changed: dict[str, tuple[StoredRecord, str]] = {}
        self._index: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
        self._emails: dict[str, list[str]] = {}
        self._changes: list[dict[str, Any]] = []

    # --- reads ---
    def prefetch(self, emails: Iterable[str]) -> None:
        """Look up, in one query, the owners of these emails and those owners' records."""
        missing = sorted({e.lower() for e in emails} - set(self._owner))
        for part in _chunks(missing):
            rows = self.conn.execute(
                sa.select(crm_person_emails.c.email_lower, crm_person_emails.c.person_id).where(
                    crm_person_emails.c.org_id == self.org_id, crm_person_emails.c.email_lower.in_(part)
                )
            )
            for email, person_id in rows:
                self._owner[email] = person_id
            for email in part:
                self._owner.setdefault(email, None)
        self._load([p for p in self._owner.values() if p is not None])

    def _load(self, person_ids: Iterable[str]) -> None:
        missing = [p for p in dict.fromkeys(person_ids) if p not in self._records]
        if missing:
            found = store.load_records(self.conn, self.org_id, PEOPLE, missing)
            for p in missing:
                self._records[p] = found.get(p)

    def email_owner(self, email: str) -> str | None:
        key = email.lower()
        if key not in self._owner:
            self.prefetch([key])
        return self._owner[key]

    def load(self, person_id: str) -> StoredRecord | None:
        self._load([person_id])
        return self._records[person_id]

    # --- writes (kept until flush) ---
    def save(
        self,
        previous: StoredRecord | None,
        values: Mapping[str, Any],
        *,
        indexed: Mapping[str, str],
        unique: Iterable[str],
        search_text: str,
        ts: int,
        record_id: str,
    ) -> StoredRecord:
        """As ``record_store.save_record``, written at ``flush``."""
        clean = {k: v for k, v in values.items() if v is not None}
        if previous is None:
            if self._seq is None:
                self._seq = store.next_seq(self.conn, self.org_id, PEOPLE)
            saved = StoredRecord(record_id, PEOPLE, self._seq, clean, ts, ts)
            self._seq += 1
            self._new[record_id] = (saved, search_text)
        else:
            saved = StoredRecord(previous.record_id, PEOPLE, previous.seq, clean, previous.created_ts, ts)
            if record_id in self._new:
                self._new[record_id] = (saved, search_text)
            else:
                self._changed[record_id] = (saved, search_text)
        self._records[record_id] = saved
        keys = {k: match_key(t, clean[k]) for k, t in indexed.items() if k in clean}
        base = {"org_id": self.org_id, "object_slug": PEOPLE, "record_id": record_id}
        self._index[record_id] = (
            [{**base, "attribute_key": k, "value": v, "seq": saved.seq} for k, v in keys.items()],
            [{**base, "attribute_key": k, "value": keys[k]} for k in unique if k in keys],
        )
        return saved

    def set_emails(self, person_id: str, old: Sequence[str], emails: Sequence[str]) -> None:
        for e in old:
            if self._owner.get(e.lower()) == person_id:
                self._owner[e.lower()] = None
        for e in emails:
            self._owner[e.lower()] = person_id
        self._emails[person_id] = list(emails)

    def record(self, rows: list[dict[str, Any]]) -> None:
        self._changes += rows

    def flush(self) -> None:
        org_id = self.org_id
        records = [
            (
                org_id,
                PEOPLE,
                r.record_id,
                r.seq,
                orjson.dumps(r.values).decode(),
                text,
                r.created_ts,
                r.updated_ts,
            )
            for r, text in self._new.values()
        ]
        self._insert(
            "crm_records",
            ("org_id", "object_slug", "record_id", "seq", "data", "search_text", "created_ts", "updated_ts"),
            records,
        )
        changed = list(self._changed)
        if changed:
            self._update_records([(r, text) for r, text in self._changed.values()])
            self._delete_of("crm_values", "record_id", changed, slug=True)
            self._delete_of("crm_unique_values", "record_id", changed, slug=True)
        columns = ("org_id", "object_slug", "record_id", "attribute_key", "value")
        self._insert(
            "crm_values",
            (*columns, "seq"),
            [tuple(row[c] for c in (*columns, "seq")) for rows, _ in self._index.values() for row in rows],
        )
        self._insert(
            "crm_unique_values",
            columns,
            [tuple(row[c] for c in columns) for _, rows in self._index.values() for row in rows],
        )
        if self._emails:
            self._delete_of("crm_person_emails", "person_id", list(self._emails), slug=False)
            self._insert(
                "crm_person_emails",
                ("org_id", "email_lower", "person_id", "position"),
                [
                    (org_id, e.lower(), p, i)
                    for p, emails in self._emails.items()
                    for i, e in enumerate(emails)
                ],
            )
        change_columns = ("org_id", "change_id", "ts", "actor", "entity", "entity_id", "action", "detail")
        self._insert("changes", change_columns, [tuple(c[k] for k in change_columns) for c in self._changes])
        self._new, self._changed, self._index, self._emails, self._changes = {}, {}, {}, {}, []

    # On the driver's cursor, as the profile rows are (store/profile_storage.py): COPY and array
    # statements on PostgreSQL, executemany on SQLite; built as SQLAlchemy statements these were
    # most of a batch's time.
    @property
    def _postgres(self) -> bool:
        return self.conn.dialect.name == "postgresql"

    def _run(self, sql: str, params: Sequence[Any], many: bool = False) -> None:
        cursor = self.conn.connection.cursor()
        try:
            if many:
                cursor.executemany(sql, params)
            else:
                cursor.execute(sql, params)
        finally:
            cursor.close()

    def _insert(self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
        insert_rows(self.conn, table, columns, rows)

    def _delete_of(self, table: str, column: str, ids: list[str], *, slug: bool) -> None:
        where = "org_id = {m} AND object_slug = {m} AND " if slug else "org_id = {m} AND "
        keys: tuple[Any, ...] = (self.org_id, PEOPLE) if slug else (self.org_id,)
        if self._postgres:
            sql = f"DELETE FROM {table} WHERE {where.format(m='%s')}{column} = ANY(%s)"
            self._run(sql, (*keys, ids))
        else:
            sql = f"DELETE FROM {table} WHERE {where.format(m='?')}{column} = ?"
            self._run(sql, [(*keys, i) for i in ids], many=True)

    def _update_records(self, rows: list[tuple[StoredRecord, str]]) -> None:
        values = [(orjson.dumps(r.values).decode(), text, r.updated_ts, r.record_id) for r, text in rows]
        if self._postgres:
            data, texts, ts, ids = (list(c) for c in zip(*values, strict=True))
            self._run(
                "UPDATE crm_records AS t SET data = v.data, search_text = v.search_text, "
                "updated_ts = v.updated_ts FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::text[]) "
                "AS v(data, search_text, updated_ts, record_id) "
                "WHERE t.org_id = %s AND t.object_slug = %s AND t.record_id = v.record_id",
                (data, texts, ts, ids, self.org_id, PEOPLE),
            )
        else:
            self._run(
                "UPDATE crm_records SET data = ?, search_text = ?, updated_ts = ? "
                "WHERE org_id = ? AND object_slug = ? AND record_id = ?",
                [(*v[:3], self.org_id, PEOPLE, v[3]) for v in values],
                many=True,
            )
