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

from collections import namedtuple
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from psycopg.rows import namedtuple_row
from sqlalchemy.engine import Connection

from profilehub.crm import record_store as store
from profilehub.crm.objects import PEOPLE
from profilehub.crm.record_store import StoredRecord, record_of_row
from profilehub.crm.values import match_key
from profilehub.store.rows import pg_recordset, pipelined, sqlite_insert_grouped

_CHUNK = 500
# The owners of some emails (``:emails``, a JSON array: one statement text whatever their number,
# which the driver prepares once), their records, and the org's last seq; one row even when no
# email has an owner. On the driver's cursor: as a SQLAlchemy statement with an expanding ``IN``
# it was compiled again for each batch.
_PREFETCH = (
    "SELECT m.top, e.email_lower, e.person_id, r.record_id, r.object_slug, r.seq, r.data, "
    "r.created_ts, r.updated_ts "
    "FROM (SELECT max(seq) AS top FROM crm_records WHERE org_id = :org AND object_slug = :slug) AS m "
    "LEFT JOIN crm_person_emails AS e "
    "ON e.org_id = :org AND e.email_lower IN (SELECT value FROM json_each(:emails)) "
    "LEFT JOIN crm_records AS r "
    "ON r.org_id = :org AND r.object_slug = :slug AND r.record_id = e.person_id"
)
_PrefetchRow = namedtuple(
    "_PrefetchRow", "top email_lower person_id record_id object_slug seq data created_ts updated_ts"
)
# The same on PostgreSQL's driver cursor (sent in a pipeline with the org's locks: crm/people.py).
# Each email and each owner is looked up by its key (a LATERAL subquery with LIMIT 1 is not
# flattened into a join the planner may hash): as joins, below some 5,000 people the planner read
# both tables whole each batch (a hash join costs less than the lookups by its disk-minded
# estimates; 0.47 ms at 2,000 people against 0.1 ms by key at 7,700).
_PG_PREFETCH = (
    "SELECT m.top, e.email_lower, e.person_id, r.record_id, r.object_slug, r.seq, r.data, "
    "r.created_ts, r.updated_ts "
    "FROM (SELECT max(seq) AS top FROM crm_records WHERE org_id = %(org)s AND object_slug = %(slug)s) AS m "
    "LEFT JOIN (unnest(%(emails)b::text[]) AS x(email) CROSS JOIN LATERAL ("
    "SELECT email_lower, person_id FROM crm_person_emails "
    "WHERE org_id = %(org)s AND email_lower = x.email LIMIT 1) AS e) ON true "
    "LEFT JOIN LATERAL (SELECT record_id, object_slug, seq, data, created_ts, updated_ts FROM crm_records "
    "WHERE org_id = %(org)s AND object_slug = %(slug)s AND record_id = e.person_id LIMIT 1) AS r ON true"
)


# SQLite: a returning person's value index rows it no longer has, each by its key.
_SQLITE_DROP_VALUE = (
    "DELETE FROM crm_values WHERE org_id = ? AND object_slug = ? AND attribute_key = ? AND value = ? "
    "AND record_id = ?"
)
_RECORD_COLUMNS = (
    "org_id",
    "object_slug",
    "record_id",
    "seq",
    "data",
    "search_text",
    "created_ts",
    "updated_ts",
)
_VALUE_COLUMNS = ("org_id", "object_slug", "record_id", "attribute_key", "value")
# PostgreSQL: the columns of each table's JSON rows (the org and object go as parameters).
_NEW_RECORD_COLUMNS = ("record_id", "seq", "data", "search_text", "created_ts", "updated_ts")
_UPDATE_COLUMNS = ("record_id", "data", "search_text", "updated_ts")
_INDEX_COLUMNS = ("record_id", "attribute_key", "value", "seq")
_KEY_COLUMNS = ("record_id", "attribute_key", "value")
_EMAIL_ROW_COLUMNS = ("email_lower", "person_id", "position")
_EMAIL_COLUMNS = ("org_id", "email_lower", "person_id", "position")
_CHANGE_COLUMNS = ("org_id", "change_id", "ts", "actor", "entity", "entity_id", "action", "detail")
# PostgreSQL types of the columns written in bulk
_PG_TYPES = {
    "org_id": "bigint",
    "object_slug": "text",
    "record_id": "text",
    "seq": "bigint",
    "data": "text",
    "search_text": "text",
    "created_ts": "bigint",
    "updated_ts": "bigint",
    "attribute_key": "text",
    "value": "text",
    "email_lower": "text",
    "person_id": "text",
    "position": "integer",
    "change_id": "text",
    "ts": "bigint",
    "actor": "text",
    "entity": "text",
    "entity_id": "text",
    "action": "text",
    "detail": "text",
}


def _pg_recordset(columns: tuple[str, ...]) -> str:
    return pg_recordset(columns, _PG_TYPES)


def _json(rows: list[dict[str, Any]]) -> str:
    return orjson.dumps(rows).decode()


def _index_rows(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Value index rows (org, object, record id, attribute key, value[, seq]) as JSON objects."""
    return [
        {"record_id": r[2], "attribute_key": r[3], "value": r[4], "seq": r[5]}
        if len(r) > 5
        else {"record_id": r[2], "attribute_key": r[3], "value": r[4]}
        for r in rows
    ]


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
        self._index: dict[str, tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]] = {}
        # A returning person's (attribute key, value) index pairs in the table, before the batch.
        self._stored: dict[str, set[tuple[str, str]]] = {}
        # People saved while the org has isUnique attributes: only theirs can have unique rows
        # (an attribute is unique from its creation or never, and attributes are not deleted).
        self._unique_of: set[str] = set()
        self._emails: dict[str, list[str]] = {}
        self._changes: list[dict[str, Any]] = []
        # Counts the writes kept: a record refused with it unmoved left nothing in the batch.
        self.writes = 0

    # --- reads ---
    def prefetch(self, emails: Iterable[str]) -> None:
        """Look up, in one query, the owners of these emails, those owners' records, and the org's
        last ``seq`` (for the people the batch creates): one round trip, not three."""
        missing = self.unknown(emails)
        if self._postgres:
            if missing:
                self.take_prefetched(self.send_prefetch(missing), missing)
            return
        cursor = self.conn.connection.cursor()
        try:
            for part in _chunks(missing):
                params = {"org": self.org_id, "slug": PEOPLE, "emails": orjson.dumps(part).decode()}
                self._take([_PrefetchRow(*r) for r in cursor.execute(_PREFETCH, params).fetchall()], part)
        finally:
            cursor.close()
        self._load([p for p in self._owner.values() if p is not None])

    def unknown(self, emails: Iterable[str]) -> list[str]:
        """Those of ``emails`` (lower-cased) whose owner the batch has not read yet."""
        return sorted({e.lower() for e in emails} - set(self._owner))

    def send_prefetch(self, missing: list[str]) -> Any:
        """PostgreSQL: send ``prefetch``'s query of ``missing`` (``unknown``) on a driver cursor
        of its own, inside the caller's ``pipelined`` block if any; ``take_prefetched`` reads it."""
        cursor: Any = self.conn.connection.cursor()
        cursor.row_factory = namedtuple_row
        cursor.execute(_PG_PREFETCH, {"org": self.org_id, "slug": PEOPLE, "emails": missing})
        return cursor

    def take_prefetched(self, cursor: Any, missing: list[str]) -> None:
        try:
            self._take(cursor.fetchall(), missing)
        finally:
            cursor.close()
        self._load([p for p in self._owner.values() if p is not None])

    def _take(self, rows: Iterable[Any], part: list[str]) -> None:
        for row in rows:
            if self._seq is None:
                self._seq = int(row.top or 0) + 1
            if row.email_lower is not None:
                self._owner[row.email_lower] = row.person_id
                if row.person_id not in self._records:
                    self._records[row.person_id] = record_of_row(row) if row.record_id else None
        for email in part:
            self._owner.setdefault(email, None)

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
        self.writes += 1
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
                if record_id not in self._changed:
                    # The person's value index rows as the table holds them (a record's rows are
                    # its indexed values' keys whenever it is written, on every path): ``flush``
                    # deletes those it no longer has and inserts those it did not have, by key.
                    self._stored[record_id] = {
                        (k, match_key(t, previous.values[k]))
                        for k, t in indexed.items()
                        if k in previous.values
                    }
                self._changed[record_id] = (saved, search_text)
        self._records[record_id] = saved
        keys = {k: match_key(t, clean[k]) for k, t in indexed.items() if k in clean}
        org_id, seq = self.org_id, saved.seq
        unique = list(unique)
        if unique:
            self._unique_of.add(record_id)
        self._index[record_id] = (
            [(org_id, PEOPLE, record_id, k, v, seq) for k, v in keys.items()],
            [(org_id, PEOPLE, record_id, k, keys[k]) for k in unique if k in keys],
        )
        return saved

    def set_emails(self, person_id: str, old: Sequence[str], emails: Sequence[str]) -> None:
        self.writes += 1
        for e in old:
            if self._owner.get(e.lower()) == person_id:
                self._owner[e.lower()] = None
        for e in emails:
            self._owner[e.lower()] = person_id
        self._emails[person_id] = list(emails)

    def record(self, rows: list[dict[str, Any]]) -> None:
        self.writes += 1
        self._changes += rows

    def pending_changes(self) -> list[dict[str, Any]]:
        """The change log rows ``flush`` will write, in order: the bulk people import renumbers
        their ``change_id`` (bulk/people.py) to interleave them with its profiles' as online."""
        return self._changes

    def pending_people(self) -> int:
        """How many people's rows ``flush`` would write."""
        return len(self._new) + len(self._changed)

    def forget(self) -> None:
        """Let go of the owners and records read or saved (after ``flush``, which put them in the
        tables, where a later look finds them): a long bulk import's memory stays a group's."""
        self._owner.clear()
        self._records.clear()

    def flush(self) -> None:
        org_id = self.org_id
        changed = list(self._changed)
        # The value index: a new person's rows all go in; a returning person's change by what
        # its values changed (a changed job title: one row out, one in; the rows it keeps are
        # neither probed nor rewritten), each by its key.
        fresh = [row for p in self._new for row in self._index[p][0]]
        stale: list[tuple[str, str, str]] = []  # (record id, attribute key, value)
        added: list[tuple[Any, ...]] = []
        for p in changed:
            rows = self._index[p][0]
            had = self._stored[p]
            now = {(row[3], row[4]) for row in rows}
            stale += [(p, k, v) for k, v in sorted(had - now)]
            added += [row for row in rows if (row[3], row[4]) not in had]
        uniques = [row for _, rows in self._index.values() for row in rows]
        # A person created in this flush has no email rows yet: nothing to delete.
        emails_of = [p for p in self._emails if p not in self._new]
        # Only people saved while the org has isUnique attributes can have unique rows.
        unique_of = [p for p in changed if p in self._unique_of]
        if self._postgres:
            self._flush_postgres(changed, fresh, stale, added, unique_of, uniques, emails_of)
        else:
            self._insert(
                "crm_records",
                _RECORD_COLUMNS,
                [
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
                ],
            )
            if changed:
                self._update_records(
                    [
                        (orjson.dumps(r.values).decode(), text, r.updated_ts, r.record_id)
                        for r, text in self._changed.values()
                    ]
                )
                self._run(_SQLITE_DROP_VALUE, [(org_id, PEOPLE, k, v, p) for p, k, v in stale], many=True)
                if unique_of:
                    self._delete_of("crm_unique_values", "record_id", unique_of, slug=True)
            if emails_of:
                self._delete_of("crm_person_emails", "person_id", emails_of, slug=False)
            # A person's value index rows (a returning person's new ones only: ``PeopleBatch.save``).
            self._insert("crm_values", (*_VALUE_COLUMNS, "seq"), fresh + added, " ON CONFLICT DO NOTHING")
            self._insert("crm_unique_values", _VALUE_COLUMNS, uniques)
            emails = [
                (org_id, e.lower(), p, i) for p, given in self._emails.items() for i, e in enumerate(given)
            ]
            self._insert("crm_person_emails", _EMAIL_COLUMNS, emails)
            self._insert(
                "changes", _CHANGE_COLUMNS, [tuple(c[k] for k in _CHANGE_COLUMNS) for c in self._changes]
            )
        self._new, self._changed, self._index, self._emails, self._changes = {}, {}, {}, {}, []
        self._unique_of, self._stored = set(), {}

    def _flush_postgres(
        self,
        changed: list[str],
        fresh: list[tuple[Any, ...]],
        stale: list[tuple[str, str, str]],
        added: list[tuple[Any, ...]],
        unique_of: list[str],
        uniques: list[tuple[Any, ...]],
        emails_of: list[str],
    ) -> None:
        """One statement (one data-modifying ``WITH`` over the tables; inside the caller's
        ``pipelined`` block, no round trip of its own) whatever the batch holds, unless returning
        people's unique values or emails are rewritten: those are deleted by person and put back,
        and the parts of one ``WITH`` run in no set order, so their deletes go first, in a
        statement of their own sent with it. As COPY and a statement per table, a batch was about
        twenty round trips, each of which waits on the database server's process to be scheduled:
        on a busy machine most of the writer's time.

        Existing rows are found by key through a ``LATERAL … LIMIT 1`` lookup and written by their
        tuple id: each statement has one plan whatever the batch (the driver prepares it once and
        PostgreSQL keeps a generic plan), where a join on the rows' JSON recordset (which the
        planner takes for 100 rows) read the whole table below some 50,000 people, and naming the
        ids as an array (``record_id = ANY(…)``) made PostgreSQL plan the statement again for
        each batch. Nothing else writes these rows meanwhile: the caller holds the org's CRM lock.

        Each table's rows travel as one JSON array of objects (``json_to_recordset``) built as dict
        literals, without the org and object, which are the batch's and go as two parameters:
        ``pg_rows`` (a dict of each row tuple) cost the writer three times as much Python."""
        org_id, slug = self.org_id, PEOPLE
        parts: list[str] = []
        params: list[Any] = []
        if unique_of:
            parts.append(
                "DELETE FROM crm_unique_values WHERE org_id = %s AND object_slug = %s AND record_id = ANY(%b)"
            )
            params += [org_id, slug, unique_of]
        if emails_of:
            parts.append("DELETE FROM crm_person_emails WHERE org_id = %s AND person_id = ANY(%b)")
            params += [org_id, emails_of]
        first = (parts, params)
        parts, params = [], []
        if changed:
            parts.append(
                "UPDATE crm_records AS t SET data = x.data, search_text = x.search_text, "
                f"updated_ts = x.updated_ts FROM (SELECT v.*, r.tid FROM {_pg_recordset(_UPDATE_COLUMNS)} "
                "CROSS JOIN LATERAL (SELECT ctid AS tid FROM crm_records WHERE org_id = %s "
                "AND object_slug = %s AND record_id = v.record_id LIMIT 1) AS r) AS x WHERE t.ctid = x.tid"
            )
            updates = [
                {
                    "record_id": r.record_id,
                    "data": orjson.dumps(r.values).decode(),
                    "search_text": text,
                    "updated_ts": r.updated_ts,
                }
                for r, text in self._changed.values()
            ]
            params += [_json(updates), org_id, slug]
        if stale:
            parts.append(
                f"DELETE FROM crm_values AS t USING (SELECT r.tid FROM {_pg_recordset(_KEY_COLUMNS)} "
                "CROSS JOIN LATERAL (SELECT ctid AS tid FROM crm_values WHERE org_id = %s "
                "AND object_slug = %s AND attribute_key = v.attribute_key AND value = v.value "
                "AND record_id = v.record_id LIMIT 1) AS r) AS x WHERE t.ctid = x.tid"
            )
            keys = [{"record_id": p, "attribute_key": k, "value": v} for p, k, v in stale]
            params += [_json(keys), org_id, slug]
        new_records = [
            {
                "record_id": r.record_id,
                "seq": r.seq,
                "data": orjson.dumps(r.values).decode(),
                "search_text": text,
                "created_ts": r.created_ts,
                "updated_ts": r.updated_ts,
            }
            for r, text in self._new.values()
        ]
        emails = [
            {"email_lower": e.lower(), "person_id": p, "position": i}
            for p, given in self._emails.items()
            for i, e in enumerate(given)
        ]
        # A new person's value rows cannot be there yet: a plain insert skips the speculative
        # insertion's extra work (a probe of the key before and a second write of each row after).
        # A returning person's new ones are not there either when its stored values say so; the
        # ON CONFLICT keeps a row already there from failing the batch.
        # Each table's owner columns (the batch's org, and object where the table has one) go as
        # parameters, the rest as the JSON rows.
        by_org: tuple[tuple[str, str, Any], ...] = (("org_id", "bigint", org_id),)
        by_object = (*by_org, ("object_slug", "text", slug))
        for table, owner, columns, rows, tail in (
            ("crm_records", by_object, _NEW_RECORD_COLUMNS, new_records, ""),
            ("crm_values", by_object, _INDEX_COLUMNS, _index_rows(fresh), ""),
            ("crm_values", by_object, _INDEX_COLUMNS, _index_rows(added), " ON CONFLICT DO NOTHING"),
            ("crm_unique_values", by_object, _KEY_COLUMNS, _index_rows(uniques), ""),
            ("crm_person_emails", by_org, _EMAIL_ROW_COLUMNS, emails, ""),
            # the change rows are dicts of the table's columns already (``change_row``)
            ("changes", (), _CHANGE_COLUMNS, self._changes, ""),
        ):
            if rows:
                names = ", ".join(columns)
                into = "".join(f"{column}, " for column, _, _ in owner)
                given = "".join(f"%s::{kind}, " for _, kind, _ in owner)
                parts.append(
                    f"INSERT INTO {table} ({into}{names}) SELECT {given}{names} FROM {_pg_recordset(columns)}"
                    + tail
                )
                params += [*(value for _, _, value in owner), _json(rows)]
        with pipelined(self.conn):
            self._run_with(*first)
            self._run_with(parts, params)

    def _run_with(self, parts: list[str], params: list[Any]) -> None:
        """``parts`` (data-modifying statements on different tables) as one statement."""
        if not parts:
            return
        if len(parts) == 1:
            self._run(parts[0], params)
            return
        steps = ", ".join(f"s{i} AS ({part})" for i, part in enumerate(parts))
        self._run(f"WITH {steps} SELECT 1", params)

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

    def _insert(
        self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]], tail: str = ""
    ) -> None:
        """SQLite: a group's rows of a table in a few multi-row ``INSERT``s, not one run each."""
        if rows:
            cursor = self.conn.connection.cursor()
            try:
                sqlite_insert_grouped(cursor, table, columns, rows, tail)
            finally:
                cursor.close()

    def _delete_of(self, table: str, column: str, ids: list[str], *, slug: bool) -> None:
        """SQLite: one DELETE a record."""
        where = "org_id = ? AND object_slug = ? AND " if slug else "org_id = ? AND "
        keys: tuple[Any, ...] = (self.org_id, PEOPLE) if slug else (self.org_id,)
        self._run(f"DELETE FROM {table} WHERE {where}{column} = ?", [(*keys, i) for i in ids], many=True)

    def _update_records(self, values: list[tuple[Any, ...]]) -> None:
        """SQLite: one UPDATE a record (in-process, no round trip to save)."""
        self._run(
            "UPDATE crm_records SET data = ?, search_text = ?, updated_ts = ? "
            "WHERE org_id = ? AND object_slug = ? AND record_id = ?",
            [(*v[:3], self.org_id, PEOPLE, v[3]) for v in values],
            many=True,
        )
