"""Preparing the bulk path's records: exactly what the online importer makes of each
(``profile_write``, then ``prepare_write``), worked out value by value.

A file of a million records carries some three million id values; their normalising and hashing
(eight hashes a raw email or phone number, ``phonenumbers`` for a phone), the request model and
the ids' keys are most of what preparing costs. Here:

- A record of the plain shape (``orgId``, ``region``, ``ids`` and ``upsert`` only, ids given as
  text, attribute values of JSON's simple kinds) is checked by a few type tests instead of the
  request model; anything else goes through ``profile_write`` and ``prepare_write`` themselves.
- Each (idType, value, region) is normalised as ``normalise_ids`` does it for that id alone (for
  the usual cases directly: a plain idType's value, a raw email's or phone's family of hashes),
  its ids' keys computed with it, and the result kept in a small memo. A record's ids are the
  union of its values' ids, sorted, when that is what ``normalise_ids`` gives for the whole
  record: no two values yield the same idType, and every value either yields ids with no notice
  or is dropped whole (blocked, suppressed) with the one notice the whole record's call gives
  first. A value that does anything else (a disabled idType, a derived id overridden by one given,
  a suppression to check against) goes through ``normalise_ids`` alone, and if even that is not
  the whole record's answer, its record goes through ``prepare_write``.

So a refused record is refused by the online functions, word for word, and a written one carries
the same ids, notices and upsert (``tests/test_bulk_prepare.py`` compares both ways).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any, Literal

import orjson

from profilehub.bulk.resolve import id_key, key_state, keyed, write_line
from profilehub.errors import ProfilehubError
from profilehub.identity.normalize import (
    MAX_ID_LENGTH,
    Notice,
    email_hashes,
    normalise_ids,
    normalise_value,
    phone_hashes,
)
from profilehub.identity.resolve import CATEGORIES, PreparedWrite
from profilehub.identity.strategy import CRM_PERSON_ID, IdClass, Strategy
from profilehub.identity.suppression import ID_SUPPRESSED
from profilehub.ingest.cdp import profile_write
from profilehub.ingest.reader import parse_ndjson
from profilehub.profiles import MAX_ATTRIBUTE_NAME, prepare_write

# region, ids (idType, value, ...), upsert JSON, ucid, notices, the ids' keys (``id_key``) and
# idTypes (coded by the strategy's idTypes sorted by name)
Compact = tuple[str, tuple[str, ...], str, str | None, list[Notice] | None, tuple[int, ...], tuple[int, ...]]

# Distinct values kept normalised per process (~600 bytes each, ~10 MB in all); when full it
# starts again. Small on purpose: a backfill's values repeat at random distances, so a larger memo
# gained nothing measurable (16k and 131k entries: the same CPU a record on the benchmark's
# records) and would add to every process's peak memory.
MEMO_VALUES = 1 << 14
_PLAIN_KEYS = frozenset(("orgId", "region", "ids", "upsert"))
_RAW_TYPES = ("email", "cellphone")  # the idTypes whose value is dropped whole (blocked, suppressed)
_INT_MIN, _INT_END = -(2**63), 2**64  # as ``profiles._check_attribute_value``

# A value's ids, in sort order: the first's and last's sort keys (``Strategy.sort_key``), then as
# ``Compact`` has them (idType, value, ...), their keys and their idTypes' codes
_Ids = tuple[tuple[int, str], tuple[int, str], tuple[str, ...], tuple[int, ...], tuple[int, ...]]
# What the memo keeps of a value: its ids; the notice dropping it whole; or ``_FALLBACK``, for a
# value that sends the record carrying it through ``prepare_write``
_Entry = _Ids | Notice | tuple[()]
SortKey = tuple[int, str]  # ``Strategy.sort_key``
# An id of a raw email's or phone's family: its idType, code, blocked values and ``key_state``
_Member = tuple[str, int, frozenset[str], blake2b]
_FALLBACK: tuple[()] = ()


def compact(w: PreparedWrite, type_code: dict[str, int]) -> Compact:
    """A prepared write in the form that pickles and keeps small."""
    unknown = len(type_code)
    parts = tuple(part for i in w.ids for part in i)
    keys = tuple(id_key(w.region, i.id_type, i.value) for i in w.ids)
    types = tuple(type_code.get(i.id_type, unknown) for i in w.ids)
    # As text: orjson's bytes keep their whole working buffer (~4 KB each, measured), a str made
    # from them is exactly its size.
    return (w.region, parts, orjson.dumps(w.upsert).decode(), w.ucid, w.notices or None, keys, types)


class Preparer:
    """Prepares the records of one import (one org, strategy, default region and actor)."""

    def __init__(self, strategy: Strategy, org_id: int, region: str, actor: str) -> None:
        self.strategy = strategy
        self.org_id = org_id
        self.region = region
        self.actor = actor
        self.type_code = {name: t for t, name in enumerate(sorted(strategy.id_types))}
        self._memo: dict[tuple[str, str, str], _Entry] = {}
        self._regions: dict[str, str | None] = {}
        self._names: set[str] = set()
        self._suppressing_in: dict[str, bool] = {}
        # (region, idType) -> ``resolve.key_state``: each key a copy of it, not of ``id_key``'s text
        self._key_states: dict[tuple[str, str], blake2b] = {}
        # The ids a raw email or phone number yields where none is disabled (``normalise_ids``
        # refuses those with a notice): its derived idTypes the org has, and itself where the org
        # keeps raw ids, in sort order.
        hashed = {"email": email_hashes("a@b.c"), "cellphone": phone_hashes("+1")}
        self._families: dict[str, list[str]] = {}
        for raw_type, derived in hashed.items():
            family = [t for t in [*derived, raw_type] if t in strategy.id_types]
            if not strategy.keep_raw_ids:
                family = [t for t in family if t != raw_type]
            if all(strategy.id_types[t].id_class is not IdClass.DISABLED for t in family):
                self._families[raw_type] = sorted(family, key=strategy.sort_key)
        # (region, raw idType) -> its family's first and last sort keys and, for each of its ids,
        # its idType, code, blocked values (``Strategy.blocked_values``) and ``key_state``
        self._family_rules: dict[tuple[str, str], tuple[SortKey, SortKey, list[_Member]]] = {}
        # idTypes whose value normalises alone (no raw email or phone, not disabled)
        self._plain_types = {
            name
            for name, rule in strategy.id_types.items()
            if name not in _RAW_TYPES and name != CRM_PERSON_ID and rule.id_class is not IdClass.DISABLED
        }

    def prepare(self, record: dict[str, Any]) -> Compact | ProfilehubError:
        """The record as ``prepare_write`` makes it (``compact``), or the error refusing it."""
        fast = self._plain(record)
        if fast is not None:
            return fast
        try:
            w = prepare_write(self.strategy, profile_write(record, self.org_id, self.region), self.actor)
        except ProfilehubError as exc:
            return exc
        return compact(w, self.type_code)

    # --- the plain shape ---
    def _plain(self, record: dict[str, Any]) -> Compact | None:
        if not record.keys() <= _PLAIN_KEYS:
            return None
        org = record.get("orgId", self.org_id)
        if type(org) is not int or org != self.org_id:
            return None
        given = record.get("region", self.region)
        if type(given) is not str:
            return None
        region = self._regions.get(given, "")
        if region == "":
            region = self._regions[given] = self._region(given)
        if region is None:
            return None
        ids = record.get("ids")
        upsert = record.get("upsert")
        if type(ids) is not dict or not ids or type(upsert) is not dict or CRM_PERSON_ID in ids:
            return None
        if not self._plain_upsert(upsert):
            return None
        memo = self._memo
        kept: list[_Ids] = []
        notices: list[Notice] | None = None
        for id_type, raw in ids.items():
            if type(raw) is not str:
                return None
            key = (id_type, raw, region)
            entry = memo.get(key)
            if entry is None:
                if len(memo) >= MEMO_VALUES:
                    memo.clear()
                entry = memo[key] = self._entry(id_type, raw, region)
            if type(entry) is Notice:
                notices = [entry] if notices is None else [*notices, entry]
            elif entry:
                kept.append(entry)  # type: ignore[arg-type]
            else:
                return None  # a value only ``normalise_ids`` with the whole record reads right
        if not kept:
            return None  # refused: ``prepare_write`` says why
        first = kept[0]
        parts, keys, types = first[2], first[3], first[4]
        if len(kept) > 1:
            # The values' ids in sort order, each value's already sorted: in order of their first
            # sort keys, when no value's ids sort between another's (then no two share an idType).
            if not _ordered(kept):
                kept.sort()
                if not _ordered(kept):
                    return None  # two values yield one idType: ``normalise_ids`` decides which
                first = kept[0]
                parts, keys, types = first[2], first[3], first[4]
            for e in kept[1:]:
                parts += e[2]
                keys += e[3]
                types += e[4]
        try:
            upsert_json = orjson.dumps(upsert).decode()
        except orjson.JSONEncodeError:
            return None
        return (region, parts, upsert_json, None, notices, keys, types)

    def _region(self, given: str) -> str | None:
        # the request model takes 1 to 16 characters; ``check_region`` then names the org's
        if not 1 <= len(given) <= 16 or not given.isascii():
            return None
        wanted = given.strip().upper()
        return wanted if wanted in self.strategy.regions else None

    def _plain_upsert(self, upsert: dict[str, Any]) -> bool:
        """Whether ``prepare_upsert`` takes ``upsert`` as it is (a False sends the record through
        it, to be refused in its words or taken after all)."""
        names = self._names
        for category, attrs in upsert.items():
            if category not in CATEGORIES:
                return False
            if attrs is None:
                continue
            if type(attrs) is not dict:
                return False
            for name, value in attrs.items():
                if name not in names:
                    if not (
                        0 < len(name) <= MAX_ATTRIBUTE_NAME
                        and name.isascii()
                        and "\x00" not in name
                        and not name.startswith("_")
                    ):
                        return False
                    if len(names) < 10_000:
                        names.add(name)
                kind = type(value)
                if kind is str:
                    if "\x00" in value or not value.isascii():
                        return False
                elif kind is int:
                    if not _INT_MIN <= value < _INT_END:
                        return False
                elif kind is float:
                    if not math.isfinite(value):
                        return False
                elif value is not None and kind is not bool:
                    return False
        return True

    # --- one value ---
    def _entry(self, id_type: str, raw: str, region: str) -> _Entry:
        strategy = self.strategy
        suppressing = self._suppressing_in.get(region)
        if suppressing is None:
            suppressing = self._suppressing(region)
        plain = len(raw) <= MAX_ID_LENGTH and raw.isascii() and "\x00" not in raw and not suppressing
        if plain and id_type in self._plain_types:
            # ``normalise_ids`` of this id alone, when it is neither blocked nor suppressed
            value = normalise_value(strategy, id_type, raw, f"ids.{id_type}", region)
            if not strategy.is_blocked(id_type, value):
                sort_key = strategy.sort_key(id_type)
                code = self.type_code[id_type]
                return (sort_key, sort_key, (id_type, value), (self._key(region, id_type, value),), (code,))
        elif plain and id_type in _RAW_TYPES and id_type in strategy.id_types:
            derived = self._derived(id_type, raw, region)
            if derived is not False:
                return derived
        try:
            ids, notices = normalise_ids(strategy, {id_type: raw}, region, suppression=strategy.suppression)
        except ProfilehubError:
            return _FALLBACK
        if notices:
            # Dropped whole: the one notice the value makes, the same in any record (a notice on
            # one of its derived ids would come after other values' notices in a record).
            notice = notices[0]
            whole = notice.field == f"ids.{id_type}" and (
                notice.code == "blocked" or (notice.code == ID_SUPPRESSED and id_type in _RAW_TYPES)
            )
            return notice if whole and not ids and len(notices) == 1 else _FALLBACK
        return self._ids(ids, region) if ids else _FALLBACK

    def _derived(self, id_type: str, raw: str, region: str) -> _Entry | Literal[False]:
        """``normalise_ids`` of a raw email or phone number alone, nothing suppressed, when it
        makes no notice (False: when it may, or refuses the value)."""
        strategy = self.strategy
        family = self._families.get(id_type)
        if family is None or strategy.is_blocked(id_type, raw.strip()):
            return False
        try:
            value = normalise_value(strategy, id_type, raw, f"ids.{id_type}", region)
        except ProfilehubError:
            return _FALLBACK
        if strategy.is_blocked(id_type, value):
            return False
        if not family:
            return _FALLBACK
        rules = self._family_rules.get((region, id_type))
        if rules is None:
            rules = self._family_rules[region, id_type] = (
                strategy.sort_key(family[0]),
                strategy.sort_key(family[-1]),
                [(t, self.type_code[t], strategy.blocked_values(t), key_state(region, t)) for t in family],
            )
        derived = email_hashes(value) if id_type == "email" else phone_hashes(value)
        first, last, members = rules
        parts: list[str] = []
        keys: list[int] = []
        types: list[int] = []
        for t, code, blocked, state in members:
            if t == id_type:  # kept where the org keeps raw ids; not blocked (checked above)
                v = value
            else:
                v = derived[t]
                # ``is_blocked``: a hex digest is its own ``lower()``
                if v in blocked:
                    return False
            parts += (t, v)
            keys.append(keyed(state, v))
            types.append(code)
        return (first, last, tuple(parts), tuple(keys), tuple(types))

    def _key(self, region: str, id_type: str, value: str) -> int:
        """``id_key(region, id_type, value)``."""
        state = self._key_states.get((region, id_type))
        if state is None:
            state = self._key_states[region, id_type] = key_state(region, id_type)
        return keyed(state, value)

    def _suppressing(self, region: str) -> bool:
        suppressing = self._suppressing_in.get(region)
        if suppressing is None:
            suppression = self.strategy.suppression
            suppressing = self._suppressing_in[region] = suppression is not None and suppression.active(
                region
            )
        return suppressing

    def _ids(self, ids: Sequence[tuple[str, str]], region: str) -> _Ids:
        """A value's ids (in sort order, as ``normalise_ids`` gives them) as the memo keeps them."""
        unknown = len(self.type_code)
        sort_key = self.strategy.sort_key
        parts: list[str] = []
        keys: list[int] = []
        types: list[int] = []
        for id_type, value in ids:
            parts += (id_type, value)
            keys.append(self._key(region, id_type, value))
            types.append(self.type_code.get(id_type, unknown))
        return (sort_key(ids[0][0]), sort_key(ids[-1][0]), tuple(parts), tuple(keys), tuple(types))


@dataclass
class PreparedChunk:
    """A chunk of records prepared, in the form that crosses from a worker process cheaply: the
    written records' lines of the importer's writes file without their leading ``[k,`` (their
    index in the file is known only once the chunk is taken, in order) and their ids' keys, codes
    and counts as raw arrays; by the record's place in the chunk, the refused ones (an unreadable
    line's message, or None where the importer read the line), the ucids named and the written
    records that carried a suppressed id."""

    bodies: list[bytes] = field(default_factory=list)
    keys: array[int] = field(default_factory=lambda: array("q"))
    types: array[int] = field(default_factory=lambda: array("q"))
    counts: array[int] = field(default_factory=lambda: array("q"))
    regions: set[str] = field(default_factory=set)
    refused: dict[int, ProfilehubError | str | None] = field(default_factory=dict)
    ucids: dict[int, str] = field(default_factory=dict)
    suppressed: list[int] = field(default_factory=list)


def _ordered(kept: list[_Ids]) -> bool:
    last = kept[0][1]
    for e in kept[1:]:
        if last >= e[0]:
            return False
        last = e[1]
    return True


_current: tuple[object, Preparer] | None = None


def prepare_chunk(
    token: object,
    strategy: Strategy,
    org_id: int,
    region: str,
    actor: str,
    records: Sequence[dict[str, Any] | None],
) -> PreparedChunk:
    """``records`` prepared (``Preparer.prepare``); None for an unreadable line. ``token`` names the
    import: a process keeps one ``Preparer`` (and its memo) for all the chunks of one import."""
    return _prepared(_preparer(token, strategy, org_id, region, actor), records, {})


def prepare_lines(
    token: object,
    strategy: Strategy,
    org_id: int,
    region: str,
    actor: str,
    numbers: Sequence[int],
    texts: Sequence[bytes],
    too_large: Mapping[int, str] | None = None,
) -> PreparedChunk:
    """``prepare_chunk`` of NDJSON lines as ``ingest.reader.ndjson_lines`` gives them (their
    numbers and text, and why those over the API's body limit are refused, by place), read here as
    ``read_ndjson`` reads them: the importer only splits the file into lines. An unreadable line
    is refused with ``read_ndjson``'s message."""
    records: list[dict[str, Any] | None] = []
    unreadable: dict[int, str] = {}
    for n, (number, text) in enumerate(zip(numbers, texts, strict=True)):
        refused = too_large.get(n) if too_large else None
        data, error = (None, refused) if refused else parse_ndjson(number, text)
        records.append(data)
        if error is not None:
            unreadable[n] = error
    return _prepared(_preparer(token, strategy, org_id, region, actor), records, unreadable)


def _preparer(token: object, strategy: Strategy, org_id: int, region: str, actor: str) -> Preparer:
    global _current
    if _current is None or _current[0] != token:
        _current = (token, Preparer(strategy, org_id, region, actor))
    return _current[1]


def _prepared(
    preparer: Preparer, records: Sequence[dict[str, Any] | None], unreadable: dict[int, str]
) -> PreparedChunk:
    out = PreparedChunk()
    bodies = out.bodies
    for n, record in enumerate(records):
        item = None if record is None else preparer.prepare(record)
        if item is None or isinstance(item, ProfilehubError):
            out.refused[n] = unreadable.get(n) if item is None else item
            continue
        region_, parts, upsert, ucid, notices, keys, types = item
        # ``write_line`` for index 0 is ``[0,`` and the line's body
        bodies.append(write_line(0, region_, parts, upsert, ucid, notices)[3:-1])
        out.keys.extend(keys)
        out.types.extend(types)
        out.counts.append(len(keys))
        out.regions.add(region_)
        if ucid is not None:
            out.ucids[n] = ucid
        if notices and any(x.code == ID_SUPPRESSED for x in notices):
            out.suppressed.append(n)
    return out
