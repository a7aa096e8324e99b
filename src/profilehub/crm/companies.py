"""Companies: upsert by domain, create, read, list, update, delete. Knows nothing of HTTP.

A domain is stored normalised (lowercase, no scheme, no ``www.``, no path) and belongs to one
company per org, so upserting by domain can never match more than one company.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy.engine import Connection

from profilehub.crm import record_store as store
from profilehub.crm.fields import StandardField, merge_socials, read_body, socials_view
from profilehub.crm.objects import COMPANIES, LOCK, PEOPLE, custom_attributes
from profilehub.crm.record_store import Page, StoredRecord, iso
from profilehub.crm.records import (
    RecordResult,
    changed,
    check_required,
    check_unique,
    indexed_types,
    scrub_change_values,
)
from profilehub.crm.values import Attribute, check_storable, render_value
from profilehub.errors import BadRequest, Conflict, NotFound
from profilehub.store.changes import change_row, now_ms, record
from profilehub.store.database import lock_scope
from profilehub.store.events import EventRow, append_events, forget_events

STANDARD = {
    f.name: f
    for f in (
        StandardField("name", "name"),
        StandardField("domain", "domain"),
        StandardField("description", "description", limit=10_000, matchable=False),
        StandardField("phoneNumber", "phone_number", "phone"),
        StandardField("primaryLocation", "primary_location"),
        StandardField("logoUrl", "logo_url", limit=1000),
    )
}
INDEXED = {"name": "text", "domain": "text", "phone_number": "phone_number", "primary_location": "text"}
_HOST_RE = re.compile(r"^(?=.{3,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")


def normalise_domain(raw: Any, field: str = "domain") -> str | None:
    """``https://www.Acme.com/about`` -> ``acme.com``."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise BadRequest(f"expected a domain string, got {raw!r}", field=field)
    host = raw.strip().lower()
    host = re.sub(r"^[a-z][a-z0-9+.-]*://", "", host)
    host = re.split(r"[/?#]", host, maxsplit=1)[0]
    host = host.rsplit("@", 1)[-1].split(":", 1)[0].rstrip(".")
    host = host.removeprefix("www.")
    if not host:
        return None
    if not _HOST_RE.match(host):
        raise BadRequest(f"{raw!r} is not a domain such as acme.com", field=field)
    return host


def company_summary(rec: StoredRecord | None) -> dict[str, Any] | None:
    """The ``company`` embedded in a person."""
    if rec is None:
        return None
    return {"id": rec.record_id, "name": rec.values.get("name"), "domain": rec.values.get("domain")}


def company_view(rec: StoredRecord, attrs: dict[str, Attribute]) -> dict[str, Any]:
    v = rec.values
    return {
        "id": rec.record_id,
        "name": v.get("name"),
        "domain": v.get("domain"),
        "description": v.get("description"),
        "phoneNumber": v.get("phone_number"),
        "primaryLocation": v.get("primary_location"),
        "logoUrl": v.get("logo_url"),
        "socials": socials_view(v.get("socials")),
        "customAttributes": {k: render_value(a, v.get(k)) for k, a in attrs.items()},
        "createdAt": iso(rec.created_ts),
        "updatedAt": iso(rec.updated_ts),
    }


def load_companies(conn: Connection, org_id: int, ids: Iterable[str]) -> dict[str, StoredRecord]:
    return store.load_records(conn, org_id, COMPANIES, ids)


def _matching_domain(matching_attribute: str | None) -> None:
    if matching_attribute is not None and matching_attribute not in ("domain", "domains"):
        raise BadRequest("companies can only be matched by domain", field="matchingAttribute")


def _save_company(
    conn: Connection,
    org_id: int,
    attrs: dict[str, Attribute],
    previous: StoredRecord | None,
    raw: Any,
    actor: str,
    matched_by: str | None,
    matches: int,
) -> RecordResult:
    parsed = read_body(conn, org_id, raw, STANDARD, attrs, frozenset())
    if "domain" in parsed.values:
        parsed.values["domain"] = normalise_domain(parsed.values["domain"])
    merged = {**(previous.values if previous else {}), **parsed.values}
    if parsed.socials is not None:
        merged["socials"] = merge_socials(merged.get("socials"), parsed.socials)
    if not merged.get("name"):
        raise BadRequest("a company needs a name", field="name")
    record_id = previous.record_id if previous else None
    if merged.get("domain"):
        owner = store.unique_owner(conn, org_id, COMPANIES, "domain", merged["domain"])
        if owner is not None and owner != record_id:
            raise Conflict(f"{merged['domain']} is already the domain of company {owner}", field="domain")
    check_required(attrs, merged, "customAttributes.")
    check_unique(conn, org_id, COMPANIES, attrs, merged, record_id, "customAttributes.")
    ts = now_ms()
    saved = store.save_record(
        conn,
        org_id,
        COMPANIES,
        previous,
        merged,
        indexed={**INDEXED, **indexed_types(attrs)},
        unique=["domain", *(k for k, a in attrs.items() if a.is_unique)],
        search_text=store.search_text(merged.get(k) for k in ("name", "domain", "primary_location")),
        ts=ts,
    )
    detail: dict[str, Any] = {"changed": changed(previous, merged)}
    if matched_by:
        detail.update(matchedBy=matched_by, matches=matches)
    action = "create" if previous is None else "update"
    record(conn, [change_row(org_id, actor, "crm_company", saved.record_id, action, detail, ts)])
    view = company_view(saved, attrs)
    kind = "company.created" if previous is None else "company.updated"
    append_events(conn, [EventRow(org_id, kind, ts, saved.record_id, {"company": view})])
    return RecordResult(view, previous is None, matches, parsed.notices)


def upsert_company_job(
    org_id: int, raw: Any, matching_attribute: str | None, actor: str
) -> Callable[[Connection], RecordResult]:
    """Upsert by domain, or create when ``matching_attribute`` is None."""
    _matching_domain(matching_attribute)

    def job(conn: Connection) -> RecordResult:
        lock_scope(conn, org_id, LOCK)
        attrs = custom_attributes(conn, org_id, COMPANIES)
        previous = None
        matches = 0
        if matching_attribute is not None:
            check_storable(raw)  # before the domain is read, so a bad key or value is named first
            domain = normalise_domain(raw.get("domain")) if isinstance(raw, dict) else None
            if domain is None:
                raise BadRequest(
                    "matchingAttribute is domain, so the body must give a domain", field="domain"
                )
            owner = store.unique_owner(conn, org_id, COMPANIES, "domain", domain)
            previous = store.load_record(conn, org_id, COMPANIES, owner) if owner else None
            matches = 1 if previous else 0
        return _save_company(conn, org_id, attrs, previous, raw, actor, matching_attribute, matches)

    return job


def patch_company_job(
    org_id: int, company_id: str, raw: Any, actor: str
) -> Callable[[Connection], RecordResult]:
    def job(conn: Connection) -> RecordResult:
        lock_scope(conn, org_id, LOCK)
        attrs = custom_attributes(conn, org_id, COMPANIES)
        previous = store.load_record(conn, org_id, COMPANIES, company_id)
        if previous is None:
            raise NotFound(f"no company {company_id}", field="id")
        return _save_company(conn, org_id, attrs, previous, raw, actor, None, 0)

    return job


def delete_company_job(org_id: int, company_id: str, actor: str) -> Callable[[Connection], None]:
    """Delete a company; its people stay and lose their ``companyId``."""

    def job(conn: Connection) -> None:
        lock_scope(conn, org_id, LOCK)
        if store.load_record(conn, org_id, COMPANIES, company_id) is None:
            raise NotFound(f"no company {company_id}", field="id")
        ts = now_ms()
        people = store.drop_reference(conn, org_id, PEOPLE, "company_id", company_id, ts)
        store.delete_record(conn, org_id, COMPANIES, company_id)
        scrub_change_values(conn, org_id, "crm_company", company_id)
        record(
            conn,
            [
                change_row(
                    org_id, actor, "crm_company", company_id, "delete", {"detachedPeople": people}, ts
                ),
                *(
                    change_row(org_id, actor, "crm_person", p, "update", {"changed": ["company_id"]}, ts)
                    for p in people
                ),
            ],
        )
        # people imports this module (a person shows its company): imported here, not at the top.
        from profilehub.crm.people import person_updated_events

        forget_events(conn, org_id, [company_id])
        deleted = EventRow(org_id, "company.deleted", ts, company_id, {"id": company_id})
        append_events(conn, [deleted, *person_updated_events(conn, org_id, people, ts)])

    return job


def get_company(conn: Connection, org_id: int, company_id: str) -> dict[str, Any]:
    rec = store.load_record(conn, org_id, COMPANIES, company_id)
    if rec is None:
        raise NotFound(f"no company {company_id}", field="id")
    return company_view(rec, custom_attributes(conn, org_id, COMPANIES))


def list_companies(
    conn: Connection, org_id: int, *, page: int, count: int, search: str | None
) -> tuple[list[dict[str, Any]], Page]:
    attrs = custom_attributes(conn, org_id, COMPANIES)
    found = store.list_records(conn, org_id, COMPANIES, page=page, count=count, search=search)
    return [company_view(r, attrs) for r in found.records], found
