"""What the console's search box asks the profile service: the one search ``_search`` runs.

A person types an email address, a phone number or a ucid into one box, or picks an idType (or
namespace) and gives its value. Raw emails and phone numbers are normalised and hashed by the
service exactly as writes are, so a raw address finds a profile that only holds its hashes.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from profilehub.errors import BadRequest
from profilehub.identity.normalize import normalise_ids, normalise_value
from profilehub.identity.strategy import Strategy
from profilehub.profiles import ProfileService

_PHONE = re.compile(r"\+?[0-9][0-9 ().\-]{4,}")
# md5, sha1 or sha256 of an email address or phone number, in hex.
_DIGEST = re.compile(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")


def search_terms(text: str, id_type: str = "") -> dict[str, list[str]]:
    """The ``search`` object of ``_search`` for what was typed (``id_type`` empty: guess it)."""
    value = text.strip()
    if not value:
        raise BadRequest("type an email address, a phone number, a ucid or another id", field="q")
    chosen = id_type.strip()
    if chosen:
        return {chosen: [value]}
    try:
        return {"ucid": [str(uuid.UUID(value))]}
    except ValueError:
        pass
    if "@" in value:
        return {"email": [value]}
    if _PHONE.fullmatch(value):
        return {"cellphone": [value]}
    raise BadRequest(
        "not an email address, a phone number (+<country code><number>) or a ucid; "
        "to look up another id, choose its idType",
        field="q",
    )


@dataclass
class Found:
    """A search's profiles and what the page says about it: how the input was read (``how``) and,
    when it could not be read at all, why (``unread``), so that "no profile" is never said of a
    value that was not searched for, or searched as something else than the person meant."""

    results: list[dict[str, Any]]
    how: list[str] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)


def _reason(exc: BadRequest, prefix: str) -> str:
    # The page says the field once, in its own words: the service's "search.<key>: " goes.
    return str(exc.message).removeprefix(f"{prefix}: ")


def _read_in(strategy: Strategy, key: str, value: str, region: str) -> tuple[str | None, str | None]:
    """How ``_search`` reads ``value`` under ``key`` in ``region``: (what it searched, or why not).

    The same ``normalise_ids`` the search runs: a phone number without a country code reads in a
    region that gives one (UK) and not in another (EU), and a blocked value reads as nothing."""
    where = f"search.{key}"
    is_type = key in strategy.id_types
    names = [key] if is_type else sorted(t.name for t in strategy.types_in_namespace(key))
    if is_type and key in strategy.namespaces():
        # email and cellphone: the raw type stands for its hashes; the hash types take digests.
        names += sorted(t.name for t in strategy.types_in_namespace(key) if t.name != key)
    read: list[str] = []  # the idTypes that take it
    shown = ""
    why: str | None = None
    for name in names:
        if name != key and key in ("email", "cellphone") and not _DIGEST.fullmatch(value.strip()):
            # The hash types take any text, so a number the raw type cannot read would "read" as a
            # digest of each and find nothing: the raw type's reason is what the page must say.
            continue
        try:
            ids, notices = normalise_ids(strategy, {name: value}, region, field_prefix="search")
        except BadRequest as exc:
            why = why or _reason(exc, f"search.{name}")
            continue
        if any(n.code == "blocked" for n in notices):
            why = why or (
                f"“{value.strip()}” is a blocked value of idType {name} (see the org page): "
                "no profile holds it, and it is never used to match"
            )
            continue
        if not ids:
            continue
        if name in ("email", "cellphone"):
            # The raw value stands for its hashes; that it is also looked up as a digest of each
            # hash type (which takes any text) finds nothing and is not worth saying.
            stored = normalise_value(strategy, name, value, where, region)
            what = "an email address" if name == "email" else "a phone number"
            return f"as {what} {stored} (its hashes)", None
        read.append(name)
        shown = ids[0].value
    if len(read) == 1:
        return f"as idType {read[0]} “{shown}”", None
    if read:
        return f"as “{shown}” of each idType of {key} ({', '.join(read)})", None
    return None, why or f"no idType of {key} takes “{value.strip()}”"


def _reading(strategy: Strategy, key: str, value: str) -> tuple[list[str], list[str]]:
    """Per region, as the search reads each region; said once when every region reads it alike."""
    regions = sorted(strategy.regions)
    each = {r: _read_in(strategy, key, value, r) for r in regions}
    if len({v for v in each.values()}) == 1:
        read, why = each[regions[0]]
        return ([read] if read else []), ([why] if why else [])
    how = [f"in region {r}: {read}" for r, (read, _) in each.items() if read]
    unread = [f"in region {r}: {why}" for r, (read, why) in each.items() if why and not read]
    return how, unread


def find_people(service: ProfileService, org_id: int, text: str, id_type: str = "") -> Found:
    terms = search_terms(text, id_type)
    [(key, [value])] = terms.items()
    results = service.search(org_id, None, terms)
    with service.db.read() as conn:
        strategy = service.strategies.get(conn, org_id)
    if key != "ucid":
        how, unread = _reading(strategy, key, value)
        if how:
            # Read in at least one region: the regions that could not read it say why, beside it.
            return Found(results, how + [f"not read {u}" for u in unread])
        return Found(results, [], unread)
    if results or id_type.strip():
        return Found(results, ["as a ucid"])
    # A guessed UUID that is no ucid of the org: an AdId, a crm_id or an fpuid look the same, so
    # it is searched as each of the org's ids that takes it (one search each: an idType that
    # refuses the value must not make the whole search a 400).
    typed = text.strip()
    tried: list[str] = []
    found: dict[str, dict[str, Any]] = {}
    holding: list[str] = []
    for name in sorted(strategy.id_types, key=str.lower):
        if strategy.namespace_of(name) in ("email", "cellphone"):
            continue  # a UUID is no email address, phone number or digest of one
        try:
            hits = service.search(org_id, None, {name: [typed]})
        except BadRequest:
            continue  # this idType does not take such a value
        tried.append(name)
        if hits:
            holding.append(name)
            found.update((h["ucid"], h) for h in hits)
    then = (
        f"then as idType {', '.join(holding)}: found"
        if holding
        else f"then as each of the org's ids ({', '.join(tried)}): no profile holds it either"
    )
    return Found(list(found.values()), ["as a ucid: no profile has this ucid", then])
