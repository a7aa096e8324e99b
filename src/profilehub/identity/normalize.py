"""Normalising identifiers and deriving the hashed idTypes from raw emails and phone numbers."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, NamedTuple

import phonenumbers

from profilehub.errors import BadRequest
from profilehub.identity.strategy import (
    CELLPHONE_HASH_TYPES,
    EMAIL_HASH_TYPES,
    IdClass,
    Strategy,
)
from profilehub.identity.suppression import ID_SUPPRESSED, Suppression

MAX_ID_LENGTH = 512
_HASHED_RE = re.compile(r"(sha256|sha1|md5)", re.IGNORECASE)
# Region codes that are not ISO countries but name one.
_REGION_COUNTRY = {"UK": "GB"}


class Identifier(NamedTuple):
    # A named tuple, not a dataclass: ids are hashed, compared and sorted millions of times per
    # import, and a tuple does that in C.
    id_type: str
    value: str


@dataclass(frozen=True)
class Notice:
    """Something a write asked for that was ignored or refused; reported, never fatal."""

    code: str
    message: str
    field: str | None = None
    detail: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            out["field"] = self.field
        if self.detail:
            out.update(self.detail)
        return out


# RFC 5321 4.5.3.1: at most 64 octets before the @ and 254 in all (a 256-octet path less <>).
MAX_EMAIL_LOCAL = 64
MAX_EMAIL = 254
_EMAIL_SHAPE = re.compile(r"[^@]+@[^@]+\.[^@]+")
_ASCII_CONTROL_OR_SPACE = re.compile("[\x00-\x20\x7f]")


def check_email(text: str, field: str) -> None:
    """An email address: ``local@domain.tld``, within RFC 5321's lengths, with no space or control
    character anywhere (NUL, newlines, tabs, zero-width and direction marks, no-break spaces...)."""
    if text.isascii():
        # the ASCII characters of Unicode's C and Z categories, without a call per character
        found = _ASCII_CONTROL_OR_SPACE.search(text)
        bad = found.group() if found else None
    else:
        bad = next((c for c in text if unicodedata.category(c)[0] in "CZ"), None)
    if bad is not None:
        what = "a space" if bad == " " else f"the character U+{ord(bad):04X}"
        raise BadRequest(f"an email address must not contain {what}", field=field)
    # An empty label in the domain (a trailing dot, "..") is no address by RFC 5321 4.1.2, and
    # "a@x.com." would be a second spelling of a@x.com: one email with two owners, two hashes.
    if not _EMAIL_SHAPE.fullmatch(text) or "" in text.rsplit("@", 1)[1].split("."):
        raise BadRequest(f"{text!r} is not an email address (local@domain.tld)", field=field)
    local = text.rsplit("@", 1)[0]
    if len(local.encode()) > MAX_EMAIL_LOCAL:
        raise BadRequest(f"at most {MAX_EMAIL_LOCAL} characters before the @ (RFC 5321)", field=field)
    if len(text.encode()) > MAX_EMAIL:
        raise BadRequest(f"an email address has at most {MAX_EMAIL} characters (RFC 5321)", field=field)


def normalise_email(value: str, field: str) -> str:
    """Trimmed and lower-cased; one rule for both dialects (see ``check_email``)."""
    email = value.strip().lower()
    check_email(email, field)
    return email


# "+" and the digits of a country code and number: what most feeds send, and the one form whose
# E.164 reading ``phonenumbers.parse`` leaves unchanged unless the national part starts with the
# country's national prefix (checked, see ``_plain_e164``).
_PLAIN_E164 = re.compile(r"\+[1-9][0-9]{2,19}")


def _e164(value: str, hint: str | None) -> str | None:
    """The E.164 form; None when ``value`` does not parse, "" when it is no possible number."""
    if _PLAIN_E164.fullmatch(value):
        plain = _plain_e164(value)
        if plain is not None:
            return plain
    return _parsed_e164(value, hint)


def _plain_e164(value: str) -> str | None:
    """What ``_parsed_e164`` answers for ``+<digits>``, without parsing (about 2 microseconds
    instead of 90), or None where only parsing tells. ``parse`` takes the country code as the
    shortest prefix of the digits that is one, keeps the rest as the national number unless the
    country's national prefix pattern matches its start, and ``is_possible_number`` looks only at
    the national number's length: so the answer is ``value`` itself or "" (tests compare both
    ways on many numbers)."""
    digits = value[1:]
    for size in (1, 2, 3):
        country = int(digits[:size])
        if country in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None
    national = digits[size:]
    if not _MIN_NATIONAL <= len(national) <= _MAX_NATIONAL:
        return None
    prefix = _national_prefix(country)
    if prefix is None or prefix.match(national):
        return None
    return value if _possible_length(country, len(national)) else ""


_MIN_NATIONAL = 2  # phonenumbers' _MIN_LENGTH_FOR_NSN and _MAX_LENGTH_FOR_NSN
_MAX_NATIONAL = 17
_NO_PREFIX = re.compile(r"(?!)")  # a country without a national prefix: never matches


@cache
def _national_prefix(country: int) -> re.Pattern[str] | None:
    """The pattern ``parse`` strips from the start of a national number of ``country``; None
    where the country has no metadata (then only parsing tells)."""
    region = phonenumbers.region_code_for_country_code(country)
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(country, region)
    if metadata is None:
        return None
    pattern = metadata.national_prefix_for_parsing
    return re.compile(pattern) if pattern else _NO_PREFIX


@cache
def _possible_length(country: int, length: int) -> bool:
    number = phonenumbers.PhoneNumber(country_code=country, national_number=int("1" * length))
    return bool(phonenumbers.is_possible_number(number))


@lru_cache(maxsize=1 << 16)
def _parsed_e164(value: str, hint: str | None) -> str | None:
    """``_e164`` by ``phonenumbers.parse``.

    Cached: parsing costs about 90 microseconds, the most of any step of a write, and feeds
    repeat the same person's number often.
    """
    try:
        number = phonenumbers.parse(value, hint)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return ""
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def normalise_phone(value: str, field: str, region: str | None = None) -> str:
    """E.164, e.g. ``+4930123456789``. Numbers without a country code use the region's country."""
    country = _REGION_COUNTRY.get((region or "").upper(), (region or "").upper())
    e164 = _e164(value, country if len(country) == 2 else None)
    if e164 is None:
        raise BadRequest(
            f"{value!r} is not a phone number in international format (+<country code><number>)",
            field=field,
        )
    if not e164:
        raise BadRequest(f"{value!r} is not a possible phone number", field=field)
    return e164


def email_hashes(email: str) -> dict[str, str]:
    lower = email.lower().encode("utf-8")
    upper = email.upper().encode("utf-8")
    return {
        "email_sha256_lowercase": hashlib.sha256(lower).hexdigest(),
        "email_sha256_uppercase": hashlib.sha256(upper).hexdigest(),
        "email_md5_lowercase": hashlib.md5(lower).hexdigest(),
        "email_md5_uppercase": hashlib.md5(upper).hexdigest(),
        "email_sha1_lowercase": hashlib.sha1(lower).hexdigest(),
    }


def phone_hashes(e164: str) -> dict[str, str]:
    text = e164.encode("utf-8")
    return {
        "cellphone_number_e164_sha256": hashlib.sha256(text).hexdigest(),
        "cellphone_number_e164_md5": hashlib.md5(text).hexdigest(),
        "cellphone_number_e164_sha1": hashlib.sha1(text).hexdigest(),
    }


assert set(email_hashes("a@b.c")) == set(EMAIL_HASH_TYPES)
assert set(phone_hashes("+1")) == set(CELLPHONE_HASH_TYPES)


def coerce_id_value(raw: Any, field: str) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise BadRequest("an id value must be a string (or an integer)", field=field)
    value = str(raw)
    if "\x00" in value:
        raise BadRequest("an id value must not contain NUL characters", field=field)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadRequest("an id value must be valid unicode (no lone surrogates)", field=field) from exc
    if len(value) > MAX_ID_LENGTH:
        raise BadRequest(f"an id value is at most {MAX_ID_LENGTH} characters", field=field)
    return value


def normalise_value(strategy: Strategy, id_type: str, value: str, field: str, region: str) -> str:
    """The stored form of one value of ``id_type`` (raw types are not hashed here)."""
    if id_type == "email":
        return normalise_email(value, field)
    if id_type == "cellphone":
        return normalise_phone(value, field, region)
    if _HASHED_RE.search(id_type):
        return value.strip().lower()
    return value.strip()


def suppressed_notice(field: str) -> Notice:
    return Notice(ID_SUPPRESSED, f"{field}: suppressed (an erased person's id); dropped", field)


def normalise_ids(
    strategy: Strategy,
    ids: dict[str, Any],
    region: str,
    field_prefix: str = "ids",
    suppression: Suppression | None = None,
) -> tuple[list[Identifier], list[Notice]]:
    """Validate, normalise and derive a write's ids; drop blocked and disabled ones (as notices).

    An id given explicitly wins over the same idType derived from a raw value. With
    ``suppression`` (a write's, not a search's), suppressed ids are dropped too: a raw email or
    phone number goes with all its hashes when any one of them (or the raw value) is suppressed,
    so an erasure that only ever saw one hash still keeps the whole address out.
    """
    explicit: dict[str, str] = {}
    derived: dict[str, str] = {}
    notices: list[Notice] = []
    if suppression is not None and not suppression.active(region):
        suppression = None
    checked: set[Identifier] = set()
    for id_type, raw in ids.items():
        field = f"{field_prefix}.{id_type}"
        strategy.id_type(id_type, field)
        given = coerce_id_value(raw, field)
        if strategy.is_blocked(id_type, given.strip()):
            # Checked before validation: a dummy like "null" in an email column is dropped,
            # not a reason to refuse the whole record.
            notices.append(Notice("blocked", f"{field}: value is blocked", field))
            continue
        value = normalise_value(strategy, id_type, given, field, region)
        if id_type in ("email", "cellphone") and strategy.is_blocked(id_type, value):
            notices.append(Notice("blocked", f"{field}: value is blocked", field))
            continue
        if id_type in ("email", "cellphone"):
            hashes = email_hashes(value) if id_type == "email" else phone_hashes(value)
            if suppression is not None:
                family = [Identifier(id_type, value), *(Identifier(t, h) for t, h in hashes.items())]
                if suppression.any_held(region, family):
                    notices.append(suppressed_notice(field))
                    continue
                checked.update(family)
            derived.update(hashes)
            if strategy.keep_raw_ids:
                explicit[id_type] = value
        else:
            explicit[id_type] = value
    merged = dict(derived)
    for id_type, value in explicit.items():
        if id_type in derived and derived[id_type] != value:
            notices.append(
                Notice(
                    "derived_id_dropped",
                    f"ids.{id_type}: the value given explicitly differs from the one derived "
                    "from the raw id; the explicit value is used",
                    f"ids.{id_type}",
                )
            )
        merged[id_type] = value
    out: list[Identifier] = []
    for id_type, value in merged.items():
        rule = strategy.id_types.get(id_type)
        field = f"{field_prefix}.{id_type}"
        if rule is None:  # a derived type the org removed from its strategy
            continue
        if rule.id_class is IdClass.DISABLED:
            notices.append(Notice("disabled", f"{field}: idType is disabled for this org", field))
            continue
        if strategy.is_blocked(id_type, value):
            notices.append(Notice("blocked", f"{field}: value is blocked", field))
            continue
        ident = Identifier(id_type, value)
        if suppression is not None and ident not in checked and suppression.holds(region, ident):
            notices.append(suppressed_notice(field))
            continue
        out.append(ident)
    out.sort(key=lambda i: strategy.sort_key(i.id_type))
    return out, notices
