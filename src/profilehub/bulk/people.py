"""``import people --bulk``: a whole file of CRM people in one writer transaction, all or nothing.

The online people import (``ingest.people.people_sink``) writes a file batch by batch, each batch
(``--batch-size`` lines, sent to the core ``MAX_BATCH`` bodies at a time) its own transaction:
the people's CRM rows (records, emails, values, change log), then their writes to the identity
graph of the org's home region (link ``crm_person_id``, emails, phone), then the events.

The bulk path holds the locks the online path takes (the org's ``crm`` scope, then
``profiles:<home region>``) from the first record to the commit, and:

1. runs the CRM part of every call through the online core (``crm.people._upsert_payload``), in
   the online calls and order, into one ``PeopleBatch`` flushed every ``FLUSH_PEOPLE`` people,
   the graph writes and each call's people spooled to disk (``_Written``). A person's match and
   checks never read the graph, so the graph writes are all known afterwards;
2. resolves the graph writes as the CDP bulk path resolves a file: components (``bulk.graph``),
   the simple ones touching nothing stored in closed form (``bulk.resolve.resolve_group``), the
   others replayed in file order through the identity core: in memory when they touch nothing
   stored, against the store when they do;
3. writes every row, numbering the change log and the events as the online calls interleave them.

Where that is not exact (a match by another attribute or a unique or relation attribute reads the
CRM tables midway; a graph write refused), the transaction rolls back to its start and runs the
online calls one after the other instead (``_resolve_in_graph`` after each). Either way it writes
exactly what the online import writes given the same ``--at`` and ``--batch-size``
(tests/test_bulk_people.py), and an interrupted or failed run leaves nothing.

A record refused after it changed the transaction (a fault between its rows, never a check) has
the whole transaction's savepoint rolled back and the file applied again without it, as the online
writer does for its group.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, wait
from dataclasses import dataclass
from functools import partial
from itertools import chain, islice
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from sqlalchemy.engine import Connection

from profilehub import collector
from profilehub.bulk.engine import BulkSummary, _peak_rss, _stream_rows
from profilehub.bulk.graph import components
from profilehub.bulk.interrupted import BulkInterrupted
from profilehub.bulk.load import CHANGE_COLUMNS, EVENT_COLUMNS, ID_COLUMNS, PROFILE_COLUMNS
from profilehub.bulk.resolve import (
    Recorded,
    Spools,
    id_key,
    is_simple,
    resolve_group,
    simple_components,
    spool_log,
)
from profilehub.bulk.spool import Spool, merged
from profilehub.bulk.workdir import work_folder
from profilehub.crm.objects import PEOPLE, custom_attributes
from profilehub.crm.people import (
    MAX_BATCH,
    FailedCall,
    PersonResult,
    PreparedPerson,
    _body_emails,
    _org_writes,
    _OrgWrites,
    _RecordRefused,
    _resolve_in_graph,
    _upsert_payload,
    prepare_people,
    prepare_people_as,
)
from profilehub.crm.values import Attribute
from profilehub.errors import ProfilehubError, error_body
from profilehub.identity.memory import MemoryStorage
from profilehub.identity.normalize import Identifier, Notice
from profilehub.identity.resolve import PreparedWrite, apply_write
from profilehub.identity.strategy import CRM_PERSON_ID, Strategy
from profilehub.identity.ucid import UcidBlock
from profilehub.ingest import checkpoint as checkpoints
from profilehub.ingest.reader import SourceRecord
from profilehub.ingest.runner import (
    EARLY_STOP_RECORDS,
    ImportStopped,
    Progress,
    RecordSource,
    _batches,
    _reason,
    _stop_on_interrupt,
    _stop_signals_blocked,
    carried_suppressed,
    default_workers,
    over_id_limit,
    stop_on_terminate,
    worker_pool,
)
from profilehub.orgs import home_region
from profilehub.profiles import ProfileService, WriteResult, person_link
from profilehub.store.backfill_journal import written_once
from profilehub.store.changes import ChangeIdBlock, now_ms
from profilehub.store.consent_ledger import LEDGER_COLUMNS
from profilehub.store.database import Database, OnceJob, savepoint
from profilehub.store.events import feed_of, insert_events, pending_events, reserve_event_ids
from profilehub.store.journal_store import CLOCK, JOURNAL_COLUMNS, UNATTACHED_COLUMNS
from profilehub.store.profile_storage import profile_storage

Outcome = PersonResult | ProfilehubError


class _Stopped(ProfilehubError):
    """The first records were all refused for one reason (``field``): roll back, report it. A
    domain error, so the writer does not run the job again (it retries other exceptions)."""

    outcomes: _Outcomes | None = None  # what the run saw, for the rejects file


@dataclass
class _Outcomes:
    """What the transaction reports of the file: the refused records (in file order) and counts."""

    rejects: list[tuple[SourceRecord, ProfilehubError | None]]  # None: unreadable
    created: int = 0
    updated: int = 0
    suppressed: int = 0
    over_id_limit: int = 0


class _NotSetBased(Exception):
    """The set-based identity pass does not apply after all (the CRM rows were flushed midway, a
    graph write was refused): roll back and run the file through the per-call path."""


class _Written:
    """What the CRM part of the file leaves for the identity part, on disk in ``folder``: the
    graph writes in file order, with the 64-bit keys of their ids (``bulk.resolve.id_key``) and
    their idTypes for the link phase, and each call's people (an online call: the people it saved,
    the file indices of its graph writes and the person of each). Memory holds a frame of each."""

    def __init__(self, folder: Path, strategy: Strategy, org_id: int, home: str) -> None:
        self.folder, self.org_id, self.home = folder, org_id, home
        self.type_names = sorted(strategy.id_types)
        self._code = {name: c for c, name in enumerate(self.type_names)}
        self.n = 0
        self.keys = array("q")
        self.types = array("b")  # each id's idType, coded as ``type_names`` (unknown: their count)
        self.offsets = array("q", [0])  # write k's ids: keys[offsets[k]:offsets[k + 1]]
        self.elsewhere = array("q")  # writes that meet the store whatever their ids
        # People saved in a call that made no graph write of theirs (their ucid is looked up).
        self.late: set[str] = set()
        self._writes = Spool(folder / "people-writes.rows")
        self._calls = Spool(folder / "people-calls.rows")
        self._people = Spool(folder / "people-saved.rows")

    def add_call(
        self,
        saved: list[PersonResult],
        graph: Sequence[tuple[PreparedWrite, Any]],
        owners: list[PersonResult],
    ) -> None:
        start = self.n
        unknown = len(self.type_names)
        for w, _ in graph:
            for i in w.ids:
                self.keys.append(id_key(w.region, i.id_type, i.value))
                self.types.append(self._code.get(i.id_type, unknown))
            self.offsets.append(len(self.keys))
            if w.released or w.region != self.home:
                self.elsewhere.append(self.n)
            self._writes.append(
                (
                    w.region,
                    [x for i in w.ids for x in i],
                    w.upsert,
                    w.ucid,
                    w.actor,
                    [(m.code, m.message, m.field, m.detail) for m in w.notices],
                    [x for i in w.released for x in i],
                    w.source,
                )
            )
            self.n += 1
        at = {id(p): n for n, p in enumerate(saved)}
        wrote = [at[id(o)] for o in owners]
        if len(wrote) < len(saved):
            self.late.update(p.person["id"] for n, p in enumerate(saved) if n not in set(wrote))
        for p in saved:
            self._people.append((p.person, p.created, p.ts, p.notices))
        self._calls.append((start, self.n, len(saved), wrote))

    def read_writes(self) -> Iterator[PreparedWrite]:
        """The graph writes in file order."""
        org_id = self.org_id
        for region, ids, upsert, ucid, actor, notices, released, source in self._writes.rows():
            yield PreparedWrite(
                org_id,
                region,
                [Identifier(ids[n], ids[n + 1]) for n in range(0, len(ids), 2)],
                upsert,
                ucid,
                actor,
                [Notice(*m) for m in notices],
                [Identifier(released[n], released[n + 1]) for n in range(0, len(released), 2)],
                source,
            )

    def read_calls(self) -> Iterator[tuple[range, list[PersonResult], list[PersonResult]]]:
        """Each call: its graph writes' file indices, its people, the person of each write."""
        people = self._people.rows()
        for start, stop, count, wrote in self._calls.rows():
            saved = [
                PersonResult(person, created, 0, notices, ts)
                for person, created, ts, notices in islice(people, count)
            ]
            yield range(start, stop), saved, [saved[n] for n in wrote]


class _Remembered(UcidBlock):
    """A ``UcidBlock`` that gives the same ucid for ``k`` every time it is asked (a ucid's last
    bits are random): the people's links are named before their profiles are made."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self._made: dict[int, str] = {}

    def many(self, ks: Sequence[int]) -> list[str]:  # ``block(k)`` too
        new = [k for k in dict.fromkeys(ks) if k not in self._made]
        self._made.update(zip(new, super().many(new), strict=True))
        return [self._made[k] for k in ks]

    def forget(self, k: int) -> str | None:
        """The ucid given for ``k``, if any, no longer remembered (its component is done)."""
        return self._made.pop(k, None)


# Whether the people's graph writes resolve set-based where they can (the default; False: per call
# through the online core, what the set-based path falls back to).
SET_BASED = True
# Ids looked up in the store per query (which components touch stored profiles).
LOOKUP_CHUNK = 20_000
# The person store's rows go to the tables every so many people (memory: a group's rows at most).
FLUSH_PEOPLE = 5_000
# Replayed graph writes whose change log, journal and ledger rows one sorted spool group holds.
SPOOL_GROUP = 10_000
# Change ids reserved for one import (a range of the id space, not rows: ids not given are never
# made); the file's count is not known before its end, when the first people are long written.
_CHANGE_IDS = 1 << 40


class PeopleBulkImporter:
    """``import people FILE --bulk``: the arguments of the online import's sink and importer."""

    def __init__(
        self,
        source: Path,
        records: RecordSource,
        db: Database,
        org_id: int,
        matching_attribute: str,
        actor: str,
        *,
        batch_size: int = 2000,
        progress: Progress | None = None,
        early_stop: int = EARLY_STOP_RECORDS,
        at: int | None = None,
        set_based: bool | None = None,
        workers: int | None = None,
    ) -> None:
        self.source = source
        # False: every call's graph writes replayed through the online core (``_resolve_in_graph``)
        self.set_based = SET_BASED if set_based is None else set_based
        self.records = records
        self.db = db
        self.org_id = org_id
        self.matching_attribute = matching_attribute
        self.actor = actor
        self.batch_size = batch_size
        self.progress = progress or (lambda _summary: None)
        self.early_stop = early_stop
        self.at = at
        self.summary: BulkSummary | None = None
        self._stop = threading.Event()
        self.workers = default_workers() if workers is None else workers
        self._pool: Executor | None = None
        # What the workers prepare bodies against: org, home region, custom attributes, strategy.
        self._context: tuple[int, str, Mapping[str, Attribute], Strategy] | None = None

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise BulkInterrupted

    def run(self) -> BulkSummary:
        size = self.source.stat().st_size
        at = self.at if self.at is not None else now_ms()
        summary = BulkSummary(self.source, size, at=at)
        self.summary = summary
        started = time.monotonic()
        stop = self._stop = threading.Event()
        terminated = threading.Event()  # set by SIGTERM, not Ctrl-C: the exit status differs
        try:
            with (
                _stop_on_interrupt(stop),
                stop_on_terminate(stop, terminated),
                collector.tuned(),
                worker_pool(self.workers) as pool,
            ):
                self._pool = pool
                if pool is not None:
                    with self.db.read() as conn:
                        self._context = (
                            self.org_id,
                            home_region(conn, self.org_id),
                            custom_attributes(conn, self.org_id, PEOPLE),
                            ProfileService(self.db).strategy(conn, self.org_id),
                        )
                t = time.monotonic()
                with written_once(self.db) as journal:
                    summary.journal = journal
                    future: Future[_Outcomes] = self.db.submit(OnceJob(self._job(at, summary)))
                    while not future.done():
                        wait([future], timeout=1.0)
                        summary.seconds = time.monotonic() - started
                        self.progress(summary)
                try:
                    outcomes = future.result()
                except _Stopped as stopped:
                    # As online: the rejects file and counts of what was read; nothing is written.
                    if stopped.outcomes is not None:
                        self._report(stopped.outcomes, summary)
                    summary.seconds = time.monotonic() - started
                    raise ImportStopped(summary, stopped.field or "", self.early_stop) from None
                summary.phases["transaction"] = time.monotonic() - t
        except BulkInterrupted as exc:
            summary.seconds = time.monotonic() - started
            exc.summary = summary
            exc.terminated = terminated.is_set()
            raise
        summary.note_workers(pool)
        self._report(outcomes, summary)
        summary.seconds = time.monotonic() - started
        summary.peak_rss_bytes = _peak_rss()
        summary.running = ""  # done: committed
        self.progress(summary)
        return summary

    def _job(self, at: int, summary: BulkSummary) -> Callable[[Connection], _Outcomes]:
        def job(conn: Connection) -> _Outcomes:
            if conn.dialect.name == "postgresql":
                # The transaction runs for minutes between statements; the server's guard against a
                # frozen client holding locks would end it.
                conn.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = 0")
            refused: dict[tuple[int, int], ProfilehubError] = {}
            set_based = self.set_based
            while True:
                try:
                    with (
                        work_folder("profilehub-bulk-people-") as folder,
                        savepoint(conn),
                    ):
                        return self._attempt(conn, at, summary, refused, set_based, Path(folder))
                except _RecordRefused as again:
                    refused[again.at] = again.error
                except _NotSetBased:
                    set_based = False

        return job

    def _prepared_calls(
        self, profiles: ProfileService
    ) -> Iterator[tuple[list[SourceRecord], list[tuple[list[dict[str, Any]], list[PreparedPerson] | None]]]]:
        """``_calls`` with each call's bodies prepared (read and their emails and phone hashed, as
        ``crm.people.prepare_people`` does), by the worker processes ahead of the writer when there
        are some, else here as each call comes."""
        pool, context = self._pool, self._context
        if pool is None or context is None:
            for batch, parts in self._calls():
                yield batch, [(part, prepare_people(profiles, self.org_id, part)) for part in parts]
            return
        ahead: deque[tuple[list[SourceRecord], list[tuple[list[dict[str, Any]], Future[Any]]]]] = deque()
        for batch, parts in self._calls():
            with _stop_signals_blocked():
                ahead.append(
                    (batch, [(part, pool.submit(prepare_people_as, *context, part)) for part in parts])
                )
            if len(ahead) > 2 * self.workers:
                done, futures = ahead.popleft()
                yield done, [(part, future.result()) for part, future in futures]
        while ahead:
            done, futures = ahead.popleft()
            yield done, [(part, future.result()) for part, future in futures]

    def _calls(self) -> Iterator[tuple[list[SourceRecord], list[list[dict[str, Any]]]]]:
        """The online import's calls: each batch of ``batch_size`` records as read (an unreadable
        one included), its readable bodies sent ``MAX_BATCH`` at a time (``people_sink``)."""
        for batch in _batches(self.records(0, 0), lambda: self.batch_size):
            parsed = [r.data for r in batch if r.data is not None]
            yield batch, [parsed[i : i + MAX_BATCH] for i in range(0, len(parsed), MAX_BATCH)]

    def _attempt(
        self,
        conn: Connection,
        at: int,
        summary: BulkSummary,
        refused: dict[tuple[int, int], ProfilehubError],
        set_based: bool,
        folder: Path,
    ) -> _Outcomes:
        summary.begin("read")  # the file read and its people saved, in the transaction already
        profiles = ProfileService(self.db, clock=lambda: at)
        org: _OrgWrites = _org_writes(conn, profiles, self.org_id)  # the locks, held to the commit
        # Set-based: the CRM rows of the whole file first (the people's decisions never read the
        # graph), then the graph writes resolved at once. Only while nothing makes the CRM rows go
        # to the tables midway (a match by another attribute, a unique or relation attribute
        # reads them), so their change log rows can still be numbered among the profiles'.
        set_based = (
            set_based
            and self.matching_attribute in ("email", "emails")
            and profiles.journal
            and not any(a.is_unique or a.type == "relation" for a in org.attrs.values())
        )
        pending = org.rows.pending_changes()
        written = _Written(folder, org.strategy, org.org_id, org.home)
        # Change ids in the online order, given as each call ends: its people's entries, then one
        # place for each of its graph writes (``positions``, numbered when they are written). So
        # the person store's rows can go to the tables every ``FLUSH_PEOPLE`` people instead of
        # all at the end (they were the largest holder of memory at the peak).
        change_id = ChangeIdBlock(_CHANGE_IDS)
        positions = array("q")
        at_pos = 0
        out = _Outcomes([])
        head: list[str] = []
        index = 0  # the call's number, as ``_RecordRefused`` names it
        summary.read = 0
        for batch, calls in self._prepared_calls(profiles):
            self._check_stop()
            results: list[Outcome] = []
            for part, prepared in calls:
                org.rows.prefetch(_body_emails(part, prepared))
                before = len(pending)
                answers = _upsert_payload(
                    conn, org, index, part, self.matching_attribute, self.actor, prepared, refused
                )
                index += 1
                if isinstance(answers, FailedCall):
                    raise answers.error
                if not set_based:
                    _resolve_in_graph(conn, profiles, org)
                elif org.rows.pending_changes() is not pending:
                    raise _NotSetBased  # flushed midway
                else:
                    for row in pending[before:]:
                        row["change_id"] = change_id(at_pos)
                        at_pos += 1
                    positions.extend(range(at_pos, at_pos + len(org.graph)))
                    at_pos += len(org.graph)
                    written.add_call(org.saved, org.graph, org.graph_of)
                    org.saved, org.graph, org.graph_of, org.unchanged = [], [], [], []
                results += answers
            given = iter(results)
            for record in batch:
                outcome = None if record.data is None else next(given)
                if outcome is not None and carried_suppressed(outcome):
                    out.suppressed += 1
                out.over_id_limit += over_id_limit(outcome)
                if isinstance(outcome, PersonResult):
                    out.created += outcome.created
                    out.updated += not outcome.created
                else:
                    out.rejects.append((record, _bare(outcome)))
                if len(head) < self.early_stop:
                    head.append(_head_reason(outcome))
            summary.read += len(batch)
            summary.line, summary.offset = batch[-1].line, batch[-1].end_offset
            if set_based and org.rows.pending_people() >= FLUSH_PEOPLE:
                # Within the transaction: all or nothing still holds.
                org.rows.flush()
                org.rows.forget()
                pending = org.rows.pending_changes()
        if self.early_stop and len(head) >= self.early_stop and len(set(head)) == 1 and head[0]:
            stopped = _Stopped(head[0], field=head[0])
            stopped.outcomes = out
            raise stopped  # nothing is written: the transaction rolls back
        if set_based:
            org.rows.flush()
            org.rows.forget()
            saved_suppressed, out.over_id_limit = self._resolve_set(
                conn,
                profiles,
                org,
                written,
                np.frombuffer(positions, dtype=np.int64),
                change_id,
                at,
                summary,
            )
            out.suppressed = saved_suppressed + sum(
                1 for _, o in out.rejects if o is not None and carried_suppressed(o)
            )
        summary.created, summary.updated = out.created, out.updated
        return out

    def _resolve_set(
        self,
        conn: Connection,
        profiles: ProfileService,
        org: _OrgWrites,
        written: _Written,
        positions: np.ndarray[Any, np.dtype[np.int64]],
        change_id: ChangeIdBlock,
        at: int,
        summary: BulkSummary,
    ) -> tuple[int, int]:
        """The people's graph writes (``written``, in file order) resolved as the CDP bulk path
        resolves a file: components of writes and ids (``bulk.graph``); the simple ones that touch
        nothing stored in closed form (``bulk.resolve``); the rest replayed in file order through
        the identity core against the store. Then every row written, the change log and events
        numbered as the online import's calls interleave them (each call's people, then their
        profiles' change log entries; each call's profile events, then its people's events).

        Memory: the writes and the people are read back from disk a call at a time; each call's
        events go to a spool as the call's graph writes are replayed; a component replayed in
        memory goes to the spools after its last write. Returns how many saved people carried a
        suppressed id, and how many were written without ids over a profile's limit: what the
        online import counts once their graph writes' notices are theirs."""
        t = summary.begin("link")
        strategy, org_id, home, folder = org.strategy, org.org_id, org.home, written.folder
        n = written.n
        offsets = np.frombuffer(written.offsets, dtype=np.int64)
        keys, first, flat = np.unique(
            np.frombuffer(written.keys, dtype=np.int64), return_index=True, return_inverse=True
        )
        found = components(offsets, flat, len(keys))
        limits = np.array(
            [strategy.id_types[name].max_per_profile for name in written.type_names] + [0], dtype=np.int64
        )
        simple = simple_components(
            offsets,
            flat,
            found.label,
            found.id_label,
            np.frombuffer(written.types, dtype=np.int8)[first],
            limits,
            found.count,
        )
        del first, flat
        touching = np.zeros(found.count, dtype=bool)
        touching[found.label[np.frombuffer(written.elsewhere, dtype=np.int64)]] = True
        storage = profile_storage(conn, profiles.journal, profiles.ledger)
        chunk: set[Any] = set()

        def look_up() -> None:
            if not chunk:
                return
            for ident in storage.find_owners(org_id, home, chunk):
                code = int(np.searchsorted(keys, id_key(home, ident.id_type, ident.value)))
                touching[found.id_label[code]] = True
            chunk.clear()

        # Nothing to look up in a scope that holds no ids yet (the first backfill of an org).
        held = (
            conn.exec_driver_sql(
                "SELECT 1 FROM profile_ids WHERE org_id = %s AND region = %s LIMIT 1"
                if conn.dialect.name == "postgresql"
                else "SELECT 1 FROM profile_ids WHERE org_id = ? AND region = ? LIMIT 1",
                (org_id, home),
            ).first()
            is not None
        )
        if held:
            for w in written.read_writes():
                chunk.update(w.ids)
                if len(chunk) >= LOOKUP_CHUNK:
                    look_up()
            look_up()
        summary.components = found.count
        summary.mark("link", t)
        self._check_stop()

        t = summary.begin("resolve")
        labels = found.label
        in_closed = simple[labels] & ~touching[labels]
        stored = ~in_closed & touching[labels]
        closed: dict[int, list[tuple[int, PreparedWrite]]] = {}
        stored_ids: list[Identifier] = []
        for k, w in enumerate(written.read_writes()):
            if in_closed[k]:
                closed.setdefault(int(labels[k]), []).append((k, w))
            elif stored[k]:
                stored_ids += w.ids
        for label in [
            label for label, comp in closed.items() if not is_simple(strategy, [w.ids for _, w in comp])
        ]:
            for k, _ in closed.pop(label):  # ids that share a key made it look simple: replayed
                in_closed[k] = False
        block = _Remembered(max(n, 1))
        # A person in a closed-form component: the profile's ucid and the first write of theirs.
        linked_at: dict[str, tuple[int, str]] = {}
        group: list[tuple[int, int, PreparedWrite]] = []
        for label, comp in closed.items():
            ucid = block(comp[0][0])
            for k, w in comp:
                group.append((k, label, w))
                linked_at.setdefault(w.ids[0].value, (k, ucid))  # the person's link comes first
        del closed
        group.sort(key=lambda item: item[0])
        summary.closed_form = len(group)
        spools = Spools.open(folder, "people")
        resolve_group(
            strategy,
            org_id,
            group,
            at,
            block,
            spools,
            profiles.journal,
            self._check_stop,
            profiles.ledger,
        )
        del group
        spools.close()  # sorted and on disk: memory holds a group's rows at most
        # The replayed writes' rows, a sorted group of spools every ``SPOOL_GROUP`` writes,
        # merged with the closed form's at the write (as the CDP bulk path merges its groups').
        groups = [spools, Spools.open(folder, "replay1")]
        replayed = 0
        # The closed-form events, in file index order (the spool is sorted): read as the calls
        # reach them, their data kept as the JSON text the table stores.
        closed_events = spools.events.rows()
        next_closed = next(closed_events, None)
        # Components that touch nothing stored replay in memory (as ``resolve_group`` replays
        # its others), the rest against the store; both keep their change log and journal
        # entries aside, spooled as each write is applied, to number them in file order.
        recorded = Recorded(storage)
        memory = MemoryStorage()
        in_memory = Recorded(memory)
        storage.prefetch(org_id, home, stored_ids, [])
        del stored_ids
        summary.resolved_in_memory = n - int(stored.sum())
        summary.replayed_in_store = int(stored.sum())
        # A component replayed in memory leaves memory for the spools after its last write.
        members = np.argsort(labels, kind="stable")
        last = members[np.searchsorted(labels[members], np.arange(1, found.count + 1)) - 1]
        del members
        done_links: dict[str, str] = {}  # of people in ``written.late`` whose component is done

        def done(ks: list[int]) -> None:
            made = [u for k in ks if (u := block.forget(k)) is not None]
            finished, owners = memory.take(org_id, made)
            group = groups[-1]
            for ucid, p in finished.items():
                group.profiles.append(
                    (
                        org_id,
                        ucid,
                        p.region,
                        p.created_ts,
                        p.updated_ts,
                        p.merged_into,
                        orjson.dumps(p.data).decode(),
                    )
                )
            for (region, ident), (ucid, ts) in owners.items():
                group.ids.append((org_id, region, ident.id_type, ident.value, ucid, ts))
                if ident.id_type == CRM_PERSON_ID and ident.value in written.late:
                    done_links[ident.value] = ucid

        # Every event in the online order: (type, region, ts, entity_id, data JSON).
        events = Spool(folder / "people-events-ordered.rows")
        suppressed = over_limit = 0
        writes = written.read_writes()
        # Each in-memory component's writes so far, until its last.
        of_component: dict[int, list[int]] = {}
        for c, (graph, saved, owners) in enumerate(written.read_calls()):
            if c % 20 == 0:
                self._check_stop()
            events_of: dict[int, tuple[str, str | None, int, str, str]] = {}
            notices_of: dict[int, Sequence[Any]] = {}
            for k in graph:
                w = next(writes)
                if in_closed[k]:
                    notices_of[k] = w.notices
                    continue
                target = recorded if stored[k] else in_memory
                try:
                    outcome = apply_write(target, strategy, w, at, new_ucid=partial(block, k))
                except ProfilehubError as exc:
                    raise _NotSetBased from exc
                result = WriteResult(strategy, outcome)
                if replayed == SPOOL_GROUP:
                    groups[-1].close()
                    groups.append(Spools.open(folder, f"replay{len(groups)}"))
                    replayed = 0
                replayed += 1
                spool_log(groups[-1], [k], target.changes, target.writes, profiles.journal, profiles.ledger)
                target.changes.clear()
                target.writes.clear()
                e = result.event(org_id)
                events_of[k] = (e.type, e.region, e.ts, e.entity_id, orjson.dumps(e.data).decode())
                notices_of[k] = result.notices
                if not stored[k]:
                    of_component.setdefault(int(labels[k]), []).append(k)
            for k, owner in zip(graph, owners, strict=True):
                owner.notices += notices_of.pop(k)
            # The people's ucids as they stand after the call (online: its transaction's end).
            ask = []
            for person in saved:
                pid = person.person["id"]
                hit = linked_at.get(pid)
                if hit is None:
                    ask.append(pid)
                else:
                    person.person["ucid"] = hit[1] if hit[0] < graph.stop else None
            links = [person_link(p) for p in ask]
            found_owners = in_memory.find_owners(org_id, home, links) if ask else {}
            rest = [link for link in links if link not in found_owners]
            if rest:  # a link is in memory or in the store, never both
                found_owners.update(recorded.find_owners(org_id, home, rest))
            by_person = {ident.value: ucid for ident, ucid in found_owners.items()}
            for person in saved:
                pid = person.person["id"]
                if pid not in linked_at:
                    person.person["ucid"] = by_person.get(pid) or done_links.get(pid)
            for k in graph:
                if in_closed[k]:
                    assert next_closed is not None and next_closed[0] == k
                    events.append(next_closed[1:])
                    next_closed = next(closed_events, None)
                else:
                    events.append(events_of.pop(k))
            for person in saved:
                kind = "person.created" if person.created else "person.updated"
                data = orjson.dumps({"person": person.person}).decode()
                events.append((kind, None, person.ts, person.person["id"], data))
                suppressed += carried_suppressed(person)
                over_limit += over_id_limit(person)
            for k in graph:
                label = int(labels[k])
                if last[label] == k and not in_closed[k] and not stored[k]:
                    done(of_component.pop(label))
        storage.flush()
        # Whatever is left in memory (nothing: every component ends), in its tables' key order.
        done([k for ks in of_component.values() for k in ks])
        groups[-1].close()
        summary.mark("resolve", t)
        self._check_stop()

        t = summary.begin("write")

        def blocks(name: str) -> Iterator[list[tuple[Any, ...]]]:
            return merged([getattr(g, name) for g in groups])

        phases = summary.phases
        _stream_rows(conn, "profiles", PROFILE_COLUMNS, chain.from_iterable(blocks("profiles")), phases)
        _stream_rows(conn, "profile_ids", ID_COLUMNS, chain.from_iterable(blocks("ids")), phases)
        _stream_rows(
            conn,
            "changes",
            CHANGE_COLUMNS,
            (
                (row[1], change_id(int(positions[row[0]])), *row[2:])
                for block_ in blocks("changes")
                for row in block_
            ),
            phases,
        )
        base = CLOCK.reserve(max(n, 1))
        _stream_rows(
            conn,
            "profile_writes",
            JOURNAL_COLUMNS,
            ((*r[:2], base + r[2], *r[3:]) for b in blocks("journal") for r in b),
            phases,
        )
        _stream_rows(
            conn,
            "journal_unattached",
            UNATTACHED_COLUMNS,
            ((*r[:2], base + r[2], *r[3:]) for b in blocks("unattached") for r in b),
            phases,
        )
        _stream_rows(
            conn,
            "consent_ledger",
            LEDGER_COLUMNS,
            ((*r[:2], base + r[2], *r[3:]) for b in blocks("ledger") for r in b),
            phases,
        )
        # Events last: taking their numbers holds the counter row until commit
        # (docs/events.md). Any the writer collected earlier in the transaction go first.
        pending = pending_events(conn)
        if pending:
            insert_events(conn, pending)
            pending.clear()
        _stream_events(conn, org_id, events, phases)
        if n:
            profiles.journal_pruner.prune(conn, [org_id], profiles._prune_time(at))
        summary.mark("write", t)
        summary.begin("commit")
        return suppressed, over_limit

    def _report(self, outcomes: _Outcomes, summary: BulkSummary) -> None:
        """The rejects file and the counts, as the online import writes them."""
        rejects_file = checkpoints.rejects_path(self.source)
        lines: list[bytes] = []
        summary.suppressed += outcomes.suppressed
        summary.over_id_limit += outcomes.over_id_limit
        for record, outcome in outcomes.rejects:
            if outcome is None:
                body = error_body(400, record.error or "unreadable record", {"line": "unreadable"})
                reason = "parse"
            else:
                body = error_body(outcome.status, outcome.message, outcome.errors)
                reason = _reason(outcome)
            summary.rejected += 1
            summary.reject_reasons[reason] = summary.reject_reasons.get(reason, 0) + 1
            message = str(body["message"])
            example = message if message.startswith("line ") else f"line {record.line}: {message}"
            summary.reject_examples.setdefault(reason, example)
            lines.append(orjson.dumps({"line": record.line, "record": record.raw, "error": body}))
        if not lines:
            rejects_file.unlink(missing_ok=True)
            return
        rejects_file.write_bytes(b"\n".join(lines) + b"\n")


def _stream_events(conn: Connection, org_id: int, events: Spool, phases: dict[str, float]) -> None:
    """The spooled events (type, region, ts, entity_id, data JSON) numbered from the counter and
    streamed into the table, as ``store.events.insert_events`` numbers them."""
    count = events.count
    if not count:
        return
    first = reserve_event_ids(conn, count)
    _stream_rows(
        conn,
        "events",
        EVENT_COLUMNS,
        (
            (org_id, first + i, feed_of(kind), kind, region, ts, entity, data)
            for i, (kind, region, ts, entity, data) in enumerate(events.rows())
        ),
        phases,
    )


def _bare(error: ProfilehubError | None) -> ProfilehubError | None:
    """``error`` kept for the rejects file without its traceback (and its causes'): the frames of
    the call that raised it would keep the whole call's people and bodies alive to the end."""
    cleared: set[int] = set()
    seen: BaseException | None = error
    while seen is not None and id(seen) not in cleared:
        cleared.add(id(seen))
        seen.__traceback__ = None
        seen = seen.__cause__ or seen.__context__
    return error


def _head_reason(outcome: Outcome | None) -> str:
    if outcome is None:
        return "parse"
    return _reason(outcome) if isinstance(outcome, ProfilehubError) else ""
