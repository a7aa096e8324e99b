"""People: upsert by any attribute, read, list, update, delete. Knows nothing of HTTP.

One write path: ``upsert_people_batch`` takes any number of person bodies (the single PUT is a
batch of one, the bulk PUT and the importer send more) and runs them in order in one writer
transaction, so a batch ends exactly as the same bodies sent one by one would.

An email belongs to one person per org (``crm_person_emails``); emails are stored lowercased and
matched case-insensitively. The first email of a person is the primary.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.crm import record_store as store
from profilehub.crm.companies import company_summary, load_companies
from profilehub.crm.fields import (
    ParsedBody,
    StandardField,
    matchable_slugs,
    merge_socials,
    read_body,
    socials_view,
)
from profilehub.crm.objects import LOCK, PEOPLE, custom_attributes
from profilehub.crm.record_store import Page, StoredRecord, iso
from profilehub.crm.records import (
    Matching,
    changed,
    check_required,
    check_unique,
    find_target,
    indexed_types,
    scrub_change_values,
)
from profilehub.crm.values import Attribute, render_value
from profilehub.errors import BadRequest, Conflict, NotFound, ProfilehubError, each_or_error
from profilehub.idempotency import forget_answers
from profilehub.identity.normalize import normalise_email
from profilehub.store.changes import change_row, now_ms, record
from profilehub.store.database import Database, lock_scope
from profilehub.store.events import EventRow, append_events, forget_events
from profilehub.store.tables import crm_person_emails

STANDARD = {
    f.name: f
    for f in (
        StandardField("firstName", "first_name"),
        StandardField("lastName", "last_name"),
        StandardField("salutation", "salutation"),
        StandardField("jobTitle", "job_title"),
        StandardField("description", "description", limit=10_000, matchable=False),
        StandardField("phoneNumber", "phone_number", "phone"),
        StandardField("primaryLocation", "primary_location"),
        StandardField("avatarUrl", "avatar_url", limit=1000, matchable=False),
        StandardField("companyId", "company_id", "reference"),
    )
}
INDEXED = {
    "first_name": "text",
    "last_name": "text",
    "salutation": "text",
    "job_title": "text",
    "phone_number": "phone_number",
    "primary_location": "text",
    "company_id": "text",
}
EMAIL_SLUGS = ("email", "emails")
MAX_EMAILS = 50
MAX_BATCH = 1000


@dataclass
class PersonResult:
    """One person written: the answer's ``person``, whether it was created, how many matched."""

    person: dict[str, Any]
    created: bool
    matches: int = 0
    notices: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class PersonInput:
    body: ParsedBody
    emails: list[str] | None  # None: not given


def person_view(
    rec: StoredRecord, attrs: Mapping[str, Attribute], company: StoredRecord | None
) -> dict[str, Any]:
    v = rec.values
    return {
        "id": rec.record_id,
        "firstName": v.get("first_name"),
        "lastName": v.get("last_name"),
        "salutation": v.get("salutation"),
        "emails": list(v.get("emails") or []),
        "jobTitle": v.get("job_title"),
        "description": v.get("description"),
        "phoneNumber": v.get("phone_number"),
        "primaryLocation": v.get("primary_location"),
        "avatarUrl": v.get("avatar_url"),
        "company": company_summary(company),
        "socials": socials_view(v.get("socials")),
        "customAttributes": {k: render_value(a, v.get(k)) for k, a in attrs.items()},
        "createdAt": iso(rec.created_ts),
        "updatedAt": iso(rec.updated_ts),
    }


def _views(
    conn: Connection, org_id: int, recs: Sequence[StoredRecord], attrs: Mapping[str, Attribute]
) -> list[dict[str, Any]]:
    companies = load_companies(
        conn, org_id, [r.values["company_id"] for r in recs if r.values.get("company_id")]
    )
    return [person_view(r, attrs, companies.get(r.values.get("company_id", ""))) for r in recs]


def resolve_matching(matching_attribute: str, attrs: Mapping[str, Attribute]) -> Matching:
    """What ``matchingAttribute`` names: email(s), a standard slug (or its camelCase name), a custom key."""
    if matching_attribute in EMAIL_SLUGS:
        return Matching(matching_attribute, "emails", "email", "emails")
    spec = matchable_slugs(STANDARD).get(matching_attribute)
    if spec is not None:
        return Matching(matching_attribute, spec.key, INDEXED[spec.key], spec.name)
    attr = attrs.get(matching_attribute)
    if attr is not None and attr.matchable:
        return Matching(matching_attribute, attr.key, attr.type, attr.key)
    usable = [*EMAIL_SLUGS, *INDEXED, *(k for k, a in attrs.items() if a.matchable)]
    raise BadRequest(
        f"{matching_attribute!r} is not an attribute people can be matched by; use one of {', '.join(usable)}",
        field="matchingAttribute",
    )


def _emails(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest("expected an array of email addresses", field="emails")
    emails: list[str] = []
    for i, email in enumerate(value):
        if not isinstance(email, str):
            raise BadRequest(f"expected an email address string, got {email!r}", field=f"emails.{i}")
        name = f"emails.{i}"
        emails.append(normalise_email(email, name))
    unique = list(dict.fromkeys(emails))
    if len(unique) > MAX_EMAILS:
        raise BadRequest(f"at most {MAX_EMAILS} emails per person", field="emails")
    return unique


def _company_id(conn: Connection, org_id: int, value: Any) -> str | None:
    if value is None:
        return None
    try:
        company_id = str(uuid.UUID(str(value)))
    except ValueError as exc:
        raise BadRequest(f"{value!r} is not a company id (a UUID)", field="companyId") from exc
    if not load_companies(conn, org_id, [company_id]):
        raise BadRequest(f"no company {company_id} in this org", field="companyId")
    return company_id


def read_person(conn: Connection, org_id: int, raw: Any, attrs: Mapping[str, Attribute]) -> PersonInput:
    """Check a person body completely; nothing is written."""
    body = read_body(conn, org_id, raw, STANDARD, attrs, frozenset({"emails"}))
    if "companyId" in body.special:
        body.values["company_id"] = _company_id(conn, org_id, body.special["companyId"])
    emails = _emails(body.special["emails"]) if "emails" in body.special else None
    return PersonInput(body, emails)


def email_owner(conn: Connection, org_id: int, email: str) -> str | None:
    owner: str | None = conn.execute(
        sa.select(crm_person_emails.c.person_id).where(
            crm_person_emails.c.org_id == org_id, crm_person_emails.c.email_lower == email.lower()
        )
    ).scalar()
    return owner


def _set_emails(conn: Connection, org_id: int, person_id: str, emails: Sequence[str]) -> None:
    conn.execute(
        crm_person_emails.delete().where(
            crm_person_emails.c.org_id == org_id, crm_person_emails.c.person_id == person_id
        )
    )
    if emails:
        conn.execute(
            crm_person_emails.insert(),
            [
                {"org_id": org_id, "email_lower": e.lower(), "person_id": person_id, "position": i}
                for i, e in enumerate(emails)
            ],
        )


def _save_person(
    conn: Connection,
    org_id: int,
    attrs: Mapping[str, Attribute],
    given: PersonInput,
    previous: StoredRecord | None,
    *,
    add_emails: bool,
    actor: str,
    detail: Mapping[str, Any],
    matches: int = 0,
) -> PersonResult:
    record_id = previous.record_id if previous else None
    merged = {**(previous.values if previous else {}), **given.body.values}
    if given.body.socials is not None:
        merged["socials"] = merge_socials(merged.get("socials"), given.body.socials)
    old_emails: list[str] = list(previous.values.get("emails") or []) if previous else []
    if given.emails is None:
        emails = old_emails
    elif add_emails:
        # Matched by email: the body's emails join the person's; none removed, the primary stays.
        emails = list(dict.fromkeys([*old_emails, *given.emails]))
    else:
        emails = given.emails
    if len(emails) > MAX_EMAILS:
        raise BadRequest(f"at most {MAX_EMAILS} emails per person", field="emails")
    merged["emails"] = emails or None
    if not (merged.get("first_name") or merged.get("last_name")):
        message = "firstName: firstName or lastName is required"
        raise BadRequest(message, field="firstName", errors=dict.fromkeys(("firstName", "lastName"), message))
    for email in emails:
        owner = email_owner(conn, org_id, email)
        if owner is not None and owner != record_id:
            raise Conflict(f"{email} already belongs to person {owner}", field="emails")
    check_required(attrs, merged, "customAttributes.")
    check_unique(conn, org_id, PEOPLE, attrs, merged, record_id, "customAttributes.")
    # Everything is checked: from here on, only writes.
    ts = now_ms()
    saved = store.save_record(
        conn,
        org_id,
        PEOPLE,
        previous,
        merged,
        indexed={**INDEXED, **indexed_types(attrs)},
        unique=[k for k, a in attrs.items() if a.is_unique],
        search_text=store.search_text(
            [
                *(merged.get(k) for k in ("first_name", "last_name", "job_title", "primary_location")),
                merged.get("phone_number"),
                *emails,
            ]
        ),
        ts=ts,
    )
    if emails != old_emails or previous is None:
        _set_emails(conn, org_id, saved.record_id, emails)
    action = "create" if previous is None else "update"
    entry = {"changed": changed(previous, merged), **detail}
    record(conn, [change_row(org_id, actor, "crm_person", saved.record_id, action, entry, ts)])
    [view] = _views(conn, org_id, [saved], attrs)
    kind = "person.created" if previous is None else "person.updated"
    append_events(conn, [EventRow(org_id, kind, ts, saved.record_id, {"person": view})])
    return PersonResult(view, previous is None, matches, given.body.notices)


def _upsert_one(
    conn: Connection,
    org_id: int,
    attrs: Mapping[str, Attribute],
    raw: Any,
    matching: Matching | None,
    actor: str,
) -> PersonResult:
    given = read_person(conn, org_id, raw, attrs)
    target: str | None = None
    matches = 0
    by_email = matching is not None and matching.key == "emails"
    if matching is not None and by_email:
        if not given.emails:
            raise BadRequest(
                f"matchingAttribute is {matching.slug}, so the body must give at least one email",
                field="emails",
            )
        target = email_owner(conn, org_id, given.emails[0])
        matches = 1 if target else 0
    elif matching is not None:
        target, matches = find_target(conn, org_id, PEOPLE, matching, given.body.values.get(matching.key))
    previous = store.load_record(conn, org_id, PEOPLE, target) if target else None
    detail = {"matchedBy": matching.slug, "matches": matches} if matching else {}
    return _save_person(
        conn, org_id, attrs, given, previous, add_emails=by_email, actor=actor, detail=detail, matches=matches
    )


def people_upsert_job(
    org_id: int, records: Sequence[Any], matching_attribute: str | None, actor: str
) -> Callable[[Connection], list[PersonResult | ProfilehubError]]:
    """The writer job behind every person write: upsert each body (create when no matching attribute)."""
    if len(records) > MAX_BATCH:
        raise BadRequest(f"at most {MAX_BATCH} people per request", field="body")

    def job(conn: Connection) -> list[PersonResult | ProfilehubError]:
        lock_scope(conn, org_id, LOCK)
        attrs = custom_attributes(conn, org_id, PEOPLE)
        # A matching attribute that does not exist fails the whole call, before anything is written.
        matching = resolve_matching(matching_attribute, attrs) if matching_attribute is not None else None
        # _upsert_one raises only before that record has written anything
        return each_or_error(lambda raw: _upsert_one(conn, org_id, attrs, raw, matching, actor), records)

    return job


def upsert_people_batch(
    db: Database, org_id: int, records: list[dict[str, Any]], matching_attribute: str | None, actor: str
) -> list[PersonResult | ProfilehubError]:
    """Upsert people in order; one result or error per record, in the same order.

    ``matching_attribute`` None creates every record (``POST /people``). Errors of the call itself
    (an unknown matching attribute, too many records) are raised.
    """
    return db.write(people_upsert_job(org_id, records, matching_attribute, actor))


async def aupsert_people_batch(
    db: Database, org_id: int, records: list[dict[str, Any]], matching_attribute: str | None, actor: str
) -> list[PersonResult | ProfilehubError]:
    return await db.awrite(people_upsert_job(org_id, records, matching_attribute, actor))


def patch_person_job(
    org_id: int, person_id: str, raw: Any, actor: str
) -> Callable[[Connection], PersonResult]:
    """Partial update: fields left out are kept; ``emails`` given replaces the list."""

    def job(conn: Connection) -> PersonResult:
        lock_scope(conn, org_id, LOCK)
        attrs = custom_attributes(conn, org_id, PEOPLE)
        previous = store.load_record(conn, org_id, PEOPLE, person_id)
        if previous is None:
            raise NotFound(f"no person {person_id}", field="id")
        given = read_person(conn, org_id, raw, attrs)
        return _save_person(conn, org_id, attrs, given, previous, add_emails=False, actor=actor, detail={})

    return job


def delete_person_job(org_id: int, person_id: str, actor: str) -> Callable[[Connection], None]:
    def job(conn: Connection) -> None:
        lock_scope(conn, org_id, LOCK)
        if store.load_record(conn, org_id, PEOPLE, person_id) is None:
            raise NotFound(f"no person {person_id}", field="id")
        _set_emails(conn, org_id, person_id, [])
        store.delete_record(conn, org_id, PEOPLE, person_id)
        scrub_change_values(conn, org_id, "crm_person", person_id)
        forget_answers(conn, org_id, [person_id])  # saved answers of keyed writes of this person
        record(conn, [change_row(org_id, actor, "crm_person", person_id, "delete")])
        forget_events(conn, org_id, [person_id])
        append_events(conn, [EventRow(org_id, "person.deleted", now_ms(), person_id, {"id": person_id})])

    return job


def person_updated_events(
    conn: Connection, org_id: int, person_ids: Sequence[str], ts: int
) -> list[EventRow]:
    """``person.updated`` of people changed by another write (a deleted company's), as GET answers them."""
    recs = store.load_records(conn, org_id, PEOPLE, list(person_ids))
    views = _views(conn, org_id, list(recs.values()), custom_attributes(conn, org_id, PEOPLE))
    return [EventRow(org_id, "person.updated", ts, v["id"], {"person": v}) for v in views]


def get_person(conn: Connection, org_id: int, person_id: str) -> dict[str, Any]:
    rec = store.load_record(conn, org_id, PEOPLE, person_id)
    if rec is None:
        raise NotFound(f"no person {person_id}", field="id")
    [view] = _views(conn, org_id, [rec], custom_attributes(conn, org_id, PEOPLE))
    return view


def list_people(
    conn: Connection, org_id: int, *, page: int, count: int, search: str | None
) -> tuple[list[dict[str, Any]], Page]:
    """A page of people in creation order; ``search`` looks in names, emails, job title, location, phone."""
    found = store.list_records(conn, org_id, PEOPLE, page=page, count=count, search=search)
    return _views(conn, org_id, found.records, custom_attributes(conn, org_id, PEOPLE)), found
