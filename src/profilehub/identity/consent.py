"""Consent on merge: a denial on either side wins over a grant (docs/identity.md, docs/privacy.md).

Two profiles merging are two records that may be one person. When one of them says "no" to a
consent attribute and the other "yes", the newer side used to win, so a device id linking an old
"no" to a fresh "yes" turned the person's refusal into consent. Here a denial is kept, whichever
side is newer, and the write's answer says so (notice ``consent_kept_denied``). A write to one
profile (no merge) still replaces its consent: that is the person's latest word.

Pure rules on plain values; which values deny is the org's list (``Strategy.consent_denials``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from profilehub.errors import BadRequest

CONSENT = "consent"
# The source of ledger entries a merge made (the kept denials, the values a merged profile brought).
MERGE = "merge"
DEFAULT_CONSENT_DENIALS: tuple[str, ...] = (
    "no",
    "false",
    "0",
    "n",
    "denied",
    "optout",
    "opt-out",
    "unsubscribed",
)
MAX_DENIAL_VALUES = 100
MAX_DENIAL_LENGTH = 100


def consent_text(value: Any) -> str | None:
    """The text a consent value is compared as: booleans as ``true``/``false``, whole numbers as
    digits (``0.0`` is ``0``), strings trimmed and lower-cased; None for a list or an object, which
    never deny."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return value.strip().lower()
    return None


def is_denial(value: Any, denials: frozenset[str]) -> bool:
    text = consent_text(value)
    return text is not None and text in denials


def check_denial_values(values: Iterable[str], field: str = "value") -> frozenset[str]:
    """An org's denial values as stored (trimmed, lower-cased); refuses empty or oversized ones."""
    out: set[str] = set()
    for raw in values:
        text = raw.strip().lower()
        if not text:
            raise BadRequest("a denial value cannot be empty", field=field)
        if len(text) > MAX_DENIAL_LENGTH:
            raise BadRequest(f"denial values are at most {MAX_DENIAL_LENGTH} characters", field=field)
        out.add(text)
    if len(out) > MAX_DENIAL_VALUES:
        raise BadRequest(f"at most {MAX_DENIAL_VALUES} denial values", field=field)
    return frozenset(out)


def merge_consent(
    mine: dict[str, Any], theirs: dict[str, Any], theirs_newer: bool, denials: frozenset[str]
) -> tuple[dict[str, Any], list[str]]:
    """The consent category of two merging profiles, and the attributes whose denial was kept over
    a newer grant.

    As for every category, the newer side (``theirs_newer``; a tie goes to ``mine``, the master)
    wins clashes, except that where exactly one side denies, the denial wins.
    """
    merged = {**mine, **theirs} if theirs_newer else {**theirs, **mine}
    kept: list[str] = []
    for name in sorted(mine.keys() & theirs.keys()):
        if name == "_ts":
            continue
        winner, loser = (theirs[name], mine[name]) if theirs_newer else (mine[name], theirs[name])
        if is_denial(loser, denials) and not is_denial(winner, denials):
            merged[name] = loser
            kept.append(name)
    return merged, kept


def keep_denials(
    before: dict[str, Any], after: dict[str, Any], written: dict[str, Any] | None, denials: frozenset[str]
) -> list[str]:
    """A merging write's own grants do not lift a denial the merged profiles held: put back, in
    ``after`` (the category once the write applied), each denial of ``before`` that one of the
    write's grants replaced; the attributes kept. Removing an attribute (null) still removes it."""
    kept: list[str] = []
    for name, value in (written or {}).items():
        if value is None or name not in before or is_denial(value, denials):
            continue
        if is_denial(before[name], denials):
            after[name] = before[name]
            kept.append(name)
    return kept


class ConsentEntry(NamedTuple):
    """One value a write put in a profile's consent, as the ledger keeps it (docs/privacy.md)."""

    attribute: str
    value: Any  # None: the attribute was removed
    source: str  # the write's path (api, bulk, import, crm...), or ``merge``


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def consent_entries(
    before: dict[str, Any],
    merged: dict[str, Any] | None,
    written: dict[str, Any] | None,
    written_given: bool,
    kept: Iterable[str],
    final: dict[str, Any],
    source: str,
) -> list[ConsentEntry]:
    """What one write did to its master's consent, in order, so that folding a profile's entries
    (``consent_as_of``) gives its consent: the values a merge brought or kept (``merged``: the
    category after the merges, None when nothing merged), then every value the write sent (a
    cleared category removes each attribute), then the denials kept over the write's own grants.
    ``before`` is the master's consent before the write."""
    out: list[ConsentEntry] = []
    if merged is not None:
        for name in sorted(merged):
            if name != "_ts" and (name not in before or not _same(before[name], merged[name])):
                out.append(ConsentEntry(name, merged[name], MERGE))
    current = merged if merged is not None else before
    if written_given and written is None:
        out += [ConsentEntry(name, None, source) for name in sorted(current) if name != "_ts"]
    for name, value in (written or {}).items():
        out.append(ConsentEntry(name, value, source))
    out += [ConsentEntry(name, final[name], MERGE) for name in sorted(kept) if name in final]
    return out


def consent_as_of(entries: Sequence[ConsentEntry]) -> dict[str, Any]:
    """A profile's consent from its ledger entries, oldest first."""
    state: dict[str, Any] = {}
    for e in entries:
        if e.value is None:
            state.pop(e.attribute, None)
        else:
            state[e.attribute] = e.value
    return state
