"""The standard fields of people and companies: reading a request body into stored values.

Requests and answers use the vendor's camelCase names (``phoneNumber``); stored values and
``matchingAttribute`` slugs use snake_case keys (``phone_number``). Custom attributes may be sent
inside ``customAttributes`` or at the top level of the body, as for records of custom objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from profilehub.crm.records import (
    PLACEHOLDER,
    check_custom_values,
    placeholder_notice,
    unknown_attribute,
)
from profilehub.crm.values import Attribute, check_storable
from profilehub.errors import BadRequest
from profilehub.identity.normalize import normalise_phone

SOCIAL_NETWORKS = ("linkedin", "twitter", "facebook", "instagram")
MAX_URL = 1000


@dataclass(frozen=True)
class StandardField:
    name: str  # in requests and answers
    key: str  # stored, and the matchingAttribute slug
    kind: str = "text"  # text | phone | reference (checked by the object's module)
    limit: int = 255
    matchable: bool = True


@dataclass
class ParsedBody:
    values: dict[str, Any] = field(default_factory=dict)  # stored key -> value (None clears)
    socials: dict[str, str | None] | None = None
    special: dict[str, Any] = field(default_factory=dict)  # fields the object's module reads itself
    notices: list[dict[str, Any]] = field(default_factory=list)


def _text(value: Any, name: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"expected a string, got {value!r}", field=name)
    if len(value) > limit:
        raise BadRequest(f"at most {limit} characters", field=name)
    return value.strip() or None


def _socials(value: Any) -> dict[str, str | None]:
    if value is None:
        return dict.fromkeys(SOCIAL_NETWORKS)
    if not isinstance(value, dict):
        raise BadRequest(f"expected an object with {', '.join(SOCIAL_NETWORKS)}", field="socials")
    out: dict[str, str | None] = {}
    for network, url in value.items():
        if network not in SOCIAL_NETWORKS:
            raise BadRequest(
                f"unknown network; known: {', '.join(SOCIAL_NETWORKS)}", field=f"socials.{network}"
            )
        out[network] = _text(url, f"socials.{network}", MAX_URL)
    return out


def merge_socials(stored: Any, given: dict[str, str | None] | None) -> dict[str, str] | None:
    """Networks left out of a write keep their link; ``null`` removes one."""
    merged = {**(stored or {}), **(given or {})}
    kept = {k: v for k, v in merged.items() if v is not None}
    return kept or None


def socials_view(stored: Any) -> dict[str, str | None]:
    if not stored:
        return dict.fromkeys(SOCIAL_NETWORKS)
    return {network: stored.get(network) for network in SOCIAL_NETWORKS}


def read_body(
    conn: Connection | None,
    org_id: int,
    raw: Any,
    standard: Mapping[str, StandardField],
    attrs: Mapping[str, Attribute],
    special: frozenset[str],
    storable: bool = False,
) -> ParsedBody:
    """Check every field of a person or company body; unknown fields are a 400 naming them.
    ``conn`` None: no attribute is a relation (whose values are checked in the database).
    ``storable``: the body holds nothing ``check_storable`` refuses (its JSON text was looked at)."""
    if not isinstance(raw, dict):
        raise BadRequest("expected a JSON object", field="body")
    if not storable:
        check_storable(raw)
    parsed = ParsedBody()
    custom_raw: dict[str, list[tuple[Any, str]]] = {}
    for name, value in raw.items():
        spec = standard.get(name)
        if spec is not None:
            if spec.kind == "text":
                parsed.values[spec.key] = _text(value, name, spec.limit)
            elif value == PLACEHOLDER:
                parsed.notices.append(placeholder_notice(name))
            elif spec.kind == "phone":
                if value is not None and not isinstance(value, str):
                    raise BadRequest(f"expected a phone number string, got {value!r}", field=name)
                parsed.values[spec.key] = normalise_phone(value, name) if value else None
            else:
                parsed.special[name] = value
        elif name in special:
            parsed.special[name] = value
        elif name == "socials":
            parsed.socials = _socials(value)
        elif name == "customAttributes":
            if not isinstance(value, dict):
                raise BadRequest("expected an object of attribute key to value", field=name)
            for key, item in value.items():
                if key not in attrs:
                    raise unknown_attribute(f"customAttributes.{key}", attrs)
                custom_raw.setdefault(key, []).append((item, f"customAttributes.{key}"))
        elif name in attrs:
            custom_raw.setdefault(name, []).append((value, name))
        else:
            allowed = [*standard, *sorted(special), "socials", "customAttributes"]
            raise BadRequest(
                f"unknown field; known: {', '.join(allowed)} and custom attribute keys", field=name
            )
    for key, given in custom_raw.items():
        checked = [
            check_custom_values(conn, org_id, attrs, {key: value}, name[: -len(key)])[key]
            for value, name in given
        ]
        if any(c != checked[0] for c in checked[1:]):
            raise _given_twice(key, [name for _, name in given])
        parsed.values[key] = checked[0]
    return parsed


def _given_twice(key: str, names: list[str]) -> BadRequest:
    """One attribute given at the top level and in ``customAttributes`` with different values."""
    field_name = f"customAttributes.{key}"
    message = (
        f"{field_name}: {key} is given both at the top level and in customAttributes, with different "
        "values; send it once"
    )
    return BadRequest(message, field=field_name, errors=dict.fromkeys(names, message))


def matchable_slugs(standard: Mapping[str, StandardField]) -> dict[str, StandardField]:
    """Standard fields by every name a client may give as matchingAttribute (slug or camelCase)."""
    out: dict[str, StandardField] = {}
    for spec in standard.values():
        if spec.matchable:
            out[spec.key] = spec
            out[spec.name] = spec
    return out
