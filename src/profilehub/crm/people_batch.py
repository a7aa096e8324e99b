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
from profilehub.store.changes import record
from profilehub.store.tables import crm_person_emails, crm_records, crm_unique_values, crm_values

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
        conn, org_id = self.conn, self.org_id
        if self._new:
            conn.execute(
                crm_records.insert(),
                [
                    {
                        "org_id": org_id,
                        "object_slug": PEOPLE,
                        "record_id": r.record_id,
                        "seq": r.seq,
                        "data": orjson.dumps(r.values).decode(),
                        "search_text": text,
                        "created_ts": r.created_ts,
                        "updated_ts": r.updated_ts,
                    }
                    for r, text in self._new.values()
                ],
            )
        if self._changed:
            conn.execute(
                crm_records.update()
                .where(
                    crm_records.c.org_id == sa.bindparam("k_org"),
                    crm_records.c.object_slug == PEOPLE,
                    crm_records.c.record_id == sa.bindparam("k_id"),
                )
                .values(
                    data=sa.bindparam("data"),
                    search_text=sa.bindparam("search_text"),
                    updated_ts=sa.bindparam("updated_ts"),
                ),
                [
                    {
                        "k_org": org_id,
                        "k_id": r.record_id,
                        "data": orjson.dumps(r.values).decode(),
                        "search_text": text,
                        "updated_ts": r.updated_ts,
                    }
                    for r, text in self._changed.values()
                ],
            )
            changed = [{"k_org": org_id, "k_id": p} for p in self._changed]
            for table in (crm_values, crm_unique_values):
                conn.execute(
                    table.delete().where(
                        table.c.org_id == sa.bindparam("k_org"),
                        table.c.object_slug == PEOPLE,
                        table.c.record_id == sa.bindparam("k_id"),
                    ),
                    changed,
                )
        values = [row for rows, _ in self._index.values() for row in rows]
        if values:
            conn.execute(crm_values.insert(), values)
        uniques = [row for _, rows in self._index.values() for row in rows]
        if uniques:
            conn.execute(crm_unique_values.insert(), uniques)
        if self._emails:
            conn.execute(
                crm_person_emails.delete().where(
                    crm_person_emails.c.org_id == org_id,
                    crm_person_emails.c.person_id == sa.bindparam("k_id"),
                ),
                [{"k_id": p} for p in self._emails],
            )
            rows = [
                {"org_id": org_id, "email_lower": e.lower(), "person_id": p, "position": i}
                for p, emails in self._emails.items()
                for i, e in enumerate(emails)
            ]
            if rows:
                conn.execute(crm_person_emails.insert(), rows)
        record(conn, self._changes)
        self._new, self._changed, self._index, self._emails, self._changes = {}, {}, {}, {}, []
