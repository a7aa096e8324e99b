"""CRM objects and their attributes: the standard people and companies, and custom objects.

Slugs and attribute keys are immutable once made, and so is an attribute's type: records store
values in the form of their type, and other systems address them by key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.crm.record_store import iso
from profilehub.crm.values import (
    ATTRIBUTE_TYPES,
    MAX_TEXT,
    UNIQUE_CAPABLE,
    WITH_OPTIONS,
    Attribute,
    check_storable,
    snake_case,
    unique_key,
)
from profilehub.errors import BadRequest, Conflict, NotFound
from profilehub.store.changes import change_row, now_ms, record
from profilehub.store.database import lock_scope
from profilehub.store.tables import crm_attributes, crm_objects

PEOPLE = "people"
COMPANIES = "companies"
# "objects" is the path of the object API itself and "changes" the change feed's, so no object
# may be called either.
RESERVED_SLUGS = frozenset({PEOPLE, COMPANIES, "objects", "changes"})
_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{2,59}$")
RELATION_TYPES = ("one_to_one", "one_to_many", "many_to_one", "many_to_many")
SINGLE_RELATIONS = frozenset({"one_to_one", "many_to_one"})
CURRENCY_DISPLAYS = ("code", "name", "symbol")
MAX_OPTIONS = 500
LOCK = "crm"  # one lock scope per org for every CRM write: records reference each other


def _standard(key: str, label: str, kind: str = "text", **flags: Any) -> Attribute:
    return Attribute(key=key, label=label, type=kind, is_standard=True, **flags)


SYSTEM_ATTRIBUTES = (
    _standard("id", "ID", is_required=True),
    _standard("created_at", "Created At", "datetime", is_required=True),
    _standard("updated_at", "Updated At", "datetime"),
)
STANDARD_ATTRIBUTES: dict[str, tuple[Attribute, ...]] = {
    PEOPLE: (
        _standard("first_name", "First Name"),
        _standard("last_name", "Last Name"),
        _standard("salutation", "Salutation"),
        _standard("emails", "Emails", is_unique=True),
        _standard("job_title", "Job Title"),
        _standard("description", "Description"),
        _standard("phone_number", "Phone Number", "phone_number"),
        _standard("primary_location", "Primary Location"),
        _standard("avatar_url", "Avatar URL"),
        _standard("company_id", "Company", "relation", config={"relatedObjectSlug": COMPANIES}),
        _standard("socials", "Socials"),
    ),
    COMPANIES: (
        _standard("name", "Name", is_required=True),
        _standard("domain", "Domain", is_unique=True),
        _standard("description", "Description"),
        _standard("phone_number", "Phone Number", "phone_number"),
        _standard("primary_location", "Primary Location"),
        _standard("logo_url", "Logo URL"),
        _standard("socials", "Socials"),
    ),
}
STANDARD_NAMES = {PEOPLE: ("Person", "People"), COMPANIES: ("Company", "Companies")}


@dataclass(frozen=True)
class CrmObject:
    slug: str
    singular_name: str
    plural_name: str
    is_standard: bool
    is_active: bool
    created_ts: int | None
    updated_ts: int | None


def attribute_view(attr: Attribute) -> dict[str, Any]:
    view: dict[str, Any] = {
        "key": attr.key,
        "label": attr.label,
        "type": attr.type,
        "isRequired": attr.is_required,
        "isStandard": attr.is_standard,
        "isUnique": attr.is_unique,
        "isArchived": attr.is_archived,
    }
    if attr.type in WITH_OPTIONS:
        view["options"] = [dict(o) for o in attr.options]
    view.update(attr.config)
    if not attr.is_standard:
        view["createdAt"] = iso(attr.created_ts)
        view["updatedAt"] = iso(attr.updated_ts)
    return view


def attribute_from_row(row: Any) -> Attribute:
    return Attribute(
        key=row.key,
        label=row.label,
        type=row.type,
        is_unique=bool(row.is_unique),
        is_required=bool(row.is_required),
        is_archived=bool(row.is_archived),
        options=tuple(orjson.loads(row.options)),
        config=orjson.loads(row.config),
        created_ts=row.created_ts,
        updated_ts=row.updated_ts,
    )


def custom_attributes(conn: Connection, org_id: int, slug: str) -> dict[str, Attribute]:
    """The org's own attributes of an object, in the order they were added."""
    rows = conn.execute(
        sa.select(crm_attributes)
        .where(crm_attributes.c.org_id == org_id, crm_attributes.c.object_slug == slug)
        .order_by(crm_attributes.c.position)
    )
    return {r.key: attribute_from_row(r) for r in rows}


def get_object(conn: Connection, org_id: int, slug: str) -> CrmObject:
    if slug in STANDARD_NAMES:
        singular, plural = STANDARD_NAMES[slug]
        return CrmObject(slug, singular, plural, True, True, None, None)
    if not _SLUG_RE.match(slug):
        raise NotFound(f"no object {slug!r} in this org", field="objectSlug")
    row = conn.execute(
        sa.select(crm_objects).where(crm_objects.c.org_id == org_id, crm_objects.c.slug == slug)
    ).first()
    if row is None:
        raise NotFound(f"no object {slug!r} in this org", field="objectSlug")
    return CrmObject(
        row.slug,
        row.singular_name,
        row.plural_name,
        False,
        bool(row.is_active),
        row.created_ts,
        row.updated_ts,
    )


def object_view(conn: Connection, org_id: int, slug: str) -> dict[str, Any]:
    obj = get_object(conn, org_id, slug)
    standard = STANDARD_ATTRIBUTES.get(slug, SYSTEM_ATTRIBUTES)
    attributes = [*standard, *custom_attributes(conn, org_id, slug).values()]
    return {
        "slug": obj.slug,
        "singularName": obj.singular_name,
        "pluralName": obj.plural_name,
        "isStandard": obj.is_standard,
        "isActive": obj.is_active,
        "attributes": [attribute_view(a) for a in attributes],
        "createdAt": iso(obj.created_ts) if obj.created_ts is not None else None,
        "updatedAt": iso(obj.updated_ts) if obj.updated_ts is not None else None,
    }


def list_objects(conn: Connection, org_id: int) -> list[dict[str, Any]]:
    slugs = conn.execute(
        sa.select(crm_objects.c.slug).where(crm_objects.c.org_id == org_id).order_by(crm_objects.c.created_ts)
    ).scalars()
    return [object_view(conn, org_id, s) for s in [PEOPLE, COMPANIES, *slugs]]


def _name(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest("required, a non-empty string", field=key)
    if len(value) > MAX_TEXT:
        raise BadRequest(f"at most {MAX_TEXT} characters", field=key)
    return value.strip()


def _flag(body: Mapping[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"expected true or false, got {value!r}", field=key)
    return value


def _unknown_fields(body: Mapping[str, Any], allowed: set[str]) -> None:
    for key in body:
        if key not in allowed:
            raise BadRequest(f"unknown field; allowed: {', '.join(sorted(allowed))}", field=key)


def create_object(conn: Connection, org_id: int, body: Mapping[str, Any], actor: str) -> dict[str, Any]:
    _unknown_fields(body, {"slug", "singularName", "pluralName", "isActive"})
    check_storable(body)
    slug = body.get("slug")
    if not isinstance(slug, str) or not _SLUG_RE.match(slug):
        raise BadRequest(
            "3-60 characters: lowercase letters, digits, hyphens and underscores, starting with a letter "
            "or digit",
            field="slug",
        )
    if slug in RESERVED_SLUGS:
        raise BadRequest(f"{slug!r} is reserved", field="slug")
    singular, plural = _name(body, "singularName"), _name(body, "pluralName")
    active = _flag(body, "isActive", True)
    lock_scope(conn, org_id, LOCK)  # before the reads the checks depend on
    taken = conn.execute(
        sa.select(crm_objects.c.slug).where(crm_objects.c.org_id == org_id, crm_objects.c.slug == slug)
    ).first()
    if taken:
        raise Conflict(f"an object {slug!r} already exists", field="slug")
    ts = now_ms()
    conn.execute(
        crm_objects.insert().values(
            org_id=org_id,
            slug=slug,
            singular_name=singular,
            plural_name=plural,
            is_active=active,
            created_ts=ts,
            updated_ts=ts,
        )
    )
    record(conn, [change_row(org_id, actor, "crm_object", slug, "create", dict(body), ts)])
    return object_view(conn, org_id, slug)


def _reserved_keys(slug: str) -> set[str]:
    """Keys a custom attribute may not take: the standard ones and the request fields of people/companies."""
    keys = {a.key for a in (*SYSTEM_ATTRIBUTES, *STANDARD_ATTRIBUTES.get(slug, ()))}
    keys |= {snake_case(k) for k in ("customAttributes", "companyId", "company")}
    return keys


def _options(raw: Any, previous: tuple[Mapping[str, Any], ...] = ()) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw or len(raw) > MAX_OPTIONS:
        raise BadRequest(f"expected 1 to {MAX_OPTIONS} options, each {{value, color?, id?}}", field="options")
    numeric = [
        o["id"] for o in [*previous, *[r for r in raw if isinstance(r, dict)]] if isinstance(o.get("id"), int)
    ]
    next_id = max([0, *numeric]) + 1
    out: list[dict[str, Any]] = []
    seen_ids: set[str] = set()
    seen_values: set[str] = set()
    for i, option in enumerate(raw):
        field = f"options.{i}"
        if not isinstance(option, dict):
            raise BadRequest("expected an object {value, color?, id?}", field=field)
        value = option.get("value")
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
            raise BadRequest(f"value: required, 1 to {MAX_TEXT} characters", field=f"{field}.value")
        option_id = option.get("id")
        if option_id is None:
            option_id, next_id = next_id, next_id + 1
        elif isinstance(option_id, bool) or not isinstance(option_id, int | str):
            raise BadRequest("id: expected an integer or a string", field=f"{field}.id")
        color = option.get("color")
        if color is not None and not isinstance(color, str):
            raise BadRequest("color: expected a string", field=f"{field}.color")
        if str(option_id) in seen_ids or value.strip() in seen_values:
            raise BadRequest("options must have distinct ids and values", field=field)
        seen_ids.add(str(option_id))
        seen_values.add(value.strip())
        out.append({"id": option_id, "value": value.strip(), "color": color})
    return out


def _currency_settings(body: Mapping[str, Any], config: dict[str, Any], creating: bool) -> None:
    if creating:
        code = body.get("currency")
        if not isinstance(code, str) or not re.fullmatch(r"[A-Za-z]{3}", code):
            raise BadRequest(
                "required for currency attributes: an ISO 4217 code such as EUR", field="currency"
            )
        config["currency"] = code.upper()
    display = body.get("currencyDisplay") or config.get("currencyDisplay", "symbol")
    if display not in CURRENCY_DISPLAYS:
        raise BadRequest(f"one of {', '.join(CURRENCY_DISPLAYS)}", field="currencyDisplay")
    config["currencyDisplay"] = display
    for key in ("currencyDecimal", "currencyGrouping"):
        config[key] = _flag(body, key, config.get(key, True))


ATTRIBUTE_FIELDS = {
    "type",
    "label",
    "isRequired",
    "isUnique",
    "isArchived",
    "validation",
    "options",
    "relationType",
    "relatedObjectSlug",
    "relatedObjectLabel",
    "currency",
    "currencyDisplay",
    "currencyDecimal",
    "currencyGrouping",
}
UPDATABLE_FIELDS = {
    "label",
    "isRequired",
    "isArchived",
    "options",
    "relatedObjectLabel",
    "currencyDisplay",
    "currencyDecimal",
    "currencyGrouping",
}


def add_attribute(
    conn: Connection, org_id: int, slug: str, body: Mapping[str, Any], actor: str
) -> dict[str, Any]:
    _unknown_fields(body, ATTRIBUTE_FIELDS)
    check_storable(body)
    lock_scope(conn, org_id, LOCK)
    get_object(conn, org_id, slug)
    kind = body.get("type")
    if kind not in ATTRIBUTE_TYPES:
        raise BadRequest(f"one of {', '.join(ATTRIBUTE_TYPES)}", field="type")
    label = _name(body, "label")
    is_unique = _flag(body, "isUnique", False)
    if is_unique and kind not in UNIQUE_CAPABLE:
        raise BadRequest(
            f"only {', '.join(sorted(UNIQUE_CAPABLE))} attributes can be unique", field="isUnique"
        )
    options = _options(body.get("options")) if kind in WITH_OPTIONS else []
    config: dict[str, Any] = {}
    if kind == "relation":
        target = body.get("relatedObjectSlug")
        if not isinstance(target, str):
            raise BadRequest("required for relation attributes", field="relatedObjectSlug")
        get_object(conn, org_id, target)
        relation_type = body.get("relationType") or "many_to_many"
        if relation_type not in RELATION_TYPES:
            raise BadRequest(f"one of {', '.join(RELATION_TYPES)}", field="relationType")
        related_label = body.get("relatedObjectLabel")
        if related_label is not None and not isinstance(related_label, str):
            raise BadRequest("expected a string", field="relatedObjectLabel")
        config.update(relationType=relation_type, relatedObjectSlug=target, relatedObjectLabel=related_label)
    if kind == "currency":
        _currency_settings(body, config, creating=True)
    validation = body.get("validation") or []
    # The vendor's examples send "validation": [] with every type; only text attributes use it.
    if not isinstance(validation, list) or set(validation) - {"email", "url"}:
        raise BadRequest('expected a list of "email" and/or "url"', field="validation")
    if validation and kind == "text":
        config["validation"] = list(dict.fromkeys(validation))
    existing = custom_attributes(conn, org_id, slug)
    key = unique_key(snake_case(label), set(existing) | _reserved_keys(slug))
    ts = now_ms()
    attr = Attribute(
        key=key,
        label=label,
        type=kind,
        is_unique=is_unique,
        is_required=_flag(body, "isRequired", False),
        is_archived=_flag(body, "isArchived", False),
        options=tuple(options),
        config=config,
        created_ts=ts,
        updated_ts=ts,
    )
    conn.execute(
        crm_attributes.insert().values(
            org_id=org_id,
            object_slug=slug,
            key=key,
            label=attr.label,
            type=attr.type,
            is_unique=attr.is_unique,
            is_required=attr.is_required,
            is_archived=attr.is_archived,
            options=orjson.dumps(options).decode(),
            config=orjson.dumps(config).decode(),
            position=len(existing) + 1,
            created_ts=ts,
            updated_ts=ts,
        )
    )
    record(conn, [change_row(org_id, actor, "crm_attribute", slug, "create", {"key": key, **body}, ts)])
    return attribute_view(attr)


def update_attribute(
    conn: Connection, org_id: int, slug: str, key: str, body: Mapping[str, Any], actor: str
) -> dict[str, Any]:
    check_storable(body)
    lock_scope(conn, org_id, LOCK)
    get_object(conn, org_id, slug)
    if key in {a.key for a in (*SYSTEM_ATTRIBUTES, *STANDARD_ATTRIBUTES.get(slug, ()))}:
        raise BadRequest(f"{key!r} is a standard attribute and cannot be changed", field="key")
    attr = custom_attributes(conn, org_id, slug).get(key)
    if attr is None:
        raise NotFound(f"no attribute {key!r} on {slug}", field="key")
    for name in body:
        if name in ("type", "key", "isUnique", "relationType", "relatedObjectSlug", "currency"):
            raise BadRequest("cannot be changed after the attribute is created", field=name)
        if name not in UPDATABLE_FIELDS:
            raise BadRequest(f"unknown field; updatable: {', '.join(sorted(UPDATABLE_FIELDS))}", field=name)
    changes: dict[str, Any] = {}
    if "label" in body:
        changes["label"] = _name(body, "label")
    for flag, column in (("isRequired", "is_required"), ("isArchived", "is_archived")):
        if flag in body:
            changes[column] = _flag(body, flag, False)
    # The settings of other types are ignored, as on create: the vendor's own PATCH example sends
    # options, relatedObjectLabel and the currency settings together, for a select attribute.
    if "options" in body and attr.type in WITH_OPTIONS:
        changes["options"] = orjson.dumps(_options(body["options"], attr.options)).decode()
    config = dict(attr.config)
    if "relatedObjectLabel" in body and attr.type == "relation":
        label = body["relatedObjectLabel"]
        if label is not None and not isinstance(label, str):
            raise BadRequest("expected a string", field="relatedObjectLabel")
        config["relatedObjectLabel"] = label
    if {"currencyDisplay", "currencyDecimal", "currencyGrouping"} & set(body) and attr.type == "currency":
        _currency_settings(body, config, creating=False)
    changes["config"] = orjson.dumps(config).decode()
    ts = now_ms()
    conn.execute(
        crm_attributes.update()
        .where(
            crm_attributes.c.org_id == org_id,
            crm_attributes.c.object_slug == slug,
            crm_attributes.c.key == key,
        )
        .values(updated_ts=ts, **changes)
    )
    record(conn, [change_row(org_id, actor, "crm_attribute", slug, "update", {"key": key, **body}, ts)])
    return attribute_view(custom_attributes(conn, org_id, slug)[key])
