"""The profile service: the one write path, search and erasure. Knows nothing of HTTP.

A single write is a batch of one: the CDP endpoint, the bulk endpoint and the importer all call
``write_batch``, which runs the whole batch in order inside one writer transaction, so a batch
resolves exactly as the same records sent one by one.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

import orjson
from sqlalchemy.engine import Connection

from profilehub.crm.erasure import erase_people, lock_people
from profilehub.errors import BadRequest, NotFound, ProfilehubError, Suppressed, each_or_error, printable_key
from profilehub.idempotency import forget_answers, forget_answers_until
from profilehub.identity.normalize import Identifier, Notice, coerce_id_value, normalise_ids
from profilehub.identity.resolve import CATEGORIES, PreparedWrite, WriteOutcome, apply_write
from profilehub.identity.storage import ProfileReader, ProfileState
from profilehub.identity.strategy import CRM_PERSON_ID, IdClass, Strategy
from profilehub.identity.suppression import ID_SUPPRESSED
from profilehub.store.batch_store import BatchStore
from profilehub.store.changes import change_row, now_ms, record
from profilehub.store.database import Database, GroupJob, lock_scope, savepoint
from profilehub.store.events import (
    ERASURE_NOTIFICATION_REQUESTED,
    PROFILE_CREATED,
    PROFILE_ERASED,
    PROFILE_MERGED,
    PROFILE_UPDATED,
    EventRow,
    append_events,
    forget_events,
    forget_events_until,
)
from profilehub.store.journal_store import JournalPruner, scrub_unattached
from profilehub.store.profile_storage import profile_storage
from profilehub.store.profile_store import delete_profiles
from profilehub.store.receipt_store import ReceiptKeys, erasure_counts, issue_receipt
from profilehub.store.strategy_store import StrategyCache
from profilehub.store.unmerge_history import ids_held, parted_from, scrub_parted_journals
from profilehub.suppression import suppress_erased, unsuppress_ids

MAX_ATTRIBUTE_NAME = 200
MAX_SEARCH_VALUES = 1000
MAX_DELETE_VALUES = 400


@dataclass
class ProfileWrite:
    """One write in dialect-neutral form, as the CDP body carries it."""

    org_id: int
    region: str
    ids: dict[str, Any] = field(default_factory=dict)
    upsert: dict[str, Any] = field(default_factory=dict)
    ucid: str | None = None
    # The path it came by, kept in the consent ledger: api, bulk, import (crm and unmerge are
    # the identity writes of those services).
    source: str = "api"


class WriteResult:
    """One written profile. The answer's view is built when first read: an import never reads it."""

    def __init__(self, strategy: Strategy, outcome: WriteOutcome) -> None:
        self._strategy = strategy
        self._outcome = outcome
        self.created = outcome.created
        self.notices = [n.as_dict() for n in outcome.notices]
        self.merges = len(outcome.merged)
        self.merges_refused = sum(1 for n in outcome.notices if n.code == "merge_refused")

    @cached_property
    def profile(self) -> dict[str, Any]:
        return profile_view(self._strategy, self._outcome.master, self._outcome.linked)

    def event(self, org_id: int) -> EventRow:
        """The change event of this write: ``data.profile`` is the answer's profile."""
        o = self._outcome
        data: dict[str, Any] = {"profile": self.profile}
        if o.merged:
            data["mergedUcids"] = list(o.merged)
        kind = PROFILE_CREATED if o.created else PROFILE_MERGED if o.merged else PROFILE_UPDATED
        return EventRow(org_id, kind, o.master.updated_ts, o.master.ucid, data, o.master.region)


def check_ucid(ucid: str, field: str) -> str:
    try:
        return str(uuid.UUID(ucid))
    except (ValueError, AttributeError, TypeError) as exc:
        raise BadRequest(f"{ucid!r} is not a ucid (a UUID)", field=field) from exc


MAX_VALUE_DEPTH = 32


def _check_text(text: str, field: str, what: str = "text") -> None:
    # NUL: PostgreSQL text cannot hold it, and the CRM refuses it, so both dialects refuse it.
    if "\x00" in text:
        raise BadRequest(f"{what} must not contain NUL characters", field=field)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadRequest(f"{what} is not valid Unicode (a lone surrogate)", field=field) from exc


def _check_attribute_value(value: Any, field: str, depth: int = 0) -> None:
    """Refuse what JSON parsers let through but cannot be stored faithfully, naming the attribute."""
    if depth > MAX_VALUE_DEPTH:
        raise BadRequest(f"values nest at most {MAX_VALUE_DEPTH} levels deep", field=field)
    if isinstance(value, str):
        _check_text(value, field)
    elif isinstance(value, float) and not math.isfinite(value):
        # NaN, Infinity and overflowing literals like 1e400 would be stored as null
        raise BadRequest(f"{value} is not a finite number", field=field)
    elif isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        raise BadRequest("integers beyond 64 bits cannot be stored", field=field)
    elif isinstance(value, list):
        for item in value:
            _check_attribute_value(item, field, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            # A key is named as sent, with what cannot be shown (NUL, a lone surrogate) escaped.
            name = f"{field}.{printable_key(key)}"
            _check_text(key, name, "a key")
            _check_attribute_value(item, name, depth + 1)


def prepare_upsert(upsert: Any) -> dict[str, dict[str, Any] | None]:
    if not isinstance(upsert, dict):
        raise BadRequest("must be an object of categories", field="upsert")
    out: dict[str, dict[str, Any] | None] = {}
    for category, attrs in upsert.items():
        f = f"upsert.{category}"
        if category not in CATEGORIES:
            raise BadRequest(f"unknown category {category!r}; known: {', '.join(CATEGORIES)}", field=f)
        if attrs is None:
            out[category] = None
            continue
        if not isinstance(attrs, dict):
            raise BadRequest("must be an object of attributes (or null to clear the category)", field=f)
        for name in attrs:
            _check_text(name, f"{f}.{printable_key(name)}", "an attribute name")
            if not name or len(name) > MAX_ATTRIBUTE_NAME:
                raise BadRequest(f"attribute names are 1 to {MAX_ATTRIBUTE_NAME} characters", field=f)
            if name.startswith("_"):
                raise BadRequest("attribute names starting with '_' are reserved", field=f"{f}.{name}")
            _check_attribute_value(attrs[name], f"{f}.{name}")
        try:
            orjson.dumps(attrs)
        except orjson.JSONEncodeError as exc:
            # e.g. lone surrogates, which JSON allows and no database stores
            raise BadRequest(f"attribute values cannot be stored: {exc}", field=f) from exc
        out[category] = attrs
    return out


def prepare_write(strategy: Strategy, write: ProfileWrite, actor: str) -> PreparedWrite:
    """Validate one write completely before anything is written."""
    region = strategy.check_region(write.region)
    if not isinstance(write.ids, dict):
        raise BadRequest("must be an object of idType to value", field="ids")
    if CRM_PERSON_ID in write.ids:
        # A CDP client naming a CRM person would link (and on erasure delete) a person it never saw.
        raise BadRequest(
            f"{CRM_PERSON_ID} links a CRM person and is written only by the CRM dialect; "
            "search by it instead",
            field=f"ids.{CRM_PERSON_ID}",
        )
    upsert = prepare_upsert(write.upsert)
    ucid = check_ucid(write.ucid, "ucid") if write.ucid is not None else None
    ids, notices = normalise_ids(strategy, write.ids, region, suppression=strategy.suppression)
    if not ids and ucid is None:
        if any(n.code == ID_SUPPRESSED for n in notices):
            # Said of this write only: the other records of a _bulk or an import are written,
            # and _explain, which writes nothing anyway, predicts this.
            raise Suppressed(
                "this write is dropped: every usable id of it is suppressed (an erased person's ids; "
                "POST /cdp/v1/users/_unsuppress lifts it)",
                field="ids",
            )
        why = "every id given is blocked or disabled" if write.ids else "no ids given"
        raise BadRequest(f"a write needs a usable id or a ucid ({why})", field="ids")
    return PreparedWrite(write.org_id, region, ids, upsert, ucid, actor, notices, source=write.source)


def prepare_writes(
    strategy: Strategy, writes: Sequence[ProfileWrite], actor: str
) -> list[PreparedWrite | ProfilehubError]:
    """``prepare_write`` of each write: pure, so it may run in another process (see ``Prepared``)."""
    return each_or_error(lambda w: prepare_write(strategy, w, actor), writes)


@dataclass
class Prepared:
    """The outcome of ``prepare_writes`` for a batch, and the org and strategy version it was made
    under.

    The importer prepares the next batch in a worker process while the writer applies this one.
    The writer uses these only for writes of ``org_id`` while its strategy is still at
    ``strategy_version``; after a change (an idType added, a value blocked) it prepares the writes
    again itself.
    """

    org_id: int
    strategy_version: int
    items: list[PreparedWrite | ProfilehubError]

    def __reduce__(self) -> tuple[Any, ...]:
        # Prepared batches come back from the importer's worker processes, and the importer
        # unpickles them on the writer's side of the GIL. Pickled as they are (a dataclass per
        # write, a named tuple per id) that cost about as much as preparing them: 26 us a record.
        # As plain tuples and strings it is a fifth of that.
        packed = [
            (
                w.org_id,
                w.region,
                tuple(part for i in w.ids for part in i),
                w.upsert,
                w.ucid,
                w.actor,
                w.notices,
                w.source,
            )
            if isinstance(w, PreparedWrite)
            else w
            for w in self.items
        ]
        return _unpack_prepared, (self.org_id, self.strategy_version, packed)


def _unpack_prepared(org_id: int, strategy_version: int, packed: list[Any]) -> Prepared:
    items: list[PreparedWrite | ProfilehubError] = []
    for p in packed:
        if isinstance(p, tuple):
            flat = p[2]
            ids = [Identifier(flat[k], flat[k + 1]) for k in range(0, len(flat), 2)]
            items.append(PreparedWrite(p[0], p[1], ids, p[3], p[4], p[5], p[6], source=p[7]))
        else:
            items.append(p)
    return Prepared(org_id, strategy_version, items)


def people_links(
    conn: Connection,
    org_id: int,
    region: str,
    person_ids: Sequence[str],
    storage: ProfileReader | None = None,
) -> dict[str, str]:
    """The ucid of the profile each linked person belongs to, by person id (``storage``: the
    transaction's, which may hold its unflushed writes and has read their ids already)."""
    reader = storage if storage is not None else profile_storage(conn)
    owners = reader.find_owners(org_id, region, [person_link(p) for p in person_ids])
    return {ident.value: ucid for ident, ucid in owners.items()}


def profile_view(strategy: Strategy, state: ProfileState, linked: Sequence[str]) -> dict[str, Any]:
    ids: dict[str, list[Any]] = {}
    for ident in sorted(state.ids, key=lambda i: (strategy.sort_key(i.id_type), state.ids[i], i.value)):
        ids.setdefault(strategy.namespace_of(ident.id_type), []).append(
            {ident.id_type: ident.value, "_ts": str(state.ids[ident])}
        )
    ids["linkedUcid"] = list(linked)
    view: dict[str, Any] = {
        "ucid": state.ucid,
        "region": state.region,
        "created_ts": state.created_ts,
        "updated_ts": state.updated_ts,
    }
    for category in CATEGORIES:
        view[category] = state.data.get(category, {})
    view["ids"] = ids
    return view


def _result(strategy: Strategy, outcome: WriteOutcome) -> WriteResult:
    return WriteResult(strategy, outcome)


_WritePayload = tuple[Sequence[ProfileWrite], str, Prepared | None]


class _ApplyAgain(Exception):
    """A write was refused while the batch applied: roll the batch's savepoint back, apply again."""


@dataclass
class PersonIdentity:
    """A CRM person as a write to the identity graph: its link id, emails and phone number.

    ``dropped``: emails the person no longer has (a PATCH replaced its list); the profile the
    person's write lands on lets go of them (``PreparedWrite.released``) before the write's own ids
    attach, so the new ones can take their place.
    """

    person_id: str
    emails: list[str]
    phone: str | None
    dropped: list[str] = field(default_factory=list)


def person_link(person_id: str) -> Identifier:
    return Identifier(CRM_PERSON_ID, person_id)


def _email_ids(strategy: Strategy, region: str, emails: Sequence[str]) -> list[Identifier]:
    ids: list[Identifier] = []
    for i, email in enumerate(emails):
        found, _ = normalise_ids(strategy, {"email": email}, region, field_prefix=f"emails.{i}")
        ids += found
    return ids


_Normalised = tuple[list[Identifier], list[Notice]] | BadRequest


@dataclass
class GraphIds:
    """A person's emails and phone number normalised (and hashed) for the graph ahead of the
    writer, in the request's thread, as CDP writes are prepared (``ProfileService._prepare_ahead``):
    ``(idType, value, field)`` -> the ids and notices, or the refusal. Made under one strategy
    version and home region; ``prepare_person`` uses them only while both still hold."""

    version: int
    region: str
    found: dict[tuple[str, str, str], _Normalised] = field(default_factory=dict)


def _normalise_one(strategy: Strategy, region: str, id_type: str, value: str, where: str) -> _Normalised:
    try:
        # ``where``: the person body's field (emails.0, phoneNumber), the prefix of the notices'.
        # Suppressed ids stay out of the graph (the CRM write has dropped the body's already;
        # this keeps out those of people stored before, linked by ``org link-people``).
        found = normalise_ids(
            strategy, {id_type: value}, region, field_prefix=where, suppression=strategy.suppression
        )
    except BadRequest as exc:
        return exc
    return found


def person_graph_ids(strategy: Strategy, region: str, emails: Sequence[str], phone: str | None) -> GraphIds:
    """``GraphIds`` of a person body's emails (at their positions) and phone number."""
    graph = GraphIds(strategy.version, region)
    for i, email in enumerate(emails):
        graph.found[("email", email, f"emails.{i}")] = _normalise_one(
            strategy, region, "email", email, f"emails.{i}"
        )
    if phone:
        graph.found[("cellphone", phone, "phoneNumber")] = _normalise_one(
            strategy, region, "cellphone", phone, "phoneNumber"
        )
    return graph


def _graph_ids(
    strategy: Strategy, region: str, id_type: str, value: str, where: str, known: GraphIds | None
) -> tuple[list[Identifier], list[Notice]]:
    hit = known.found.get((id_type, value, where)) if known is not None else None
    if hit is None:
        hit = _normalise_one(strategy, region, id_type, value, where)
    if isinstance(hit, BadRequest):
        raise hit
    return hit


def prepare_person(
    strategy: Strategy,
    org_id: int,
    region: str,
    person: PersonIdentity,
    actor: str,
    known: GraphIds | None = None,
) -> tuple[PreparedWrite, list[Identifier]] | None:
    """The write that resolves ``person`` in the graph (None: it has no email or phone number to
    resolve by), and the ids its dropped emails stand for. Never raises: the CRM has checked the
    values already; one the graph's rules refuse (a blocked value, a phone number the graph's
    parser reads differently) is left out with a notice. ``known``: its ids normalised ahead
    (``person_graph_ids``), used when made under this strategy version and region."""
    if known is not None and (known.version != strategy.version or known.region != region):
        known = None
    notices: list[Notice] = []
    ids: list[Identifier] = []
    for i, email in enumerate(person.emails):
        try:
            found, more = _graph_ids(strategy, region, "email", email, f"emails.{i}", known)
        except BadRequest as exc:
            notices.append(Notice("not_in_graph", exc.message, f"emails.{i}"))
            continue
        ids += found
        notices += more
    if person.phone:
        try:
            found, more = _graph_ids(strategy, region, "cellphone", person.phone, "phoneNumber", known)
            ids += found
            notices += more
        except BadRequest as exc:
            notices.append(Notice("not_in_graph", exc.message, "phoneNumber"))
    if not ids:
        return None
    rule = strategy.id_types.get(CRM_PERSON_ID)
    if rule is None or rule.id_class is IdClass.DISABLED:
        return None  # the org disabled the link idType: its people stay out of the graph
    link = [person_link(person.person_id)]
    dropped = _email_ids(strategy, region, person.dropped) if person.dropped else []
    write = PreparedWrite(
        org_id, region, link + ids, {}, None, actor, notices, released=dropped, source="crm"
    )
    return write, dropped


def people_ids(people: Sequence[tuple[PreparedWrite, list[Identifier]]]) -> list[Identifier]:
    """The ids the graph writes of ``people`` (``prepare_person``) look up: what to prefetch."""
    return [i for p, dropped in people for i in (*p.ids, *dropped)]


class WriteObserver(Protocol):
    def written(self, merges: int, refused: int) -> None: ...


class ProfileService:
    def __init__(
        self,
        db: Database,
        observer: WriteObserver | None = None,
        journal: bool = True,
        clock: Callable[[], int] | None = None,
        receipt_keys: ReceiptKeys | None = None,
        ledger: bool = True,
    ) -> None:
        self.db = db
        # The time of each write (epoch ms), asked once per write; None: the wall clock. An import
        # given ``--at`` passes a fixed time, so two runs of one file write the same rows.
        self.clock = clock
        # What signs erasure receipts (docs/privacy.md); the server's is given the passphrase.
        self.receipt_keys = receipt_keys if receipt_keys is not None else ReceiptKeys()
        self.strategies = StrategyCache()
        self.observer = observer
        # Whether writes keep their journal (docs/unmerge.md) and their consent values in the
        # ledger (docs/privacy.md); off only for the benches' baselines.
        self.journal = journal
        self.ledger = ledger
        self.journal_pruner = JournalPruner()
        # What the CRM's writer last saw of each org (its home region and people's custom
        # attributes), so person writes can be read and hashed ahead of it (crm/people.py); the
        # writer uses what was prepared only when it sees the same.
        self.crm_seen: dict[int, tuple[str, Any]] = {}

    def _observe(self, results: list[WriteResult | ProfilehubError]) -> None:
        # Counted once the writer's transaction has committed, so a failed batch counts nothing.
        if self.observer is not None:
            merges = refused = 0
            for r in results:
                if isinstance(r, WriteResult):
                    merges += r.merges
                    refused += r.merges_refused
            self.observer.written(merges, refused)

    # --- writes ---
    def now(self) -> int:
        """The time of the next write (epoch ms)."""
        return self.clock() if self.clock is not None else now_ms()

    def _prune_time(self, last_write: int) -> int:
        # Retention is measured from the wall clock. With the wall clock as the write clock that is
        # the last write's time (so a batch and the same writes one by one prune alike); a fixed
        # clock may lie far in the past or future, where it would prune too little or too much.
        return last_write if self.clock is None else now_ms()

    def _write_group(
        self, conn: Connection, payloads: list[_WritePayload]
    ) -> list[list[WriteResult | ProfilehubError]]:
        """The writes of several jobs (each ``(writes, actor, prepared)``) as one batch, in queue order."""
        flat = [
            (
                w,
                actor,
                prepared.strategy_version if prepared and prepared.org_id == w.org_id else None,
                prepared.items[i] if prepared else None,
            )
            for writes, actor, prepared in payloads
            for i, w in enumerate(writes)
        ]
        out: list[WriteResult | ProfilehubError | None] = [None] * len(flat)
        strategies: dict[int, Strategy] = {}
        ready: list[tuple[int, Strategy, PreparedWrite]] = []
        for index, (w, actor, version, item) in enumerate(flat):
            try:
                strategy = strategies.get(w.org_id) or self.strategies.get(conn, w.org_id)
                strategies[w.org_id] = strategy
                if item is None or version != strategy.version:
                    item = prepare_write(strategy, w, actor)
                elif isinstance(item, ProfilehubError):
                    raise item
                ready.append((index, strategy, item))
            except ProfilehubError as exc:
                out[index] = exc
        # Lock every scope first (in one order, against deadlocks), then read what the whole
        # batch will look up in a few queries; the writes then resolve one by one, in order.
        scopes: dict[tuple[int, str], tuple[list[Identifier], list[str]]] = {}
        for _, _, p in ready:
            ids, ucids = scopes.setdefault((p.org_id, p.region), ([], []))
            ids += p.ids
            if p.ucid is not None:
                ucids.append(p.ucid)
        for org_id, region in sorted(scopes):
            lock_scope(conn, org_id, f"profiles:{region}")
        for index, outcome in self._apply_all_or_nothing(conn, scopes, ready).items():
            out[index] = outcome
        results = [o for o in out if o is not None]
        split: list[list[WriteResult | ProfilehubError]] = []
        for writes, _, _ in payloads:
            split.append(results[: len(writes)])
            results = results[len(writes) :]
        return split

    def _apply_all_or_nothing(
        self,
        conn: Connection,
        scopes: dict[tuple[int, str], tuple[list[Identifier], list[str]]],
        ready: list[tuple[int, Strategy, PreparedWrite]],
    ) -> dict[int, WriteResult | ProfilehubError]:
        """Apply the ready writes in order (the caller holds the scopes' locks), each all-or-nothing
        by the database.

        The writes share one storage (read ahead in a few queries, written in a few statements),
        so they apply together in a savepoint. When one is refused while it applies, by when it may
        have changed what the writes after it see, the savepoint is rolled back and the batch
        applied again without it: it leaves nothing, and the others resolve as if it had never been
        sent. Refusals are rare (the checks that need no storage ran before), so the usual cost is
        one savepoint.
        """
        refused: dict[int, WriteResult | ProfilehubError] = {}
        # Each write keeps the time it was first applied at: applied again, it is the same write.
        stamps: dict[int, int] = {}
        while True:
            done = dict(refused)
            again = False
            try:
                with savepoint(conn):
                    storage = profile_storage(conn, self.journal, self.ledger)
                    for (org_id, region), (ids, ucids) in sorted(scopes.items()):
                        storage.prefetch(org_id, region, ids, ucids)
                    events: list[EventRow] = []
                    for index, strategy, prepared in ready:
                        if index in refused:
                            continue
                        try:
                            now = stamps.setdefault(index, self.now())
                            result = done[index] = _result(
                                strategy, apply_write(storage, strategy, prepared, now)
                            )
                            events.append(result.event(prepared.org_id))
                        except ProfilehubError as exc:
                            done[index] = refused[index] = exc
                            again = True
                    if again:
                        raise _ApplyAgain
                    storage.flush()
                    if self.journal and stamps:
                        # At the last write's time: the clock is read once per write and nowhere else,
                        # so a batch and the same writes one by one see the same times.
                        self.journal_pruner.prune(
                            conn, (org_id for org_id, _ in scopes), self._prune_time(max(stamps.values()))
                        )
                    append_events(conn, events)
                    return done
            except _ApplyAgain:
                continue  # rolled back: again without the writes refused

    def _write_job(self, writes: Sequence[ProfileWrite], actor: str, prepared: Prepared | None) -> GroupJob:
        if prepared is not None and len(prepared.items) != len(writes):
            raise ValueError("prepared must hold one item per write")
        return GroupJob(self._write_group, (writes, actor, prepared))

    def write_batch(
        self, writes: Sequence[ProfileWrite], actor: str, prepared: Prepared | None = None
    ) -> list[WriteResult | ProfilehubError]:
        """Resolve and apply ``writes`` in order; one result or error per write, same order.

        ``prepared``, when given, is ``prepare_writes`` of the same writes made earlier.
        """
        result: list[WriteResult | ProfilehubError] = self.db.write(self._write_job(writes, actor, prepared))
        self._observe(result)
        return result

    def _prepare_ahead(self, writes: Sequence[ProfileWrite], actor: str) -> Prepared | None:
        """Validate and normalise in the caller's thread, before the write queues for the writer.

        The one writer thread is the bottleneck of every write; this part needs no database (the
        strategy last loaded is enough, and the writer re-prepares if it has changed since), so it
        runs while the writer works on the previous batch, and in parallel across server processes.
        """
        org_ids = {w.org_id for w in writes}
        if len(org_ids) != 1:
            return None
        org_id = org_ids.pop()
        strategy = self.strategies.cached(org_id)
        if strategy is None:
            return None
        return Prepared(org_id, strategy.version, prepare_writes(strategy, writes, actor))

    def write_job(self, writes: Sequence[ProfileWrite], actor: str) -> GroupJob:
        """The writer job of ``writes`` (prepared ahead where it can be); its result is one
        result or error per write. Pass the result to ``observe`` once committed."""
        return self._write_job(writes, actor, self._prepare_ahead(writes, actor))

    def observe(self, results: list[WriteResult | ProfilehubError]) -> None:
        self._observe(results)

    # --- CRM people in the graph (called inside the CRM dialect's writer jobs) ---
    def strategy(self, conn: Connection, org_id: int) -> Strategy:
        return self.strategies.get(conn, org_id)

    def write_people(
        self,
        conn: Connection,
        org_id: int,
        region: str,
        people: Sequence[tuple[PreparedWrite, list[Identifier]]],
        storage: BatchStore | None = None,
        strategy: Strategy | None = None,
        locked: bool = False,
    ) -> list[WriteResult]:
        """Resolve people (``prepare_person``) in the graph, in the caller's writer transaction,
        by the same rules and batch machinery as CDP writes.

        The profile each write lands on lets go of the person's dropped emails (the write's
        ``released``, journaled with it), so a PATCH that replaces an email moves the graph with it
        and an unmerge's replay does the same. ``strategy``: the org's, read in this transaction
        already; ``locked``: the caller holds the region's lock already.
        """
        if strategy is None:
            strategy = self.strategies.get(conn, org_id)
        if not locked:
            lock_scope(conn, org_id, f"profiles:{region}")
        batch = storage if storage is not None else profile_storage(conn, self.journal, self.ledger)
        batch.prefetch(org_id, region, people_ids(people), [])  # read already if ``storage`` did
        results: list[WriteResult] = []
        now = 0
        for prepared, _ in people:
            # The profile a person's write lands on lets go of its dropped emails (``released``)
            # in ``apply_write``, journaled with the write.
            now = self.now()
            results.append(_result(strategy, apply_write(batch, strategy, prepared, now)))
        batch.flush()
        if self.journal and people:
            self.journal_pruner.prune(conn, [org_id], self._prune_time(now))
        append_events(conn, [r.event(org_id) for r in results])
        self._observe(list(results))
        return results

    def unlink_people(self, conn: Connection, org_id: int, region: str, person_ids: Sequence[str]) -> None:
        """Remove the links of deleted CRM people; the profiles and their other ids stay, and each
        that lost a link is updated (``updated_ts``) and announced as ``profile.updated``."""
        lock_scope(conn, org_id, f"profiles:{region}")
        strategy = self.strategies.get(conn, org_id)
        batch = profile_storage(conn, self.journal, self.ledger)
        links = [person_link(p) for p in person_ids]
        holders = sorted(set(batch.find_owners(org_id, region, links).values()))
        batch.delete_ids(org_id, region, links)
        now = self.now()
        states = batch.load_profiles(org_id, holders)
        for state in states.values():
            state.updated_ts = now
            batch.update_profile(org_id, state)
        batch.flush()
        linked = batch.linked_ucids(org_id, holders)
        append_events(
            conn,
            [
                EventRow(
                    org_id,
                    PROFILE_UPDATED,
                    now,
                    ucid,
                    {"profile": profile_view(strategy, state, linked.get(ucid, []))},
                    region,
                )
                for ucid, state in states.items()
            ],
        )

    async def awrite_batch(
        self, writes: Sequence[ProfileWrite], actor: str
    ) -> list[WriteResult | ProfilehubError]:
        result: list[WriteResult | ProfilehubError] = await self.db.awrite(self.write_job(writes, actor))
        self._observe(result)
        return result

    # --- reads ---
    def _lookup_keys(
        self, strategy: Strategy, key: str, value: Any, field: str, region: str
    ) -> list[Identifier]:
        """The stored ids a search or delete value stands for.

        A key may be an idType, a namespace, or both (``email`` is the raw idType and the namespace
        of its hashes): the value is looked up under the idType and under every idType of the
        namespace. A value of the wrong kind for one idType (a digest is no valid raw email) just
        matches nothing there; a value no id can be (null, a list, NUL) is a 400.
        """
        coerce_id_value(value, f"{field}.{key}")
        is_type, is_namespace = key in strategy.id_types, key in strategy.namespaces()
        if is_type and not is_namespace:
            ids, _ = normalise_ids(strategy, {key: value}, region, field_prefix=field)
            return ids
        if is_namespace:
            found: list[Identifier] = []
            names = {rule.name for rule in strategy.types_in_namespace(key)} | ({key} if is_type else set())
            for name in sorted(names):
                try:
                    ids, _ = normalise_ids(strategy, {name: value}, region, field_prefix=field)
                except BadRequest:
                    continue
                found += ids
            return list(dict.fromkeys(found))
        known = ", ".join(sorted(set(strategy.id_types) | strategy.namespaces() | {"ucid"}))
        raise BadRequest(f"unknown idType or namespace {key!r}; known: {known}", field=f"{field}.{key}")

    @staticmethod
    def _values(raw: Any, field: str, limit: int) -> list[Any]:
        if isinstance(raw, str | int) and not isinstance(raw, bool):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            raise BadRequest("must be a non-empty array of values", field=field)
        if len(raw) > limit:
            raise BadRequest(f"at most {limit} values", field=field)
        return raw

    def search(self, org_id: int, regions: list[str] | None, search: dict[str, Any]) -> list[dict[str, Any]]:
        if not isinstance(search, dict) or not search:
            raise BadRequest("must name at least one idType, namespace or ucid with values", field="search")
        with self.db.read() as conn:
            strategy = self.strategies.get(conn, org_id)
            storage = profile_storage(conn)
            wanted = (
                [strategy.check_region(r, "regions") for r in regions]
                if regions
                else sorted(strategy.regions)
            )
            total = sum(len(v) if isinstance(v, list) else 1 for v in search.values())
            if total > MAX_SEARCH_VALUES:
                raise BadRequest(f"at most {MAX_SEARCH_VALUES} values in one search", field="search")
            masters: list[str] = []
            for key, raw in search.items():
                f = f"search.{key}"
                values = self._values(raw, f, MAX_SEARCH_VALUES)
                if key == "ucid":
                    resolved = storage.resolve_ucids(org_id, [check_ucid(str(v), f) for v in values])
                    masters += [m for m, region in resolved.values() if region in wanted]
                    continue
                for region in wanted:
                    idents = [
                        i for v in values for i in self._lookup_keys(strategy, key, v, "search", region)
                    ]
                    masters += list(storage.find_owners(org_id, region, idents).values())
            unique = list(dict.fromkeys(masters))
            states = storage.load_profiles(org_id, unique)
            linked = storage.linked_ucids(org_id, unique)
            return [profile_view(strategy, states[u], linked.get(u, [])) for u in unique if u in states]

    def get(self, org_id: int, ucid: str, region: str | None = None) -> dict[str, Any]:
        """One profile by ucid; a ucid merged into another answers the profile it was merged into
        (as a search by ucid does). ``region``, when given, must be the profile's."""
        wanted = check_ucid(ucid, "ucid")
        with self.db.read() as conn:
            strategy = self.strategies.get(conn, org_id)
            storage = profile_storage(conn)
            in_region = strategy.check_region(region, "region") if region is not None else None
            master, found_region = storage.resolve_ucids(org_id, [wanted]).get(wanted, (wanted, None))
            state = storage.load_profiles(org_id, [master]).get(master) if found_region else None
            if state is None or (in_region is not None and found_region != in_region):
                where = f" in region {in_region}" if in_region is not None else ""
                raise NotFound(f"no profile with ucid {wanted}{where} in org {org_id}", field="ucid")
            linked = storage.linked_ucids(org_id, [master])
            return profile_view(strategy, state, linked.get(master, []))

    def org_region(self, org_id: int, region: str) -> str:
        """``region`` as the org stores it (codes are case-insensitive); 400 when not the org's."""
        with self.db.read() as conn:
            return self.strategies.get(conn, org_id).check_region(region, "region")

    # --- erasure ---
    def _open_receipt_key(self, org_id: int) -> None:
        """Open the org's receipt key before its erasure queues for the writer: its scrypt stretch
        (about 0.1 s, once per org and process) is then not paid in the writer's turn, which every
        write waits for, and a key that does not open refuses the erasure (503) at once."""
        with self.db.read() as conn:
            self.receipt_keys.open_stored(conn, org_id)

    def _delete_job(
        self,
        org_id: int,
        region: str,
        ids: dict[str, Any],
        actor: str,
        send_email_notification: bool,
        suppress: bool = True,
    ) -> Any:
        def job(conn: Connection) -> dict[str, Any]:
            strategy = self.strategies.get(conn, org_id)
            storage = profile_storage(conn)
            r = strategy.check_region(region)
            if not isinstance(ids, dict) or len(ids) != 1:
                raise BadRequest("name exactly one idType (or ucid) with its values", field="ids")
            # No erasure without its receipt: a key this process cannot open refuses it (503)
            # before anything is read or erased (opened ahead by ``delete``, so this is a read).
            self.receipt_keys.open_stored(conn, org_id)
            ((key, raw),) = ids.items()
            values = self._values(raw, f"ids.{key}", MAX_DELETE_VALUES)
            masters: list[str] = []
            not_found: list[str] = []
            for v in values:
                if key == "ucid":
                    hit = storage.resolve_ucids(org_id, [check_ucid(str(v), "ids.ucid")]).get(str(v))
                    owner = [hit[0]] if hit and hit[1] == r else []
                else:
                    idents = self._lookup_keys(strategy, key, v, "ids", r)
                    owner = list(dict.fromkeys(storage.find_owners(org_id, r, idents).values()))
                if owner:
                    masters += owner
                else:
                    # As text: the answer must serialise whatever was sent (an integer beyond 64
                    # bits is valid JSON but not for orjson), since the erasure is committed by then.
                    not_found.append(v if isinstance(v, str) else json.dumps(v))
            masters = list(dict.fromkeys(masters))
            # The CRM's lock first, as the CRM's writes take them (no deadlock between the two).
            lock_people(conn, org_id)
            lock_scope(conn, org_id, f"profiles:{r}")
            # Erasure is whole: the CRM people linked to these profiles go with them.
            people_of = storage.ids_of_type(org_id, masters, CRM_PERSON_ID)
            erased_people = erase_people(
                conn, org_id, [p for m in masters for p in people_of.get(m, [])], actor, "profile erased"
            )
            linked = storage.linked_ucids(org_id, masters)
            every = [*masters, *(u for m in masters for u in linked.get(m, []))]
            suppressed = suppress_erased(conn, org_id, r, every) if suppress else 0
            erased = [u for m in masters for u in (m, *linked.get(m, []))]
            counts = erasure_counts(conn, org_id, masters, erased)
            # Profiles the erased were unmerged from held their values until then, in events,
            # saved answers and journal (docs/privacy.md#what-an-erasure-leaves): those go too.
            parted = parted_from(conn, org_id, erased)
            held = ids_held(conn, org_id, erased)
            scrub_parted_journals(conn, org_id, parted, erased, held)
            # Other people's writes that carried the erased ids without taking them kept them.
            scrub_unattached(conn, org_id, r, held, set(erased))
            delete_profiles(conn, org_id, masters)
            forget_answers(conn, org_id, [*masters, *(u for m in masters for u in linked.get(m, []))])
            forget_answers_until(conn, org_id, parted)
            ts = now_ms()
            receipt_id = str(uuid.uuid4())  # named by the change rows, so the log leads to the receipt
            record(
                conn,
                [
                    change_row(
                        org_id,
                        actor,
                        "profile",
                        u,
                        "erase",
                        {
                            "region": r,
                            "by": key,
                            "sendEmailNotification": send_email_notification,
                            "receiptId": receipt_id,
                            "linkedUcid": linked.get(u, []),
                            "crmPeople": people_of.get(u, []),
                        },
                        ts,
                    )
                    for u in masters
                ]
                # A merged-away ucid's history ends with the erasure too, so that its ucid (in a
                # receipt or an old export) leads to the receipt: docs/privacy.md.
                + [
                    change_row(
                        org_id,
                        actor,
                        "profile",
                        m,
                        "erase",
                        {"region": r, "by": key, "receiptId": receipt_id, "mergedInto": u},
                        ts,
                    )
                    for u in masters
                    for m in linked.get(u, [])
                ],
            )
            # The earlier events held the erased values; the erasure's own holds the ucids only.
            forget_events(conn, org_id, [*masters, *(u for m in masters for u in linked.get(m, []))])
            counts["events"] += forget_events_until(conn, org_id, parted)
            append_events(
                conn,
                [
                    EventRow(org_id, PROFILE_ERASED, ts, u, {"ucids": [u, *linked.get(u, [])]}, r)
                    for u in masters
                ],
            )
            counts |= {
                "profiles": len(masters),
                "mergedProfiles": len(erased) - len(masters),
                "deletedPeople": len(erased_people),
                "valuesNotFound": len(not_found),
                "suppressedIds": suppressed,
            }
            receipt = issue_receipt(
                conn,
                self.receipt_keys,
                receipt_id=receipt_id,
                org_id=org_id,
                region=r,
                by=key,
                ucids=erased,
                counts=counts,
                actor=actor,
                send_email_notification=send_email_notification,
                ts=ts,
            )
            if send_email_notification:
                data = {"receiptId": receipt["receiptId"], "ucids": erased}
                append_events(
                    conn,
                    [EventRow(org_id, ERASURE_NOTIFICATION_REQUESTED, ts, receipt["receiptId"], data, r)],
                )
            return {
                "ucids": masters,
                "deletedProfiles": len(masters),
                "profilesNotFound": not_found,
                "deletedPeople": len(erased_people),
                "suppressedIds": suppressed,
                "receiptId": receipt["receiptId"],
            }

        return job

    def delete(
        self,
        org_id: int,
        region: str,
        ids: dict[str, Any],
        actor: str,
        send_email_notification: bool = False,
        suppress: bool = True,
    ) -> dict[str, Any]:
        """Erase the profiles that own the given ids (or ucids), with all they merged; unless
        ``suppress`` is False, their ids are suppressed (docs/privacy.md)."""
        self._open_receipt_key(org_id)
        result: dict[str, Any] = self.db.write(
            self._delete_job(org_id, region, ids, actor, send_email_notification, suppress)
        )
        return result

    async def adelete(
        self,
        org_id: int,
        region: str,
        ids: dict[str, Any],
        actor: str,
        send_email_notification: bool = False,
        suppress: bool = True,
    ) -> dict[str, Any]:
        await asyncio.to_thread(self._open_receipt_key, org_id)
        result: dict[str, Any] = await self.db.awrite(
            self._delete_job(org_id, region, ids, actor, send_email_notification, suppress)
        )
        return result

    def _unsuppress_job(self, org_id: int, region: str, ids: Any, actor: str) -> Any:
        def job(conn: Connection) -> dict[str, Any]:
            strategy = self.strategies.get(conn, org_id)
            r = strategy.check_region(region)
            return unsuppress_ids(
                conn,
                strategy,
                r,
                ids,
                actor,
                lambda key, value, reg: self._lookup_keys(strategy, key, value, "ids", reg),
                self._values,
            )

        return job

    async def aunsuppress(self, org_id: int, region: str, ids: Any, actor: str) -> dict[str, Any]:
        """Lift the suppression of ids (docs/privacy.md); answers how many fingerprints went."""
        result: dict[str, Any] = await self.db.awrite(self._unsuppress_job(org_id, region, ids, actor))
        return result
