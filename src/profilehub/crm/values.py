"""Attribute definitions and typed values: checking what a client sends, and how values are matched.

A value is checked against its attribute's type and stored in one canonical form, so that
matching by an attribute is plain equality of ``match_key`` strings, indexed in ``crm_values``.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from profilehub.errors import BadRequest, printable_key
from profilehub.identity.normalize import check_email, normalise_phone

ATTRIBUTE_TYPES = (
    "text",
    "number",
    "phone_number",
    "date",
    "datetime",
    "checkbox",
    "select",
    "multiselect",
    "rating",
    "relation",
    "status",
    "user",
    "currency",
)
UNIQUE_CAPABLE = frozenset({"text", "phone_number", "number"})
WITH_OPTIONS = frozenset({"select", "multiselect", "status"})
# Types whose value is one scalar: these can be matched on and are indexed.
MATCHABLE = frozenset(
    {
        "text",
        "number",
        "phone_number",
        "date",
        "datetime",
        "checkbox",
        "select",
        "status",
        "rating",
        "currency",
    }
)
MAX_TEXT = 255
MAX_RATING = 5
MAX_LIST_VALUES = 100
# Beyond 2**53 a JSON number loses precision in most clients (and 2**64 cannot be stored).
MAX_NUMBER = 2**53


@dataclass(frozen=True)
class Attribute:
    """One attribute of an object: standard (built in) or custom (defined by the org)."""

    key: str
    label: str
    type: str
    is_unique: bool = False
    is_required: bool = False
    is_standard: bool = False
    is_archived: bool = False
    options: tuple[Mapping[str, Any], ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)
    created_ts: int = 0
    updated_ts: int = 0

    @property
    def matchable(self) -> bool:
        return self.type in MATCHABLE


def check_storable(raw: Any, field: str = "body") -> None:
    """Refuse what Python's JSON parser accepts but a database cannot store.

    That is NUL characters (PostgreSQL text), lone surrogates (not UTF-8) and integers beyond
    64 bits; each is a 400 naming the field instead of a failed transaction.
    """
    if isinstance(raw, str):
        _check_text(raw, field, "text")
    elif isinstance(raw, int) and not isinstance(raw, bool):
        if abs(raw) >= 2**63:
            raise BadRequest("number beyond 64 bits", field=field)
    elif isinstance(raw, dict):
        for key, value in raw.items():
            # A key is named as sent, with what cannot be shown (NUL, a lone surrogate) escaped.
            key_name = printable_key(str(key))
            name = key_name if field == "body" else f"{field}.{key_name}"
            _check_text(str(key), name, "a field name")
            check_storable(value, name)
    elif isinstance(raw, list):
        for index, value in enumerate(raw):
            check_storable(value, f"{field}.{index}")


def _check_text(text: str, field: str, what: str) -> None:
    if "\x00" in text:
        raise BadRequest(f"{what} must not contain NUL characters", field=field)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequest(f"{what} is not valid Unicode (a lone surrogate)", field=field) from exc


def snake_case(label: str) -> str:
    """``"Product Name"`` -> ``"product_name"``: the key the vendor derives from a label."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", label.strip())
    key = re.sub(r"[^a-z0-9]+", "_", spaced.lower()).strip("_")
    if not key:
        return "attribute"
    if key[0].isdigit():
        key = f"attr_{key}"
    return key[:70]


def unique_key(base: str, taken: set[str]) -> str:
    if base not in taken:
        return base
    n = 2
    while f"{base}_{n}" in taken:
        n += 1
    return f"{base}_{n}"


def _validate_text(attr: Attribute, text: str, field: str) -> None:
    rules = attr.config.get("validation", ())
    if "email" in rules:
        check_email(text, field)
    if "url" in rules and not re.match(r"^https?://[^\s/]+\.[^\s]+$", text):
        raise BadRequest(f"{text!r} is not an http(s) URL", field=field)


def _is_number(raw: Any) -> bool:
    return isinstance(raw, int | float) and not isinstance(raw, bool)


def _number(raw: Any, field: str) -> int | float:
    if not _is_number(raw) or (isinstance(raw, float) and not math.isfinite(raw)):
        raise BadRequest(f"expected a number, got {raw!r}", field=field)
    if abs(raw) > MAX_NUMBER:
        raise BadRequest(f"at most {MAX_NUMBER} in absolute value", field=field)
    number: int | float = raw
    if isinstance(number, float) and number.is_integer():
        return int(number)  # 10.0 and 10 are one value, so they match
    return number


def _option_id(attr: Attribute, raw: Any, field: str) -> int | str:
    """An option given as ``{"id": 1}``, as its id, or as its value (label)."""
    wanted = raw.get("id") if isinstance(raw, dict) else raw
    if isinstance(raw, dict) and "id" not in raw:
        raise BadRequest('expected an option as {"id": <option id>}', field=field)
    for option in attr.options:
        if str(option["id"]) == str(wanted) or (isinstance(wanted, str) and option["value"] == wanted):
            option_id: int | str = option["id"]
            return option_id
    known = ", ".join(f"{o['id']} ({o['value']})" for o in attr.options) or "none defined"
    raise BadRequest(f"{wanted!r} is not an option of {attr.key}; options: {known}", field=field)


def _uuid_list(raw: Any, field: str) -> list[str]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or len(raw) > MAX_LIST_VALUES:
        raise BadRequest(f"expected an array of at most {MAX_LIST_VALUES} ids", field=field)
    out: list[str] = []
    for item in raw:
        try:
            out.append(str(uuid.UUID(str(item))))
        except ValueError as exc:
            raise BadRequest(f"{item!r} is not an id (a UUID)", field=field) from exc
    return list(dict.fromkeys(out))


def check_value(attr: Attribute, raw: Any, field: str) -> Any:
    """The canonical stored form of ``raw`` for ``attr``, or a 400 naming ``field``.

    ``None`` clears the value. Relation targets are checked to exist by the caller, which has
    the connection.
    """
    if raw is None:
        return None
    kind = attr.type
    if kind == "text":
        if not isinstance(raw, str):
            raise BadRequest(f"expected a string, got {raw!r}", field=field)
        if len(raw) > MAX_TEXT:
            raise BadRequest(f"at most {MAX_TEXT} characters", field=field)
        text = raw.strip() or None
        if text is not None:
            _validate_text(attr, text, field)
        return text
    if kind in ("number", "currency"):
        return _number(raw, field)
    if kind == "phone_number":
        if not isinstance(raw, str):
            raise BadRequest(f"expected a phone number string, got {raw!r}", field=field)
        return normalise_phone(raw, field)
    if kind == "date":
        if not isinstance(raw, str):
            raise BadRequest(f"expected an ISO 8601 date string, got {raw!r}", field=field)
        try:
            return date.fromisoformat(raw).isoformat()
        except ValueError as exc:
            raise BadRequest(f"{raw!r} is not an ISO 8601 date (YYYY-MM-DD)", field=field) from exc
    if kind == "datetime":
        if not isinstance(raw, str):
            raise BadRequest(f"expected an ISO 8601 datetime string, got {raw!r}", field=field)
        try:
            moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError as exc:
            raise BadRequest(f"{raw!r} is not an ISO 8601 datetime", field=field) from exc
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)  # a datetime without offset is taken as UTC
        try:
            return moment.astimezone(UTC).isoformat()
        except OverflowError as exc:  # its offset moves it before year 1 or after year 9999
            raise BadRequest(f"{raw!r} is outside years 1 to 9999 in UTC", field=field) from exc
    if kind == "checkbox":
        if not isinstance(raw, bool):
            raise BadRequest(f"expected true or false, got {raw!r}", field=field)
        return raw
    if kind in ("select", "status"):
        return _option_id(attr, raw, field)
    if kind == "multiselect":
        if not isinstance(raw, list) or len(raw) > MAX_LIST_VALUES:
            raise BadRequest('expected an array of options, e.g. [{"id": 1}]', field=field)
        return list(dict.fromkeys(_option_id(attr, item, field) for item in raw))
    if kind == "rating":
        if not isinstance(raw, int) or isinstance(raw, bool) or not 0 <= raw <= MAX_RATING:
            raise BadRequest(f"expected an integer from 0 to {MAX_RATING}, got {raw!r}", field=field)
        return raw
    if kind in ("relation", "user"):
        return _uuid_list(raw, field)
    raise BadRequest(f"unknown attribute type {kind!r}", field=field)


def match_key(attr_type: str, stored: Any) -> str:
    """The string two equal values share; what ``crm_values`` and ``crm_unique_values`` hold."""
    if isinstance(stored, bool):
        return "true" if stored else "false"
    if isinstance(stored, float):
        return repr(stored)
    return str(stored)


def render_value(attr: Attribute, stored: Any) -> Any:
    """How a stored value is shown: options with their labels, everything else as stored."""
    if stored is None:
        return None
    if attr.type in ("select", "status"):
        return _render_option(attr, stored)
    if attr.type == "multiselect":
        return [_render_option(attr, s) for s in stored]
    return stored


def _render_option(attr: Attribute, option_id: Any) -> dict[str, Any]:
    for option in attr.options:
        if option["id"] == option_id:
            return {"id": option_id, "value": option["value"]}
    return {"id": option_id, "value": None}  # the option was removed since
