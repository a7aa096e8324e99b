"""Resolving components that touch nothing stored: in memory, in closed form or through the core.

A *simple* component (``simple_components``: every record after its first shares an id with an
earlier one, and no idType ever holds more distinct values than its limit) ends as one profile
that no write merged, refused or evicted anything from: its first record creates it, every later
one updates it. Its rows are computed in one pass (``closed_form``) without ``apply_write``: the
profile's ids (all seen at the import's one time), its attributes (``apply_upsert`` folded in file
order), and per record the change log entry, journal entry, consent ledger rows and event that
``apply_write`` would make. The other components' writes are applied in file order to an empty
``MemoryStorage`` by ``apply_write`` itself. Both use the import's one time and name the profile a
record creates by its place in the file (``UcidBlock``), so every profile, id, merge, change log
entry, journal entry and event is the one the online path makes (the equivalence gate,
``tests/test_bulk_equivalence.py``, checks it). The group's rows then go to the spools: memory
holds one group at a time.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from hashlib import blake2b
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from profilehub import collector
from profilehub.bulk.graph import CodeFile
from profilehub.bulk.spool import FRAME_BYTES, Spool
from profilehub.errors import ProfilehubError
from profilehub.identity.consent import CONSENT, consent_entries
from profilehub.identity.memory import MemoryStorage
from profilehub.identity.normalize import Identifier, Notice
from profilehub.identity.resolve import CATEGORIES, PreparedWrite, apply_upsert, apply_write
from profilehub.identity.storage import ProfileChange, ProfileState, ProfileStorage, WriteRecord
from profilehub.identity.strategy import Strategy
from profilehub.identity.ucid import UcidBlock
from profilehub.ingest.runner import over_id_limit
from profilehub.profiles import WriteResult
from profilehub.store.consent_ledger import entry_rows, ledger_rows
from profilehub.store.events import PROFILE_CREATED, PROFILE_UPDATED
from profilehub.store.journal_store import journal_row, unattached_rows


@dataclass
class Spools:
    """The rows of the writes resolved before the transaction writes them."""

    profiles: Spool
    ids: Spool
    changes: Spool
    journal: Spool  # journal rows with the write's file index in place of ``seq``
    events: Spool  # (file index, type, region, ts, entity_id, data JSON)
    ledger: Spool  # consent ledger rows with the write's file index in place of ``seq``
    # ``journal_unattached`` rows, numbered as the journal's: only replayed writes have any (a
    # closed-form component attaches every id of its writes)
    unattached: Spool

    @classmethod
    def open(cls, folder: Path, prefix: str, frame: int = FRAME_BYTES) -> Spools:
        """Each table's rows sorted as they stand, which is the table's key order (profiles,
        ids, journal and ledger rows lead with their primary key's columns; change log entries
        and events with their file index, which numbers them): the write merges the groups'
        spools, so every table is loaded in its key order, its B-tree filled page after page.
        ``frame``: the spools' frame size (``spool.frame_bytes`` of the groups merged)."""
        spools = [
            Spool(
                folder / f"{prefix}-{name}.rows",
                sort=True,
                key=SPOOL_KEYS.get(name),
                frame=frame,
            )
            for name in SPOOLED
        ]
        return cls(*spools)

    def all(self) -> list[Spool]:
        return [
            self.profiles,
            self.ids,
            self.changes,
            self.journal,
            self.events,
            self.ledger,
            self.unattached,
        ]

    def close(self) -> None:
        for spool in self.all():
            spool.close()

    def discard(self) -> None:
        for spool in self.all():
            spool.discard()


SPOOLED = ("profiles", "ids", "changes", "journal", "events", "ledger", "unattached")


def id_order(row: tuple[Any, ...]) -> str:
    """An id row's place in its spool: (region, idType, value) as one string, which sorts them
    as the rows themselves sort (one org; a NUL sorts below every other character) three to four
    times faster than comparing the rows column by column (measured: 0.26 s for 93,000 rows)."""
    return f"{row[1]}\x00{row[2]}\x00{row[3]}"


# The spooled tables sorted by a key of their rows rather than by the rows themselves: the
# spools sort by it and the write's merge compares it (a spool sent back from a worker process
# does not carry its key).
SPOOL_KEYS: dict[str, Callable[[tuple[Any, ...]], Any]] = {"ids": id_order}


def id_key(region: str, id_type: str, value: str) -> int:
    """A 64-bit key of an id in a region, by which the importer links records (``graph``) without
    keeping the ids themselves in memory. Two ids that share a key (for ten million distinct ids,
    about one chance in 400,000 that any pair does) only join two components into one, which
    resolves exactly all the same: ``closed_form`` is given a component only after ``is_simple``
    checked it with the ids themselves."""
    key = _KEY_STATE.copy()
    key.update(f"{region}\x00{id_type}\x00{value}".encode())
    return int.from_bytes(key.digest(), "little", signed=True)


# A fresh 8-byte BLAKE2b state, copied for each key: setting one up (``blake2b(data, digest_size=8)``)
# costs twice what copying it does, and a million records make some four million keys.
_KEY_STATE = blake2b(digest_size=8)


def key_state(region: str, id_type: str) -> blake2b:
    """The state ``id_key`` reaches before the value (BLAKE2b takes its input in pieces alike),
    for ``keyed``: a caller that makes many keys of one idType (``bulk.prepare``, some six a
    record) skips formatting and hashing their common start each time."""
    state = _KEY_STATE.copy()
    state.update(f"{region}\x00{id_type}\x00".encode())
    return state


def keyed(state: blake2b, value: str) -> int:
    """``id_key(region, id_type, value)``, given ``key_state(region, id_type)``."""
    key = state.copy()
    key.update(value.encode())
    return int.from_bytes(key.digest(), "little", signed=True)


def write_line(
    k: int,
    region: str,
    parts: Sequence[str],
    upsert: str,
    ucid: str | None,
    notices: Sequence[Notice] | None,
) -> bytes:
    """The k-th prepared write as one line of the importer's write files (``read_writes``)."""
    kept = [[n.code, n.message, n.field, n.detail] for n in notices] if notices else None
    return orjson.dumps([k, region, parts, orjson.Fragment(upsert), ucid, kept]) + b"\n"


# A write of a simple component as ``closed_form`` takes it: (file index, region, ids as (idType,
# value) tuples, upsert, notices, actor, source). Plain tuples: made and read once per record.
SimpleWrite = tuple[int, str, list[tuple[str, str]], dict[str, Any], list[Notice], str, str]
# The path every write of an import file comes by (``PreparedWrite.source``).
IMPORT_SOURCE = "import"


def read_group(
    path: Path, labels: Sequence[int], org_id: int, actor: str
) -> tuple[dict[int, list[SimpleWrite]], list[tuple[int, PreparedWrite]]]:
    """The writes of a group's file (``labels``: each one's simple component or -1), as
    ``resolve_group`` sorts them: those of each simple component (in file order, components in
    the order of their first write) and those replayed through ``apply_write`` (in file order)."""
    simple: dict[int, list[SimpleWrite]] = {}
    replay: list[tuple[int, PreparedWrite]] = []
    with path.open("rb") as f:
        for line, label in zip(f, labels, strict=True):
            k, region, parts, upsert, ucid, kept = orjson.loads(line)
            notices = [Notice(*n) for n in kept] if kept else []
            if label < 0:
                ids = [Identifier(parts[n], parts[n + 1]) for n in range(0, len(parts), 2)]
                write = PreparedWrite(org_id, region, ids, upsert, ucid, actor, notices, source=IMPORT_SOURCE)
                replay.append((k, write))
                continue
            pairs = list(zip(parts[::2], parts[1::2], strict=True))
            simple.setdefault(label, []).append((k, region, pairs, upsert, notices, actor, IMPORT_SOURCE))
    return simple, replay


def read_writes(path: Path, org_id: int, actor: str) -> Iterator[tuple[int, PreparedWrite]]:
    """(file index, write) of each line of a write file, in its order."""
    with path.open("rb") as f:
        for line in f:
            k, region, parts, upsert, ucid, kept = orjson.loads(line)
            yield (
                k,
                PreparedWrite(
                    org_id,
                    region,
                    [Identifier(parts[n], parts[n + 1]) for n in range(0, len(parts), 2)],
                    upsert,
                    ucid,
                    actor,
                    [Notice(*n) for n in kept] if kept else [],
                    source=IMPORT_SOURCE,
                ),
            )


def simple_components(
    offsets: NDArray[np.int64],
    flat: NDArray[np.integer[Any]] | CodeFile,
    label: NDArray[np.integer[Any]],
    id_label: NDArray[np.integer[Any]],
    id_type: NDArray[np.integer[Any]],
    limits: NDArray[np.int64],
    count: int,
) -> NDArray[np.bool_]:
    """Which of ``count`` components resolve in closed form: in file order, every write after the
    component's first shares an id with an earlier write of it (so it finds the one profile and
    merges nothing), and no idType has more distinct values in the component than its limit
    (``limits[t]``, for the idType coded ``t``; so no id is refused or evicted). ``flat``, ``offsets``
    as in ``graph.components`` (every code 0..len(id_label)-1 occurs in ``flat``; read a chunk of
    writes at a time, so it may be a ``graph.CodeFile``); ``id_type[code]``:
    the idType of each id, coded as ``limits``."""
    n = len(offsets) - 1
    simple = np.ones(count, dtype=bool)
    if n == 0:
        return simple
    # 32-bit where the numbers fit, a chunk of writes at a time and no sort of the ids: at ten
    # million records this step held 0.7 GB over its input with whole-file temporaries and
    # ``np.unique`` (measured on arrays of that size), a million records' worth of it before.
    small = np.int32 if max(n, len(flat), count) < 2**31 else np.int64
    counts = np.diff(offsets)
    ends = [*range(0, n, CHUNK_WRITES), n]
    # The first record holding each id (every code occurs in ``flat``, which runs in record order).
    first_record = np.full(len(id_label), n, dtype=small)
    for r, e in itertools.pairwise(ends):
        record_of = np.repeat(np.arange(r, e, dtype=small), counts[r:e])
        np.minimum.at(first_record, flat[offsets[r] : offsets[e]], record_of)
    seen_before = np.zeros(n, dtype=bool)
    for r, e in itertools.pairwise(ends):
        record_of = np.repeat(np.arange(r, e, dtype=small), counts[r:e])
        seen_before[record_of[first_record[flat[offsets[r] : offsets[e]]] < record_of]] = True
    del first_record, counts
    # Each component's first record.
    first_of: NDArray[np.integer[Any]] = np.full(count, n, dtype=small)
    np.minimum.at(first_of, label, np.arange(n, dtype=small))
    opens = np.zeros(n, dtype=bool)
    opens[first_of[first_of < n]] = True
    del first_of
    simple[label[~seen_before & ~opens]] = False
    del seen_before, opens
    # Distinct ids per (component, idType): each id code is one distinct value of one component.
    for t, limit in enumerate(limits.tolist()):
        per = np.bincount(id_label[id_type == t], minlength=count)
        simple[per > limit] = False
    return simple


# Writes handled at a time where a whole-file temporary would cost hundreds of MB at ten million.
CHUNK_WRITES = 1 << 20


def is_simple(strategy: Strategy, component: Iterable[Sequence[tuple[str, str]]]) -> bool:
    """``simple_components``' test on a component's ids themselves (it ran on their 64-bit keys):
    ``component``, each write's ids as (idType, value) in file order."""
    held: set[tuple[str, str]] = set()
    for n, ids in enumerate(component):
        if n and held.isdisjoint(ids):
            return False
        held.update(ids)
    per_type: dict[str, int] = {}
    for id_type, _ in held:
        per_type[id_type] = per_type.get(id_type, 0) + 1
    for id_type, count in per_type.items():
        rule = strategy.id_types.get(id_type)
        if rule is None or count > rule.max_per_profile:
            return False
    return True


def closed_form(
    strategy: Strategy,
    org_id: int,
    components: Sequence[Sequence[SimpleWrite]],
    at: int,
    block: UcidBlock,
    spools: Spools,
    journal: bool,
    ledger: bool = True,
) -> list[Sequence[SimpleWrite]]:
    """Spool the rows of simple components (``simple_components``), each one's writes in file
    order, as ``apply_write`` would make them at time ``at``: the first write creates the profile,
    each later one updates it, every id attaches (seen at ``at``), nothing merges or is evicted.
    Returns the components that are not simple after all (``is_simple``: their ids only shared
    64-bit keys), which made no rows.

    A group's rows are made table by table into lists and spooled at once. Per write, what is
    left is the upsert folded into the profile and the JSON of the event (the profile's ids as
    JSON made once per id set), of the change's detail (its fixed parts as text) and of the
    journal's ids and upsert."""
    stamp = str(at)
    # An idType's place in the profile view (``profiles.profile_view``: by ``Strategy.sort_key``,
    # then seen time, all ``at`` here, then value), its namespace there and its name: one str
    # object per idType and region in the rows, which sort and spool twice as fast so (measured).
    places = {t: (strategy.sort_key(t)[0], strategy.namespace_of(t), t) for t in strategy.id_types}
    limits = {t: rule.max_per_profile for t, rule in strategy.id_types.items()}
    regions: dict[str, tuple[str, str]] = {}  # region -> (itself, its detail's opening)
    type_lists: dict[tuple[str, ...], str] = {}  # a write's idTypes -> its detail's ``idTypes``
    profiles: list[tuple[Any, ...]] = []
    id_rows: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    changes: list[tuple[Any, ...]] = []
    journals: list[tuple[Any, ...]] = []
    ledgers: list[tuple[Any, ...]] = []
    not_simple: list[Sequence[SimpleWrite]] = []
    dumps, fragment = orjson.dumps, orjson.Fragment
    ucids = block.many([component[0][0] for component in components])
    for component, ucid in zip(components, ucids, strict=True):
        marks = (len(events), len(changes), len(journals), len(ledgers))
        first_region = component[0][1]
        known = regions.get(first_region)
        if known is None:
            known = regions[first_region] = (first_region, '{"region":' + dumps(first_region).decode())
        region, opening = known
        data: dict[str, dict[str, Any]] = {c: {} for c in CATEGORIES}
        # id -> (its place in the view, idType, value, namespace, its entry in the view)
        held: dict[tuple[str, str], tuple[int, str, str, str, dict[str, str]]] = {}
        view: dict[str, Any] = {"ucid": ucid, "region": region, "created_ts": at, "updated_ts": at}
        view.update(data)
        event = {"profile": view}
        simple = True
        for n, (k, _, ids, upsert, notices, actor, source) in enumerate(component):
            if n and held.keys().isdisjoint(ids):  # it would make a second profile
                simple = False
                break
            grew = False
            for ident in ids:
                if ident not in held:
                    id_type, value = ident
                    priority, namespace, id_type = places.get(id_type) or (1_000_000, id_type, id_type)
                    held[ident] = (priority, id_type, value, namespace, {id_type: value, "_ts": stamp})
                    grew = True
            if grew:  # the view's ids, as ``profiles.profile_view`` orders them
                ids_view: dict[str, list[Any]] = {}
                for _, _, _, namespace, entry in sorted(held.values()):
                    ids_view.setdefault(namespace, []).append(entry)
                ids_view["linkedUcid"] = []
                view["ids"] = fragment(dumps(ids_view))
            consent_before = dict(data[CONSENT]) if ledger and CONSENT in upsert else None
            apply_upsert(data, upsert, at)
            for category in upsert:
                if category in view:  # a cleared category is a new dict
                    view[category] = data[category]
            created = n == 0
            kind = PROFILE_CREATED if created else PROFILE_UPDATED
            events.append((k, kind, region, at, ucid, dumps(event).decode()))
            types = tuple([id_type for id_type, _ in ids])
            type_list = type_lists.get(types)
            if type_list is None:
                type_list = type_lists[types] = dumps(sorted(set(types))).decode()
            attributes = dumps({c: sorted(a) if a else None for c, a in upsert.items()}).decode()
            listed = dumps([notice.as_dict() for notice in notices]).decode() if notices else "[]"
            # ``orjson.dumps`` of the detail ``identity.resolve.apply_write`` records, as text
            detail = (
                f'{opening},"idTypes":{type_list},"attributes":{attributes},'
                f'"merged":[],"mergedVia":{{}},"notices":{listed}}}'
            )
            actor = actor[:100]
            action = "create" if created else "update"
            changes.append((k, org_id, at, actor, "profile", ucid, action, detail))
            if journal:
                # ``journal_row`` of the write: it named no ucid, merged and let go of nothing.
                ids_json, upsert_json = dumps(ids).decode(), dumps(upsert).decode()
                journals.append(
                    (org_id, ucid, k, at, region, actor, created, None, ids_json, upsert_json, "{}", None)
                )
            if consent_before is not None:
                consent = consent_entries(
                    consent_before, None, upsert[CONSENT], True, [], data[CONSENT], source
                )
                ledgers += entry_rows(org_id, ucid, k, at, actor, consent)
        if simple:
            per_type: dict[str, int] = {}
            for _, id_type, _, _, _ in held.values():
                per_type[id_type] = per_type.get(id_type, 0) + 1
            for id_type, count in per_type.items():
                if count > limits.get(id_type, 0):
                    simple = False
        if not simple:
            not_simple.append(component)
            del events[marks[0] :], changes[marks[1] :], journals[marks[2] :], ledgers[marks[3] :]
            continue
        profiles.append((org_id, ucid, region, at, at, None, dumps(data).decode()))
        id_rows += [(org_id, region, id_type, value, ucid, at) for _, id_type, value, _, _ in held.values()]
    spools.profiles.extend(profiles)
    spools.ids.extend(id_rows)
    spools.events.extend(events)
    spools.changes.extend(changes)
    spools.journal.extend(journals)
    spools.ledger.extend(ledgers)
    return not_simple


def worker_ready() -> None:
    """Nothing: submitted to a worker process to start it (and import this module) ahead of its
    first group."""


@dataclass
class Tally:
    """What resolving writes counted, as the online importer counts its records: profiles created,
    updated, and writes that left ids unattached over a profile's limit (``over_id_limit``)."""

    created: int = 0
    updated: int = 0
    over_id_limit: int = 0

    def add(self, result: WriteResult) -> None:
        if result.created:
            self.created += 1
        else:
            self.updated += 1
        self.over_id_limit += over_id_limit(result)


def resolve_payload(
    strategy: Strategy,
    org_id: int,
    actor: str,
    writes: str,
    closed: NDArray[np.integer[Any]],
    at: int,
    block: UcidBlock,
    folder: str,
    prefix: str,
    journal: bool,
    ledger: bool = True,
    frame: int = FRAME_BYTES,
) -> tuple[Tally, Spools] | None:
    """``resolve_file`` in a worker process, into spools of its own (closed, returned with the
    counts); None when a write was refused (the group then replays against the store)."""
    spools = Spools.open(Path(folder), prefix, frame)
    try:
        tally = resolve_file(
            strategy, org_id, actor, Path(writes), closed, at, block, spools, journal, lambda: None, ledger
        )
    except Refused:
        spools.discard()
        return None
    spools.close()
    return tally, spools


class Refused(Exception):
    """A write of a group was refused while it applied: the group goes to the in-transaction path,
    which handles refusals as the online writer does."""


def resolve_file(
    strategy: Strategy,
    org_id: int,
    actor: str,
    writes: Path,
    closed: NDArray[np.integer[Any]],
    at: int,
    block: UcidBlock,
    spools: Spools,
    journal: bool,
    stop: Callable[[], None],
    ledger: bool = True,
) -> Tally:
    """``resolve_group`` on the writes of file ``writes`` (``closed``: each one's simple component
    or -1), read straight into the form each way of resolving takes; ``spools`` closed after."""
    with collector.paused():
        simple, replay = read_group(writes, closed.tolist(), org_id, actor)
        tally = _resolve(strategy, org_id, simple, replay, at, block, spools, journal, stop, ledger)
        del simple, replay
        spools.close()
    return tally


def resolve_group(
    strategy: Strategy,
    org_id: int,
    group: Sequence[tuple[int, int, PreparedWrite]],
    at: int,
    block: UcidBlock,
    spools: Spools,
    journal: bool,
    stop: Callable[[], None],
    ledger: bool = True,
) -> Tally:
    """Resolve ``group`` ((file index, simple component or -1, write), in file order) in memory;
    spool its rows. Returns what it counted."""
    simple: dict[int, list[SimpleWrite]] = {}
    replay: list[tuple[int, PreparedWrite]] = []
    for k, label, w in group:
        if label >= 0:
            pairs = [(i.id_type, i.value) for i in w.ids]
            simple.setdefault(label, []).append((k, w.region, pairs, w.upsert, w.notices, w.actor, w.source))
        else:
            replay.append((k, w))
    return _resolve(strategy, org_id, simple, replay, at, block, spools, journal, stop, ledger)


# Simple components made into rows at a time (between two checks for Ctrl-C).
CLOSED_AT_ONCE = 1000


def _resolve(
    strategy: Strategy,
    org_id: int,
    simple: dict[int, list[SimpleWrite]],
    replay: list[tuple[int, PreparedWrite]],
    at: int,
    block: UcidBlock,
    spools: Spools,
    journal: bool,
    stop: Callable[[], None],
    ledger: bool,
) -> Tally:
    tally = Tally()
    components = list(simple.values())
    for start in range(0, len(components), CLOSED_AT_ONCE):
        stop()
        part = components[start : start + CLOSED_AT_ONCE]
        # Ids that share a key made some look simple: replayed (components are independent, so
        # their writes may follow the others').
        again = closed_form(strategy, org_id, part, at, block, spools, journal, ledger)
        if again:
            part = [component for component in part if all(component is not a for a in again)]
        for component in again:
            replay += [
                (k, PreparedWrite(org_id, r, [Identifier(*i) for i in ids], u, None, a, notices, source=s))
                for k, r, ids, u, notices, a, s in component
            ]
        # A simple component's first write creates its profile, the others update it; none
        # meets an idType's limit (``simple_components``), so none leaves an id over it.
        tally.created += len(part)
        tally.updated += sum(len(component) for component in part) - len(part)
    storage = MemoryStorage()
    events: list[tuple[object, ...]] = []
    for n, (index, write) in enumerate(replay):
        if n % 1000 == 0:
            stop()
        try:
            outcome = apply_write(storage, strategy, write, at, new_ucid=partial(block, index))
        except ProfilehubError as exc:
            raise Refused(exc.message) from exc
        result = WriteResult(strategy, outcome)
        tally.add(result)
        e = result.event(org_id)
        events.append((index, e.type, e.region, e.ts, e.entity_id, orjson.dumps(e.data).decode()))
    # A refused write leaves the group's spools to be discarded (the group replays in the store).
    for event in events:
        spools.events.append(event)
    spool_log(spools, [k for k, _ in replay], storage.changes, storage.writes, journal, ledger)
    for (o, ucid), p in storage.profiles.items():
        spools.profiles.append(
            (o, ucid, p.region, p.created_ts, p.updated_ts, p.merged_into, orjson.dumps(p.data).decode())
        )
    for (o, region, ident), (ucid, ts) in storage.owners.items():
        spools.ids.append((o, region, ident.id_type, ident.value, ucid, ts))
    return tally


def spool_log(
    spools: Spools,
    indices: Sequence[int],
    changes: Sequence[ProfileChange],
    writes: Sequence[WriteRecord],
    journal: bool,
    ledger: bool = True,
) -> None:
    """The change log, journal and consent ledger entries of writes ``indices`` (one each, in that
    order), keyed by the write's file index: the write numbers them (change id, journal ``seq``,
    which the ledger rows share) in file order."""
    for k, c in zip(indices, changes, strict=True):
        detail = orjson.dumps(c.detail or {}).decode()
        spools.changes.append((k, c.org_id, c.ts, c.actor[:100], "profile", c.ucid, c.action, detail))
    if journal:
        for k, record in zip(indices, writes, strict=True):
            spools.journal.append(journal_row(record, k))
            for row in unattached_rows(record, k):
                spools.unattached.append(row)
    if ledger:
        for k, record in zip(indices, writes, strict=True):
            for entry in ledger_rows(record, k):
                spools.ledger.append(entry)


class Recorded:
    """A ``ProfileStorage`` that passes everything to ``inner`` but keeps the change log and journal
    entries for the bulk import to number and write itself (see ``spool_log``)."""

    def __init__(self, inner: ProfileStorage) -> None:
        self.inner = inner
        self.changes: list[ProfileChange] = []
        self.writes: list[WriteRecord] = []

    def find_owners(self, org_id: int, region: str, ids: Iterable[Identifier]) -> dict[Identifier, str]:
        return self.inner.find_owners(org_id, region, ids)

    def resolve_ucids(self, org_id: int, ucids: Iterable[str]) -> dict[str, tuple[str, str]]:
        return self.inner.resolve_ucids(org_id, ucids)

    def load_profiles(self, org_id: int, ucids: Iterable[str]) -> dict[str, ProfileState]:
        return self.inner.load_profiles(org_id, ucids)

    def linked_ucids(self, org_id: int, masters: Iterable[str]) -> dict[str, list[str]]:
        return self.inner.linked_ucids(org_id, masters)

    def ids_of_type(self, org_id: int, masters: Iterable[str], id_type: str) -> dict[str, list[str]]:
        return self.inner.ids_of_type(org_id, masters, id_type)

    def insert_profile(self, org_id: int, state: ProfileState) -> None:
        self.inner.insert_profile(org_id, state)

    def update_profile(self, org_id: int, state: ProfileState) -> None:
        self.inner.update_profile(org_id, state)

    def mark_merged(self, org_id: int, merged: list[str], master: str, now_ms: int) -> None:
        self.inner.mark_merged(org_id, merged, master, now_ms)

    def insert_ids(self, org_id: int, region: str, ucid: str, ids: dict[Identifier, int]) -> None:
        self.inner.insert_ids(org_id, region, ucid, ids)

    def delete_ids(self, org_id: int, region: str, ids: Iterable[Identifier]) -> None:
        self.inner.delete_ids(org_id, region, ids)

    def touch_ids(self, org_id: int, region: str, ids: Iterable[Identifier], ts: int) -> None:
        self.inner.touch_ids(org_id, region, ids, ts)

    def record_change(self, change: ProfileChange) -> None:
        self.changes.append(change)

    def record_write(self, record: WriteRecord) -> None:
        self.writes.append(record)
