"""People: upsert by any attribute, read, list, update, delete. Knows nothing of HTTP.

One write path: ``upsert_people_batch`` takes any number of person bodies (the single PUT is a
batch of one, the bulk PUT and the importer send more) and runs them in order in one writer
transaction, so a batch ends exactly as the same bodies sent one by one would.

An email belongs to one person per org (``crm_person_emails``); emails are stored lowercased and
matched case-insensitively. The first email of a person is the primary.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from psycopg.rows import namedtuple_row
from sqlalchemy.engine import Connection

from profilehub.crm import record_store as store
from profilehub.crm.companies import company_summary, load_companies
from profilehub.crm.erasure import erase_people
from profilehub.crm.fields import (
    ParsedBody,
    StandardField,
    matchable_slugs,
    merge_socials,
    read_body,
    socials_view,
)
from profilehub.crm.models import parse_person
from profilehub.crm.objects import LOCK, PEOPLE, attribute_from_row, custom_attributes
from profilehub.crm.people_batch import PeopleBatch
from profilehub.crm.record_store import Page, StoredRecord, is_record_id, iso, new_record_id
from profilehub.crm.records import (
    Matching,
    changed,
    check_required,
    check_unique,
    find_target,
    indexed_types,
)
from profilehub.crm.values import Attribute, render_value
from profilehub.errors import BadRequest, Conflict, NotFound, ProfilehubError, Suppressed
from profilehub.identity.normalize import Identifier, normalise_email, suppressed_notice
from profilehub.identity.resolve import PreparedWrite
from profilehub.identity.strategy import Strategy
from profilehub.identity.suppression import ID_SUPPRESSED
from profilehub.orgs import home_region
from profilehub.profiles import (
    GraphIds,
    PersonIdentity,
    ProfileService,
    people_ids,
    people_links,
    person_graph_ids,
    person_link,
    prepare_person,
)
from profilehub.store.changes import change_row
from profilehub.store.database import Database, GroupJob, lock_scope, lock_scopes, savepoint
from profilehub.store.events import EventRow, append_events
from profilehub.store.profile_storage import profile_storage
from profilehub.store.rows import pipelined
from profilehub.store.tables import crm_person_emails, orgs
from profilehub.suppression import suppressed_contact

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
    ts: int = 0  # when it was written (epoch ms)


@dataclass
class PersonInput:
    body: ParsedBody
    emails: list[str] | None  # None: not given


def person_view(
    rec: StoredRecord, attrs: Mapping[str, Attribute], company: StoredRecord | None, ucid: str | None
) -> dict[str, Any]:
    v = rec.values
    created = iso(rec.created_ts)
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
        "createdAt": created,
        "updatedAt": created if rec.updated_ts == rec.created_ts else iso(rec.updated_ts),
        "ucid": ucid,
    }


def _views(
    conn: Connection,
    org_id: int,
    recs: Sequence[StoredRecord],
    attrs: Mapping[str, Attribute],
    home: str | None = None,
) -> list[dict[str, Any]]:
    """The answers' people; ``home`` None: their ``ucid`` is filled in by the caller."""
    companies = load_companies(
        conn, org_id, [r.values["company_id"] for r in recs if r.values.get("company_id")]
    )
    ucids = people_links(conn, org_id, home, [r.record_id for r in recs]) if home is not None else {}
    return [
        person_view(r, attrs, companies.get(r.values.get("company_id", "")), ucids.get(r.record_id))
        for r in recs
    ]


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


def _company_uuid(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return str(uuid.UUID(str(value)))
    except ValueError as exc:
        raise BadRequest(f"{value!r} is not a company id (a UUID)", field="companyId") from exc


_PERSON_SPECIAL = frozenset({"emails"})


def read_person_body(
    conn: Connection | None,
    org_id: int,
    raw: Any,
    attrs: Mapping[str, Attribute],
    shaped: bool = False,
) -> PersonInput:
    """Check a person body, all but that its company exists (``check_company``); ``conn`` None
    (ahead of the writer) only when no attribute is a relation, the one custom value checked in
    the database. ``shaped``: ``raw`` is ``parse_person``'s answer already, of a JSON text the fast
    route found storable (``crm/fast.py``)."""
    fields = raw if shaped else parse_person(raw)
    body = read_body(conn, org_id, fields, STANDARD, attrs, _PERSON_SPECIAL, storable=shaped)
    if "companyId" in body.special:
        body.values["company_id"] = _company_uuid(body.special["companyId"])
    emails = _emails(body.special["emails"]) if "emails" in body.special else None
    return PersonInput(body, emails)


def check_company(conn: Connection, org_id: int, given: PersonInput) -> None:
    company_id = given.body.values.get("company_id")
    if company_id is not None and not load_companies(conn, org_id, [company_id]):
        raise BadRequest(f"no company {company_id} in this org", field="companyId")


def read_person(conn: Connection, org_id: int, raw: Any, attrs: Mapping[str, Attribute]) -> PersonInput:
    """Check a person body completely; nothing is written."""
    given = read_person_body(conn, org_id, raw, attrs)
    check_company(conn, org_id, given)
    return given


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


@dataclass
class _OrgWrites:
    """What one writer transaction knows of an org's people writes, and the people it saved that
    are still to be resolved in the identity graph (all at once, on one batch)."""

    org_id: int
    attrs: Mapping[str, Attribute]
    home: str
    strategy: Strategy
    rows: PeopleBatch
    now: Callable[[], int]  # the write clock (``ProfileService.now``): the time of each person's save
    saved: list[PersonResult] = field(default_factory=list)
    graph: list[tuple[PreparedWrite, list[Identifier]]] = field(default_factory=list)
    graph_of: list[PersonResult] = field(default_factory=list)
    # Saved people whose emails and phone number did not change: no graph write, only their link
    # read for the answer (``_save_person``).
    unchanged: list[str] = field(default_factory=list)
    # What each person's write asks of ``attrs``, worked out once a transaction.
    indexed: Mapping[str, str] = field(init=False)  # the value index's keys and their types
    unique: list[str] = field(init=False)  # the keys of isUnique attributes
    relations: bool = field(init=False)  # whether an attribute is a relation

    def __post_init__(self) -> None:
        self.indexed = {**INDEXED, **indexed_types(self.attrs)}
        self.unique = [k for k, a in self.attrs.items() if a.is_unique]
        self.relations = any(a.type == "relation" for a in self.attrs.values())


def _org_writes(
    conn: Connection, profiles: ProfileService, org_id: int, emails: Sequence[str] = ()
) -> _OrgWrites:
    """What the org's person writes of one transaction need, and its locks: the CRM's, then the
    home region's profiles (the order a CDP erasure takes them in); ``emails``: the owners the
    batch will ask for, read ahead (``PeopleBatch.prefetch``)."""
    if conn.dialect.name == "postgresql":
        org = _org_writes_pipelined(conn, profiles, org_id, emails)
    else:
        org = _org_writes_sqlite(conn, profiles, org_id, emails)
    if org is not None:
        return org
    row = conn.execute(
        sa.select(orgs.c.strategy_version, orgs.c.home_region).where(orgs.c.org_id == org_id)
    ).first()
    if row is None:
        raise NotFound(f"unknown org {org_id}", field="orgId")
    home = str(row.home_region) if row.home_region else home_region(conn, org_id)
    lock_scopes(conn, org_id, [LOCK, f"profiles:{home}"])
    attrs = custom_attributes(conn, org_id, PEOPLE)
    org = _org_ready(conn, profiles, org_id, row.strategy_version, home, attrs)
    if emails:
        org.rows.prefetch(emails)
    return org


def _org_ready(
    conn: Connection,
    profiles: ProfileService,
    org_id: int,
    version: int,
    home: str,
    attrs: Mapping[str, Attribute],
    rows: PeopleBatch | None = None,
) -> _OrgWrites:
    cached = profiles.strategies.cached(org_id)
    strategy = cached if cached is not None and cached.version == version else None
    strategy = strategy or profiles.strategy(conn, org_id)
    seen = profiles.crm_seen.get(org_id)
    if seen is not None and seen[1] == attrs:
        # The same object as the bodies read ahead saw: each one's check (``_upsert_one``) is then
        # a test of identity, not a comparison of every attribute.
        attrs = seen[1]
    profiles.crm_seen[org_id] = (home, attrs)
    batch = rows if rows is not None else PeopleBatch(conn, org_id)
    return _OrgWrites(org_id, attrs, home, strategy, batch, profiles.now)


# The org row and both locks in one statement (the select list is evaluated left to right: the
# CRM's lock first). No row, so no lock, when the org is unknown or has no home region stored.
_PG_ORG_AND_LOCKS = (
    "SELECT o.strategy_version, o.home_region, "
    "pg_advisory_xact_lock(hashtextextended(%(crm)s, 0)) AS crm_lock, "
    "pg_advisory_xact_lock(hashtextextended(%(profiles)s || o.home_region, 0)) AS profiles_lock "
    "FROM orgs AS o WHERE o.org_id = %(org)s AND o.home_region IS NOT NULL AND o.home_region <> ''"
)
_ATTRIBUTES = (
    "SELECT key, label, type, is_unique, is_required, is_archived, options, config, created_ts, "
    "updated_ts FROM crm_attributes WHERE org_id = {org} AND object_slug = {slug} ORDER BY position"
)
_PG_ATTRIBUTES = _ATTRIBUTES.format(org="%(org)s", slug="%(slug)s")
_SQLITE_ATTRIBUTES = _ATTRIBUTES.format(org=":org", slug=":slug")
_AttributeRow = namedtuple(
    "_AttributeRow",
    "key label type is_unique is_required is_archived options config created_ts updated_ts",
)
_SQLITE_ORG = "SELECT strategy_version, home_region FROM orgs WHERE org_id = :org"


def _org_writes_sqlite(
    conn: Connection, profiles: ProfileService, org_id: int, emails: Sequence[str]
) -> _OrgWrites | None:
    """SQLite: ``_org_writes`` on the driver's cursor (no locks to take: the writer's transaction
    holds the database's). Built and run as SQLAlchemy statements, the org row and its attributes
    cost about as much writer time as a person's own rows in a group of 32. None (nothing learnt):
    an org this cannot answer for, which the caller reads the slow way (an unknown org's error, a
    home region not stored)."""
    keys = {"org": org_id, "slug": PEOPLE}
    cursor: Any = conn.connection.cursor()
    try:
        found = cursor.execute(_SQLITE_ORG, keys).fetchone()
        if found is None or not found[1]:
            return None
        attributes = [_AttributeRow(*r) for r in cursor.execute(_SQLITE_ATTRIBUTES, keys).fetchall()]
    finally:
        cursor.close()
    attrs = {r.key: attribute_from_row(r) for r in attributes}
    org = _org_ready(conn, profiles, org_id, found[0], str(found[1]), attrs)
    if emails:
        org.rows.prefetch(emails)
    return org


def _org_writes_pipelined(
    conn: Connection, profiles: ProfileService, org_id: int, emails: Sequence[str]
) -> _OrgWrites | None:
    """PostgreSQL: ``_org_writes`` in one round trip instead of four: the org row with both locks,
    then the people's custom attributes and the emails' owners, sent together (psycopg's pipeline
    mode). The server runs them in order, each reading after the one before it ended, so the
    reads see what other processes committed before the locks were granted, as they would one by
    one. None (nothing learnt, no lock taken): an org this cannot answer for, which the caller
    reads the slow way (an unknown org's error, a home region not stored)."""
    keys = {"org": org_id, "crm": f"{org_id}:{LOCK}", "profiles": f"{org_id}:profiles:", "slug": PEOPLE}
    rows = PeopleBatch(conn, org_id)
    missing = rows.unknown(emails)
    cursors = []
    with pipelined(conn):
        for sql in (_PG_ORG_AND_LOCKS, _PG_ATTRIBUTES):
            cursor: Any = conn.connection.cursor()
            cursor.row_factory = namedtuple_row
            cursor.execute(sql, keys)
            cursors.append(cursor)
        prefetched = rows.send_prefetch(missing) if missing else None
    try:
        found = cursors[0].fetchone()
        attributes = cursors[1].fetchall()
    finally:
        for cursor in cursors:
            cursor.close()
    if found is None:
        if prefetched is not None:
            prefetched.close()
        return None
    attrs = {r.key: attribute_from_row(r) for r in attributes}
    org = _org_ready(conn, profiles, org_id, found.strategy_version, str(found.home_region), attrs, rows)
    if prefetched is not None:
        rows.take_prefetched(prefetched, missing)
    return org


@dataclass
class PreparedPerson:
    """A person body read ahead of the writer, in the request's thread, as CDP writes are
    (``ProfileService._prepare_ahead``): its checks (the company's existence aside), and its
    emails and phone number normalised and hashed for the graph. The writer's critical section
    then does the database work. Made against the custom attributes (and strategy version and
    home region) the writer last saw; the writer uses it only while it sees the same."""

    given: PersonInput | ProfilehubError
    attrs: Mapping[str, Attribute]
    graph: GraphIds | None


def prepare_people(
    profiles: ProfileService, org_id: int, records: Sequence[Any], shaped: bool = False
) -> list[PreparedPerson] | None:
    """``PreparedPerson`` of each body (None: nothing is known of the org yet, or one of its
    attributes is a relation, checked in the database)."""
    seen = profiles.crm_seen.get(org_id)
    if seen is None:
        return None
    home, attrs = seen
    return prepare_people_as(org_id, home, attrs, profiles.strategies.cached(org_id), records, shaped)


def prepare_people_as(
    org_id: int,
    home: str,
    attrs: Mapping[str, Attribute],
    strategy: Strategy | None,
    records: Sequence[Any],
    shaped: bool = False,
) -> list[PreparedPerson] | None:
    """``prepare_people`` given what it reads of the org (its home region, custom attributes and
    strategy): callable in another process (the bulk people import's workers)."""
    if any(a.type == "relation" for a in attrs.values()):
        return None
    out: list[PreparedPerson] = []
    for raw in records:
        try:
            given = read_person_body(None, org_id, raw, attrs, shaped)
        except ProfilehubError as exc:
            out.append(PreparedPerson(exc, attrs, None))
            continue
        graph = None
        if strategy is not None:
            phone = given.body.values.get("phone_number")
            graph = person_graph_ids(strategy, home, given.emails or [], phone)
        out.append(PreparedPerson(given, attrs, graph))
    return out


def _save_person(
    conn: Connection,
    org: _OrgWrites,
    given: PersonInput,
    previous: StoredRecord | None,
    *,
    add_emails: bool,
    actor: str,
    detail: Mapping[str, Any],
    matches: int = 0,
    known: GraphIds | None = None,
) -> PersonResult:
    org_id, attrs = org.org_id, org.attrs
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
        owner = org.rows.email_owner(email)
        if owner is not None and owner != record_id:
            raise Conflict(f"{email} already belongs to person {owner}", field="emails")
    check_required(attrs, merged, "customAttributes.")
    if org.unique:
        org.rows.flush()  # the check reads the table
        check_unique(conn, org_id, PEOPLE, attrs, merged, record_id, "customAttributes.")
    new_id = record_id or new_record_id()
    # The person's write to the identity graph, prepared (never refused) before anything is written.
    # A person whose emails and phone number are as they were writes nothing to the graph: the
    # graph holds identifiers, and the person's did not change (docs/crm.md, "Other fields leave the
    # graph alone").
    unchanged = (
        previous is not None
        and emails == old_emails
        and merged.get("phone_number") == previous.values.get("phone_number")
    )
    graph = (
        None
        if unchanged
        else prepare_person(
            org.strategy,
            org_id,
            org.home,
            PersonIdentity(
                new_id, emails, merged.get("phone_number"), [e for e in old_emails if e not in emails]
            ),
            actor,
            known,
        )
    )
    # Everything is checked: from here on, only writes.
    ts = org.now()
    saved = org.rows.save(
        previous,
        merged,
        indexed=org.indexed,
        unique=org.unique,
        search_text=store.search_text(
            [
                *(merged.get(k) for k in ("first_name", "last_name", "job_title", "primary_location")),
                merged.get("phone_number"),
                *emails,
            ]
        ),
        ts=ts,
        record_id=new_id,
    )
    if emails != old_emails or previous is None:
        org.rows.set_emails(saved.record_id, old_emails, emails)
    action = "create" if previous is None else "update"
    entry = {"changed": changed(previous, merged), **detail}
    org.rows.record([change_row(org_id, actor, "crm_person", saved.record_id, action, entry, ts)])
    company_id = saved.values.get("company_id")
    company = load_companies(conn, org_id, [company_id]).get(company_id) if company_id else None
    view = person_view(saved, attrs, company, None)  # its ``ucid`` once the graph is written
    result = PersonResult(view, previous is None, matches, list(given.body.notices), ts)
    org.saved.append(result)
    if graph is not None:
        org.graph.append(graph)
        org.graph_of.append(result)
    elif unchanged:
        org.unchanged.append(saved.record_id)
    return result


def _resolve_in_graph(conn: Connection, profiles: ProfileService, org: _OrgWrites) -> None:
    """Write the saved people's rows, resolve them in the identity graph and give their answers
    their ``ucid``."""
    # One profile storage for the graph writes and the answers' links: the links are then read
    # from what the writes left in it, not the database.
    storage = profile_storage(conn, profiles.journal)
    with pipelined(conn):
        # The people's rows and the graph's first read in one round trip (PostgreSQL).
        org.rows.flush()
        if org.graph or org.unchanged:
            # A new person's link is looked up by nobody: about a sixth of the lookups by value
            # of a batch of new people.
            created = [person_link(r.person["id"]) for r in org.graph_of if r.created]
            storage.known_free(org.org_id, org.home, created)
            # The unchanged people's links too, for their answers' ``ucid``, in the same read.
            links = [person_link(p) for p in org.unchanged]
            storage.prefetch(org.org_id, org.home, people_ids(org.graph) + links, [])
    if org.graph:
        written = profiles.write_people(
            conn, org.org_id, org.home, org.graph, storage, strategy=org.strategy, locked=True
        )
        for result, outcome in zip(org.graph_of, written, strict=True):
            result.notices += outcome.notices
    ucids = people_links(conn, org.org_id, org.home, [r.person["id"] for r in org.saved], storage)
    events: list[EventRow] = []
    for result in org.saved:
        result.person["ucid"] = ucids.get(result.person["id"])
        kind = "person.created" if result.created else "person.updated"
        events.append(EventRow(org.org_id, kind, result.ts, result.person["id"], {"person": result.person}))
    append_events(conn, events)
    for result in org.graph_of:
        if result.person["ucid"] is None:
            result.notices.append(
                {
                    "code": "not_linked",
                    "message": "the person's emails and phone number belong to a profile linked to "
                    "another person: not linked to a profile (docs/crm.md)",
                }
            )
    org.saved, org.graph, org.graph_of, org.unchanged = [], [], [], []


def _suppressed(org: _OrgWrites, known: GraphIds | None, id_type: str, value: str, where: str) -> bool:
    """``suppressed_contact`` of the value, from its ids normalised ahead (``known``, made under
    this strategy version, whose suppressed fingerprints come with it) when they are there: the
    verdict of the same ``normalise_ids`` call, without hashing the value again in the writer."""
    hit = known.found.get((id_type, value, where)) if known is not None else None
    if hit is None:
        return suppressed_contact(org.strategy, org.home, id_type, value)
    return not isinstance(hit, BadRequest) and any(n.code == ID_SUPPRESSED for n in hit[1])


def _drop_suppressed(
    org: _OrgWrites, given: PersonInput, known: GraphIds | None = None, *, existing: bool = False
) -> PersonInput:
    """The body without an erased person's emails and phone number (each with the notice
    ``id_suppressed``, never the value): they link people into the identity graph, so they are
    suppressed as a CDP write's ids are. A body whose every email and phone number is suppressed
    writes nothing (409), unless it names an ``existing`` person (a PATCH) and gives no emails:
    that person keeps its own, as a CDP write naming a profile by ucid lands on it without the
    suppressed ids. Suppression of the org's home region applies (docs/privacy.md).
    ``known``: the body's ids normalised ahead (``person_graph_ids``)."""
    if known is not None and (known.version != org.strategy.version or known.region != org.home):
        known = None
    emails = given.emails or []
    phone = given.body.values.get("phone_number")
    gone = {i for i, e in enumerate(emails) if _suppressed(org, known, "email", e, f"emails.{i}")}
    phone_gone = isinstance(phone, str) and _suppressed(org, known, "cellphone", phone, "phoneNumber")
    if not gone and not phone_gone:
        return given
    keeps_own = existing and given.emails is None
    if len(gone) == len(emails) and (phone is None or phone_gone) and not keeps_own:
        # Said of this person only: the others of a _bulk or an import are written.
        raise Suppressed(
            "this person is dropped: every email and phone number of it is suppressed (an erased "
            "person's; POST /cdp/v1/users/_unsuppress lifts it)",
            field="emails" if emails else "phoneNumber",
        )
    notices = [suppressed_notice(f"emails.{i}").as_dict() for i in sorted(gone)]
    values = dict(given.body.values)
    if phone_gone:
        notices.append(suppressed_notice("phoneNumber").as_dict())
        del values["phone_number"]  # the stored number, if any, stays
    # A new body, not an edit: a body read ahead is used again if the writer retries the batch.
    body = dataclasses.replace(given.body, values=values, notices=[*given.body.notices, *notices])
    kept = [e for i, e in enumerate(emails) if i not in gone]
    # None: the person's emails stay as they were (an empty list would replace them with none).
    return PersonInput(body, kept or None)


def _upsert_one(
    conn: Connection,
    org: _OrgWrites,
    raw: Any,
    prepared: PreparedPerson | None,
    matching: Matching | None,
    actor: str,
) -> PersonResult:
    org_id = org.org_id
    if org.relations:
        org.rows.flush()  # a relation may name a person written earlier in the batch
    known: GraphIds | None = None
    if prepared is not None and (prepared.attrs is org.attrs or prepared.attrs == org.attrs):
        if isinstance(prepared.given, ProfilehubError):
            raise prepared.given
        given, known = prepared.given, prepared.graph
        check_company(conn, org_id, given)
    else:
        given = read_person(conn, org_id, raw, org.attrs)
    # Checked in the writer, under the strategy (and fingerprints) of this transaction.
    given = _drop_suppressed(org, given, known)
    target: str | None = None
    matches = 0
    by_email = matching is not None and matching.key == "emails"
    if matching is not None and by_email:
        if not given.emails and any(n["code"] == ID_SUPPRESSED for n in given.body.notices):
            raise Suppressed(
                "this person is dropped: every email of it is suppressed (an erased person's), so "
                "none can match",
                field="emails",
            )
        if not given.emails:
            raise BadRequest(
                f"matchingAttribute is {matching.slug}, so the body must give at least one email",
                field="emails",
            )
        target = org.rows.email_owner(given.emails[0])
        matches = 1 if target else 0
    elif matching is not None:
        org.rows.flush()  # the match reads the value index
        target, matches = find_target(conn, org_id, PEOPLE, matching, given.body.values.get(matching.key))
    previous = org.rows.load(target) if target else None
    detail = {"matchedBy": matching.slug, "matches": matches} if matching else {}
    return _save_person(
        conn,
        org,
        given,
        previous,
        add_emails=by_email,
        actor=actor,
        detail=detail,
        matches=matches,
        known=known,
    )


# (service, org, bodies, matchingAttribute, actor, the bodies prepared ahead or None)
_UpsertPayload = tuple[ProfileService, int, Sequence[Any], str | None, str, Sequence[PreparedPerson] | None]
Results = list[PersonResult | ProfilehubError]


def _body_emails(records: Sequence[Any], prepared: Sequence[PreparedPerson] | None) -> list[str]:
    """The valid emails the bodies name (each body is checked again, and refused, on its turn)."""
    found: list[str] = []
    if prepared is not None:
        for p in prepared:
            if isinstance(p.given, PersonInput):
                found += p.given.emails or []
        return found
    for raw in records:
        emails = raw.get("emails") if isinstance(raw, dict) else None
        for email in emails if isinstance(emails, list) else []:
            try:
                found.append(normalise_email(email, "emails") if isinstance(email, str) else "")
            except BadRequest:
                continue
    return [e for e in found if e]


class FailedCall(list[PersonResult | ProfilehubError]):
    """The results of a call that failed as a whole (an unknown matching attribute): its error
    once per record, and as ``error``."""

    def __init__(self, error: ProfilehubError, records: int) -> None:
        super().__init__([error] * records)
        self.error = error


class _RecordRefused(Exception):
    """A record was refused after it had changed the batch: roll the group's savepoint back and
    run the group again without it (``at``: payload and record index)."""

    def __init__(self, at: tuple[int, int], error: ProfilehubError) -> None:
        super().__init__(error.message)
        self.at = at
        self.error = error


def _upsert_payload(
    conn: Connection,
    org: _OrgWrites,
    index: int,
    records: Sequence[Any],
    matching_attribute: str | None,
    actor: str,
    prepared: Sequence[PreparedPerson] | None,
    refused: Mapping[tuple[int, int], ProfilehubError],
) -> Results:
    # An unknown matching attribute fails the whole call, before it writes anything.
    try:
        matching = resolve_matching(matching_attribute, org.attrs) if matching_attribute is not None else None
    except ProfilehubError as exc:
        return FailedCall(exc, len(records))
    out: Results = []
    for i, raw in enumerate(records):
        if (index, i) in refused:
            out.append(refused[(index, i)])
            continue
        writes = org.rows.writes
        try:
            out.append(_upsert_one(conn, org, raw, prepared[i] if prepared else None, matching, actor))
        except ProfilehubError as exc:
            if org.rows.writes != writes:
                raise _RecordRefused((index, i), exc) from exc
            out.append(exc)  # refused before it changed anything: the others go on
    return out


def _upsert_group(conn: Connection, payloads: list[_UpsertPayload]) -> list[Results]:
    """The person writes of several jobs, in queue order, in one transaction: the CRM rows one
    record at a time, then the people's identity-graph writes as one batch per org.

    Each record is all-or-nothing by the database, as CDP writes are
    (``ProfileService._apply_all_or_nothing``): the group runs in a savepoint, and a record
    refused after it changed the batch (say, a fault between its rows) has the savepoint rolled
    back and the group run again without it, so it leaves nothing and the records after it see
    the batch as if it had never been sent. A record refused by its checks, before it changed
    anything, costs no second run."""
    refused: dict[tuple[int, int], ProfilehubError] = {}
    while True:
        try:
            with savepoint(conn):
                return _upsert_attempt(conn, payloads, refused)
        except _RecordRefused as again:
            refused[again.at] = again.error


def _upsert_attempt(
    conn: Connection, payloads: list[_UpsertPayload], refused: Mapping[tuple[int, int], ProfilehubError]
) -> list[Results]:
    out: list[Results] = []
    orgs: dict[int, tuple[ProfileService, _OrgWrites]] = {}
    emails: dict[int, tuple[ProfileService, list[str]]] = {}
    for profiles, org_id, records, _, _, prepared in payloads:
        emails.setdefault(org_id, (profiles, []))[1].extend(_body_emails(records, prepared))
    for org_id, (profiles, found) in emails.items():
        try:
            # The org's setup reads the emails' owners too (on PostgreSQL in the same round trip).
            orgs[org_id] = (profiles, _org_writes(conn, profiles, org_id, found))
        except ProfilehubError:
            continue  # answered below
    for index, (profiles, org_id, records, matching_attribute, actor, prepared) in enumerate(payloads):
        try:
            if org_id not in orgs:
                orgs[org_id] = (profiles, _org_writes(conn, profiles, org_id))
        except ProfilehubError as exc:
            out.append(FailedCall(exc, len(records)))
            continue
        org = orgs[org_id][1]
        out.append(_upsert_payload(conn, org, index, records, matching_attribute, actor, prepared, refused))
    for profiles, org in orgs.values():
        _resolve_in_graph(conn, profiles, org)
    return out


def people_upsert_job(
    profiles: ProfileService,
    org_id: int,
    records: Sequence[Any],
    matching_attribute: str | None,
    actor: str,
    shaped: bool = False,
) -> GroupJob:
    """The writer job behind every person write: upsert each body (create when no matching
    attribute). Concurrent jobs share one transaction and one identity-graph batch. ``shaped``:
    the bodies are ``parse_person``'s answers already (the fast route checked their shape)."""
    if len(records) > MAX_BATCH:
        raise BadRequest(f"at most {MAX_BATCH} people per request", field="body")
    prepared = prepare_people(profiles, org_id, records, shaped)
    return GroupJob(_upsert_group, (profiles, org_id, records, matching_attribute, actor, prepared))


def unwrap(results: Results) -> Results:
    """Results of ``people_upsert_job``; raises the error of the whole call (an unknown matching
    attribute), which the job reports as every record's error."""
    if isinstance(results, FailedCall):
        raise results.error
    return results


def upsert_people_batch(
    db: Database,
    org_id: int,
    records: list[dict[str, Any]],
    matching_attribute: str | None,
    actor: str,
    profiles: ProfileService | None = None,
) -> Results:
    """Upsert people in order; one result or error per record, in the same order.

    ``matching_attribute`` None creates every record (``POST /people``). Errors of the call itself
    (an unknown matching attribute, too many records) are raised.
    """
    service = profiles if profiles is not None else ProfileService(db)
    return unwrap(db.write(people_upsert_job(service, org_id, records, matching_attribute, actor)))


def patch_person_job(
    profiles: ProfileService, org_id: int, person_id: str, raw: Any, actor: str
) -> Callable[[Connection], PersonResult]:
    """Partial update: fields left out are kept; ``emails`` given replaces the list."""

    def job(conn: Connection) -> PersonResult:
        org = _org_writes(conn, profiles, org_id)
        previous = org.rows.load(person_id) if is_record_id(person_id) else None
        if previous is None:
            raise NotFound(f"no person {person_id}", field="id")
        given = _drop_suppressed(org, read_person(conn, org_id, raw, org.attrs), existing=True)
        result = _save_person(conn, org, given, previous, add_emails=False, actor=actor, detail={})
        _resolve_in_graph(conn, profiles, org)
        return result

    return job


def delete_person_job(
    profiles: ProfileService, org_id: int, person_id: str, actor: str
) -> Callable[[Connection], None]:
    """The person and its link go; the profile it was linked to stays (with its ids)."""

    def job(conn: Connection) -> None:
        lock_scope(conn, org_id, LOCK)
        if store.load_record(conn, org_id, PEOPLE, person_id) is None:
            raise NotFound(f"no person {person_id}", field="id")
        erase_people(conn, org_id, [person_id], actor)
        profiles.unlink_people(conn, org_id, home_region(conn, org_id), [person_id])

    return job


LINK_BATCH = 500


def link_people_job(
    profiles: ProfileService, org_id: int, after_seq: int, actor: str
) -> Callable[[Connection], tuple[int, int | None]]:
    """Link up to ``LINK_BATCH`` people created after ``after_seq`` that have no link yet (people
    written before links existed): how many were linked, and the last ``seq`` seen (None: done)."""

    def job(conn: Connection) -> tuple[int, int | None]:
        org = _org_writes(conn, profiles, org_id)
        found = store.records_after(conn, org_id, PEOPLE, after_seq, LINK_BATCH)
        linked = people_links(conn, org_id, org.home, [r.record_id for r in found])
        for rec in found:
            if rec.record_id in linked:
                continue
            emails = list(rec.values.get("emails") or [])
            identity = PersonIdentity(rec.record_id, emails, rec.values.get("phone_number"))
            graph = prepare_person(org.strategy, org_id, org.home, identity, actor)
            if graph is not None:
                org.graph.append(graph)
        if org.graph:
            profiles.write_people(conn, org_id, org.home, org.graph)
        now = people_links(conn, org_id, org.home, [r.record_id for r in found])
        return len(set(now) - set(linked)), (found[-1].seq if len(found) == LINK_BATCH else None)

    return job


def person_updated_events(
    conn: Connection, org_id: int, person_ids: Sequence[str], ts: int
) -> list[EventRow]:
    """``person.updated`` of people changed by another write (a deleted company's), as GET answers them."""
    recs = store.load_records(conn, org_id, PEOPLE, list(person_ids))
    attrs = custom_attributes(conn, org_id, PEOPLE)
    views = _views(conn, org_id, list(recs.values()), attrs, home_region(conn, org_id))
    return [EventRow(org_id, "person.updated", ts, v["id"], {"person": v}) for v in views]


def get_person(conn: Connection, org_id: int, person_id: str) -> dict[str, Any]:
    rec = store.load_record(conn, org_id, PEOPLE, person_id)
    if rec is None:
        raise NotFound(f"no person {person_id}", field="id")
    attrs = custom_attributes(conn, org_id, PEOPLE)
    [view] = _views(conn, org_id, [rec], attrs, home_region(conn, org_id))
    return view


def list_people(
    conn: Connection, org_id: int, *, page: int, count: int, search: str | None
) -> tuple[list[dict[str, Any]], Page]:
    """A page of people in creation order; ``search`` looks in names, emails, job title, location, phone."""
    found = store.list_records(conn, org_id, PEOPLE, page=page, count=count, search=search)
    attrs = custom_attributes(conn, org_id, PEOPLE)
    return _views(conn, org_id, found.records, attrs, home_region(conn, org_id)), found


def list_company_people(
    conn: Connection, org_id: int, company_id: str, *, page: int, count: int
) -> tuple[list[dict[str, Any]], Page]:
    """A page of the people whose ``companyId`` is ``company_id``, in creation order."""
    found = store.list_referencing(conn, org_id, PEOPLE, "company_id", company_id, page=page, count=count)
    attrs = custom_attributes(conn, org_id, PEOPLE)
    return _views(conn, org_id, found.records, attrs, home_region(conn, org_id)), found
