"""Storage of CRM records of every object (people, companies, custom): rows, value index, paging.

Callers check everything first and then call ``save_record`` / ``delete_record``; nothing here
raises a domain error once it has started writing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.crm.values import check_storable, match_key
from profilehub.identity.ucid import new_ucid
from profilehub.store.tables import crm_records, crm_unique_values, crm_values


@dataclass(frozen=True)
class StoredRecord:
    record_id: str
    object_slug: str
    seq: int
    values: dict[str, Any]
    created_ts: int
    updated_ts: int


@dataclass(frozen=True)
class Page:
    records: list[StoredRecord]
    total: int
    page: int
    count: int

    def pagination(self) -> dict[str, Any]:
        total_pages = (self.total + self.count - 1) // self.count
        return {
            "total": self.total,
            "count": self.count,
            "totalPages": total_pages,
            "previousPage": self.page - 1 if self.page > 1 else None,
            "currentPage": self.page,
            "nextPage": self.page + 1 if self.page < total_pages else None,
        }


# Seconds ``iso`` has formatted, as text up to the seconds: the people of a writer's group are
# saved within a second or two (and a returning one was created at another), so most of their
# times need only their milliseconds added. Emptied when full.
_iso_seconds: dict[int, str] = {}
_ISO_SECONDS_KEPT = 1024


def iso(ms: int) -> str:
    """ISO 8601 in UTC with an explicit ``+00:00`` offset, as the vendor answers:
    ``datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")``, each second's
    datetime made once (a person's answer has one or two times; 2.2 -> 0.4 µs each)."""
    seconds, milli = divmod(ms, 1000)
    text = _iso_seconds.get(seconds)
    if text is None:
        if len(_iso_seconds) >= _ISO_SECONDS_KEPT:
            _iso_seconds.clear()
        text = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").removesuffix("+00:00")
        _iso_seconds[seconds] = text
    return f"{text}.{milli:03d}+00:00"


def new_record_id() -> str:
    """A new record's id: a time-ordered UUID (version 7 layout, as ucids are). Random ids put
    each new record's rows in the middle of every index keyed by record id (the records, their
    value index and emails, the people's links in the identity graph), so each write dirtied a
    page of its own in each; in creation order they land on the same few pages (SQLite: a CRM
    upsert's writer time went down about a tenth as the store grew to 15,000 people)."""
    return new_ucid()


def record_of_row(row: Any) -> StoredRecord:
    return StoredRecord(
        row.record_id, row.object_slug, row.seq, orjson.loads(row.data), row.created_ts, row.updated_ts
    )


def is_record_id(value: str) -> bool:
    """Record ids are canonical UUID strings; anything else names no record (and is never queried)."""
    try:
        return str(uuid.UUID(value)) == value
    except (ValueError, TypeError, AttributeError):
        return False


def load_records(conn: Connection, org_id: int, slug: str, ids: Iterable[str]) -> dict[str, StoredRecord]:
    wanted = [i for i in dict.fromkeys(ids) if is_record_id(i)]
    if not wanted:
        return {}
    rows = conn.execute(
        sa.select(crm_records).where(
            crm_records.c.org_id == org_id,
            crm_records.c.object_slug == slug,
            crm_records.c.record_id.in_(wanted),
        )
    )
    return {r.record_id: record_of_row(r) for r in rows}


def load_record(conn: Connection, org_id: int, slug: str, record_id: str) -> StoredRecord | None:
    return load_records(conn, org_id, slug, [record_id]).get(record_id)


def find_matches(conn: Connection, org_id: int, slug: str, key: str, value: str) -> list[str]:
    """Ids of the records whose ``key`` equals ``value`` (a ``match_key``), oldest first."""
    rows = conn.execute(
        sa.select(crm_values.c.record_id)
        .where(
            crm_values.c.org_id == org_id,
            crm_values.c.object_slug == slug,
            crm_values.c.attribute_key == key,
            crm_values.c.value == value,
        )
        .order_by(crm_values.c.seq, crm_values.c.record_id)
    )
    return list(rows.scalars())


def unique_owner(conn: Connection, org_id: int, slug: str, key: str, value: str) -> str | None:
    owner: str | None = conn.execute(
        sa.select(crm_unique_values.c.record_id).where(
            crm_unique_values.c.org_id == org_id,
            crm_unique_values.c.object_slug == slug,
            crm_unique_values.c.attribute_key == key,
            crm_unique_values.c.value == value,
        )
    ).scalar()
    return owner


def next_seq(conn: Connection, org_id: int, slug: str) -> int:
    top = conn.execute(
        sa.select(sa.func.max(crm_records.c.seq)).where(
            crm_records.c.org_id == org_id, crm_records.c.object_slug == slug
        )
    ).scalar()
    return int(top or 0) + 1


def _clear_index(conn: Connection, org_id: int, slug: str, record_id: str) -> None:
    for table in (crm_values, crm_unique_values):
        conn.execute(
            table.delete().where(
                table.c.org_id == org_id, table.c.object_slug == slug, table.c.record_id == record_id
            )
        )


def save_record(
    conn: Connection,
    org_id: int,
    slug: str,
    previous: StoredRecord | None,
    values: Mapping[str, Any],
    *,
    indexed: Mapping[str, str],
    unique: Iterable[str],
    search_text: str,
    ts: int,
    record_id: str | None = None,
) -> StoredRecord:
    """Insert (``previous`` is None) or replace a record and rebuild its value index.

    ``indexed`` maps each matchable attribute key to its type; ``unique`` names the keys whose
    values go to ``crm_unique_values`` as well. ``record_id``: the new record's id, when the caller
    needed it before the write (people are linked to the identity graph by it).
    """
    clean = {k: v for k, v in values.items() if v is not None}
    data = orjson.dumps(clean).decode()
    if previous is None:
        record_id, seq, created = record_id or new_record_id(), next_seq(conn, org_id, slug), ts
        conn.execute(
            crm_records.insert().values(
                org_id=org_id,
                object_slug=slug,
                record_id=record_id,
                seq=seq,
                data=data,
                search_text=search_text,
                created_ts=ts,
                updated_ts=ts,
            )
        )
    else:
        record_id, seq, created = previous.record_id, previous.seq, previous.created_ts
        conn.execute(
            crm_records.update()
            .where(
                crm_records.c.org_id == org_id,
                crm_records.c.object_slug == slug,
                crm_records.c.record_id == record_id,
            )
            .values(data=data, search_text=search_text, updated_ts=ts)
        )
        _clear_index(conn, org_id, slug, record_id)
    keys = {k: match_key(t, clean[k]) for k, t in indexed.items() if k in clean}
    if keys:
        conn.execute(
            crm_values.insert(),
            [
                {
                    "org_id": org_id,
                    "object_slug": slug,
                    "attribute_key": k,
                    "value": v,
                    "record_id": record_id,
                    "seq": seq,
                }
                for k, v in keys.items()
            ],
        )
    unique_rows = [
        {"org_id": org_id, "object_slug": slug, "attribute_key": k, "value": keys[k], "record_id": record_id}
        for k in unique
        if k in keys
    ]
    if unique_rows:
        conn.execute(crm_unique_values.insert(), unique_rows)
    return StoredRecord(record_id, slug, seq, clean, created, ts)


def delete_record(conn: Connection, org_id: int, slug: str, record_id: str) -> bool:
    _clear_index(conn, org_id, slug, record_id)
    gone = conn.execute(
        crm_records.delete().where(
            crm_records.c.org_id == org_id,
            crm_records.c.object_slug == slug,
            crm_records.c.record_id == record_id,
        )
    ).rowcount
    return bool(gone)


def records_after(conn: Connection, org_id: int, slug: str, after_seq: int, limit: int) -> list[StoredRecord]:
    """Up to ``limit`` records of ``slug`` created after ``after_seq``, in creation order."""
    rows = conn.execute(
        sa.select(crm_records)
        .where(
            crm_records.c.org_id == org_id, crm_records.c.object_slug == slug, crm_records.c.seq > after_seq
        )
        .order_by(crm_records.c.seq)
        .limit(limit)
    )
    return [record_of_row(r) for r in rows]


def _like_pattern(term: str) -> str:
    escaped = fold_case(term).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def list_records(
    conn: Connection, org_id: int, slug: str, *, page: int, count: int, search: str | None = None
) -> Page:
    """One page of an object's records in creation order, optionally those containing ``search``."""
    where = [crm_records.c.org_id == org_id, crm_records.c.object_slug == slug]
    if search:
        check_storable(search, "search")
    if search and search.strip():
        where.append(crm_records.c.search_text.like(_like_pattern(search.strip()), escape="\\"))
    total = int(conn.execute(sa.select(sa.func.count()).select_from(crm_records).where(*where)).scalar() or 0)
    rows = conn.execute(
        sa.select(crm_records)
        .where(*where)
        .order_by(crm_records.c.seq)
        .limit(count)
        .offset((page - 1) * count)
    )
    return Page([record_of_row(r) for r in rows], total, page, count)


def list_referencing(
    conn: Connection, org_id: int, slug: str, key: str, target_id: str, *, page: int, count: int
) -> Page:
    """One page of the records of ``slug`` whose ``key`` is ``target_id`` (the people of a company),
    in creation order: read through the value index, as ``drop_reference`` finds them."""
    where = [
        crm_values.c.org_id == org_id,
        crm_values.c.object_slug == slug,
        crm_values.c.attribute_key == key,
        crm_values.c.value == target_id,
    ]
    total = int(conn.execute(sa.select(sa.func.count()).select_from(crm_values).where(*where)).scalar() or 0)
    ids = list(
        conn.execute(
            sa.select(crm_values.c.record_id)
            .where(*where)
            .order_by(crm_values.c.seq, crm_values.c.record_id)
            .limit(count)
            .offset((page - 1) * count)
        ).scalars()
    )
    found = load_records(conn, org_id, slug, ids)
    return Page([found[i] for i in ids if i in found], total, page, count)


def drop_reference(conn: Connection, org_id: int, slug: str, key: str, target_id: str, ts: int) -> list[str]:
    """Unset ``key`` in the records of ``slug`` pointing at ``target_id`` (the people of a deleted company)."""
    ids = find_matches(conn, org_id, slug, key, target_id)
    for rec in load_records(conn, org_id, slug, ids).values():
        kept = {k: v for k, v in rec.values.items() if k != key}
        conn.execute(
            crm_records.update()
            .where(
                crm_records.c.org_id == org_id,
                crm_records.c.object_slug == slug,
                crm_records.c.record_id == rec.record_id,
            )
            .values(data=orjson.dumps(kept).decode(), updated_ts=ts)
        )
    conn.execute(
        crm_values.delete().where(
            crm_values.c.org_id == org_id,
            crm_values.c.object_slug == slug,
            crm_values.c.attribute_key == key,
            crm_values.c.value == target_id,
        )
    )
    return ids


def fold_case(text: str) -> str:
    """The one form of the stored search text and of a search term: Unicode full case folding, so
    a term typed in any case finds the text ("STRASSE" finds "Straße", "ΣΊΣ" finds "Σίσυφος"), which
    ``lower()`` missed (it keeps ß and makes a last sigma final). Migration 0017 folded the text
    stored before."""
    return text.casefold()


def search_text(parts: Iterable[Any]) -> str:
    return fold_case(" ".join(str(p) for p in parts if p not in (None, "")))
