"""Records of custom objects, and the rules every CRM record write shares.

Each write is checked completely (types, relations, required and unique values) before its first
row is written, so a failing write leaves nothing behind and the writer keeps the rest of its batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.crm import record_store as store
from profilehub.crm.objects import (
    COMPANIES,
    LOCK,
    PEOPLE,
    SINGLE_RELATIONS,
    custom_attributes,
    get_object,
)
from profilehub.crm.record_store import Page, StoredRecord, iso
from profilehub.crm.values import Attribute, check_storable, check_value, match_key, render_value
from profilehub.errors import BadRequest, NotFound
from profilehub.store.changes import change_row, now_ms, record
from profilehub.store.database import lock_scope
from profilehub.store.events import EventRow, append_events, forget_events
from profilehub.store.tables import changes

# API documentation generators put this in every string field of an example request. A client
# pasting the vendor's example sends it; where the field is a reference or a checked format it is
# treated as "not given" and reported, instead of failing the whole write.
PLACEHOLDER = "<string>"
SYSTEM_KEYS = frozenset({"id", "created_at", "updated_at", "createdAt", "updatedAt"})


@dataclass
class RecordResult:
    """What one upsert or create did: the record as answered, whether it is new, how many matched."""

    body: dict[str, Any]
    created: bool
    matches: int = 0
    notices: list[dict[str, Any]] = field(default_factory=list)


def placeholder_notice(field_name: str) -> dict[str, Any]:
    return {
        "code": "placeholder_ignored",
        "field": field_name,
        "message": f"{field_name} was the documentation placeholder {PLACEHOLDER!r}; it was not set",
    }


def check_custom_values(
    conn: Connection | None,
    org_id: int,
    attrs: Mapping[str, Attribute],
    raw: Mapping[str, Any],
    prefix: str = "",
) -> dict[str, Any]:
    """Check values of custom attributes (keys already known to be in ``attrs``)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        attr = attrs[key]
        name = f"{prefix}{key}"
        stored = check_value(attr, value, name)
        if attr.type == "relation" and stored:
            if conn is None:
                raise RuntimeError("a relation's values are checked in the database: pass conn")
            check_relation(conn, org_id, attr, stored, name)
        out[key] = stored
    return out


def check_relation(conn: Connection, org_id: int, attr: Attribute, ids: list[str], name: str) -> None:
    if attr.config.get("relationType") in SINGLE_RELATIONS and len(ids) > 1:
        raise BadRequest(f"a {attr.config['relationType']} relation holds one record", field=name)
    target = str(attr.config.get("relatedObjectSlug"))
    found = store.load_records(conn, org_id, target, ids)
    missing = [i for i in ids if i not in found]
    if missing:
        raise BadRequest(f"no {target} record {missing[0]} in this org", field=name)


def unknown_attribute(name: str, attrs: Mapping[str, Attribute], extra: tuple[str, ...] = ()) -> BadRequest:
    known = ", ".join([*extra, *attrs]) or "none defined yet"
    return BadRequest(f"unknown attribute; known: {known}", field=name)


def check_required(attrs: Mapping[str, Attribute], merged: Mapping[str, Any], prefix: str = "") -> None:
    for key, attr in attrs.items():
        if attr.is_required and merged.get(key) is None:
            raise BadRequest("is required", field=f"{prefix}{key}")


def check_unique(
    conn: Connection,
    org_id: int,
    slug: str,
    attrs: Mapping[str, Attribute],
    merged: Mapping[str, Any],
    record_id: str | None,
    prefix: str = "",
) -> None:
    """An isUnique value held by another record is a 400 naming the attribute (as the vendor does)."""
    for key, attr in attrs.items():
        value = merged.get(key)
        if not attr.is_unique or value is None:
            continue
        owner = store.unique_owner(conn, org_id, slug, key, match_key(attr.type, value))
        if owner is not None and owner != record_id:
            raise BadRequest(
                f"{value!r} is already the value of record {owner}; it must be unique", field=f"{prefix}{key}"
            )


def indexed_types(attrs: Mapping[str, Attribute]) -> dict[str, str]:
    return {k: a.type for k, a in attrs.items() if a.matchable}


def changed(previous: StoredRecord | None, merged: Mapping[str, Any]) -> list[str]:
    """The keys of the fields a write changed, for the change log: names, never values.

    The change log outlives the records it describes, so it holds no value a hard delete must
    erase (names, emails, phone numbers, ...), as the CDP side's history holds only attribute names.
    """
    if previous is None:
        return sorted(k for k, v in merged.items() if v is not None)  # each differs from nothing
    before = previous.values
    keys = set(before) | {k for k, v in merged.items() if v is not None}
    return [k for k in sorted(keys) if before.get(k) != merged.get(k)]


def scrub_change_values(conn: Connection, org_id: int, entity: str, entity_id: str) -> None:
    """On a hard delete: rewrite the entity's change rows that still hold values to hold names only.

    Rows written since the change log records names only need nothing; rows written by earlier
    versions held ``changed: {key: value}``, and the deleted record's values must not survive in them.
    """
    rows = conn.execute(
        sa.select(changes.c.change_id, changes.c.detail).where(
            changes.c.org_id == org_id, changes.c.entity == entity, changes.c.entity_id == entity_id
        )
    ).all()
    for change_id, detail in rows:
        data = orjson.loads(detail or "{}")
        if not isinstance(data, dict) or not isinstance(data.get("changed"), dict):
            continue
        data["changed"] = sorted(str(k) for k in data["changed"])
        conn.execute(
            changes.update()
            .where(changes.c.org_id == org_id, changes.c.change_id == change_id)
            .values(detail=orjson.dumps(data).decode())
        )


@dataclass(frozen=True)
class Matching:
    """A resolved ``matchingAttribute``: the stored key to look up and where the value comes from."""

    slug: str
    key: str
    type: str
    field: str


def find_target(
    conn: Connection, org_id: int, object_slug: str, matching: Matching, value: Any
) -> tuple[str | None, int]:
    """The oldest record whose matching attribute equals ``value``, and how many matched."""
    if value is None:
        raise BadRequest(
            f"matchingAttribute is {matching.slug}, so the body must give it a value", field=matching.field
        )
    ids = store.find_matches(conn, org_id, object_slug, matching.key, match_key(matching.type, value))
    return (ids[0] if ids else None), len(ids)


# --- records of custom objects ---


def _custom_object_attrs(conn: Connection, org_id: int, slug: str) -> dict[str, Attribute]:
    if slug in (PEOPLE, COMPANIES):
        raise BadRequest(f"use /v2/crm/{slug} for {slug}", field="objectSlug")
    get_object(conn, org_id, slug)
    return custom_attributes(conn, org_id, slug)


def record_view(slug: str, attrs: Mapping[str, Attribute], rec: StoredRecord) -> dict[str, Any]:
    return {
        "id": rec.record_id,
        "objectSlug": slug,
        "attributes": {k: render_value(a, rec.values.get(k)) for k, a in attrs.items()},
        "createdAt": iso(rec.created_ts),
        "updatedAt": iso(rec.updated_ts),
    }


def _record_values(conn: Connection, org_id: int, attrs: Mapping[str, Attribute], raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise BadRequest("expected an object of attribute key to value", field="body")
    check_storable(raw)
    for name in raw:
        if name in SYSTEM_KEYS:
            raise BadRequest("is set by profilehub and cannot be written", field=name)
        if name not in attrs:
            raise unknown_attribute(name, attrs)
    return check_custom_values(conn, org_id, attrs, raw)


def _matching(slug: str, attrs: Mapping[str, Attribute], matching_attribute: str) -> Matching:
    attr = attrs.get(matching_attribute)
    if attr is None or not attr.matchable:
        usable = ", ".join(k for k, a in attrs.items() if a.matchable) or "none yet"
        raise BadRequest(
            f"{matching_attribute!r} is not a matchable attribute of {slug}; matchable: {usable}",
            field="matchingAttribute",
        )
    return Matching(matching_attribute, attr.key, attr.type, attr.key)


def _save(
    conn: Connection,
    org_id: int,
    slug: str,
    attrs: Mapping[str, Attribute],
    previous: StoredRecord | None,
    given: Mapping[str, Any],
    actor: str,
    detail: Mapping[str, Any],
) -> StoredRecord:
    merged = {**(previous.values if previous else {}), **given}
    check_required(attrs, merged)
    check_unique(conn, org_id, slug, attrs, merged, previous.record_id if previous else None)
    ts = now_ms()
    saved = store.save_record(
        conn,
        org_id,
        slug,
        previous,
        merged,
        indexed=indexed_types(attrs),
        unique=[k for k, a in attrs.items() if a.is_unique],
        search_text=store.search_text(
            v for k, v in merged.items() if k in attrs and attrs[k].type in ("text", "phone_number")
        ),
        ts=ts,
    )
    action = "create" if previous is None else "update"
    entry = {"object": slug, "changed": changed(previous, merged), **detail}
    record(conn, [change_row(org_id, actor, "crm_record", saved.record_id, action, entry, ts)])
    kind = "record.created" if previous is None else "record.updated"
    append_events(
        conn, [EventRow(org_id, kind, ts, saved.record_id, {"record": record_view(slug, attrs, saved)})]
    )
    return saved


def upsert_record_job(
    org_id: int, slug: str, raw: Any, matching_attribute: str | None, actor: str
) -> Callable[[Connection], RecordResult]:
    """A writer job: upsert by ``matching_attribute``, or create when it is None."""

    def job(conn: Connection) -> RecordResult:
        lock_scope(conn, org_id, LOCK)
        attrs = _custom_object_attrs(conn, org_id, slug)
        matching = _matching(slug, attrs, matching_attribute) if matching_attribute is not None else None
        given = _record_values(conn, org_id, attrs, raw)
        target, matches = (None, 0)
        if matching is not None:
            target, matches = find_target(conn, org_id, slug, matching, given.get(matching.key))
        previous = store.load_record(conn, org_id, slug, target) if target else None
        detail = {"matchedBy": matching.slug, "matches": matches} if matching else {}
        saved = _save(conn, org_id, slug, attrs, previous, given, actor, detail)
        return RecordResult(record_view(slug, attrs, saved), previous is None, matches)

    return job


def patch_record_job(
    org_id: int, slug: str, record_id: str, raw: Any, actor: str
) -> Callable[[Connection], RecordResult]:
    def job(conn: Connection) -> RecordResult:
        lock_scope(conn, org_id, LOCK)
        attrs = _custom_object_attrs(conn, org_id, slug)
        previous = store.load_record(conn, org_id, slug, record_id)
        if previous is None:
            raise NotFound(f"no {slug} record {record_id}", field="id")
        given = _record_values(conn, org_id, attrs, raw)
        saved = _save(conn, org_id, slug, attrs, previous, given, actor, {})
        return RecordResult(record_view(slug, attrs, saved), False)

    return job


def delete_record_job(org_id: int, slug: str, record_id: str, actor: str) -> Callable[[Connection], None]:
    def job(conn: Connection) -> None:
        lock_scope(conn, org_id, LOCK)
        _custom_object_attrs(conn, org_id, slug)
        if store.load_record(conn, org_id, slug, record_id) is None:
            raise NotFound(f"no {slug} record {record_id}", field="id")
        store.delete_record(conn, org_id, slug, record_id)
        scrub_change_values(conn, org_id, "crm_record", record_id)
        record(conn, [change_row(org_id, actor, "crm_record", record_id, "delete", {"object": slug})])
        deleted = {"id": record_id, "objectSlug": slug}
        forget_events(conn, org_id, [record_id])
        append_events(conn, [EventRow(org_id, "record.deleted", now_ms(), record_id, deleted)])

    return job


def get_record(conn: Connection, org_id: int, slug: str, record_id: str) -> dict[str, Any]:
    attrs = _custom_object_attrs(conn, org_id, slug)
    rec = store.load_record(conn, org_id, slug, record_id)
    if rec is None:
        raise NotFound(f"no {slug} record {record_id}", field="id")
    return record_view(slug, attrs, rec)


def list_records(
    conn: Connection, org_id: int, slug: str, *, page: int, count: int, search: str | None
) -> tuple[list[dict[str, Any]], Page]:
    attrs = _custom_object_attrs(conn, org_id, slug)
    found = store.list_records(conn, org_id, slug, page=page, count=count, search=search)
    return [record_view(slug, attrs, r) for r in found.records], found
