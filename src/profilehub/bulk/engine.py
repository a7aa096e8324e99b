"""``run_bulk_import``: read and prepare the whole file, then resolve and write it in one transaction.

Phases, each timed in ``BulkSummary.phases``:

1. **read**: every record of the file, with its line (the online importer's readers, so NDJSON
   and CSV with ``--map`` read alike).
2. **prepare**: each record validated by the online parser (``parse_write``) and its ids
   normalised and hashed (``prepare_write``), in worker processes; a refused record goes to the
   rejects file exactly as online.
3. **resolve and write**: one writer transaction holding the locks of the scopes written; the
   writes are resolved in file order by the identity core (``apply_write``) at the one time
   ``at``, and their final rows, change log, journal and events written in bulk. An interrupted
   or failed run rolls the transaction back: nothing of it is written.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from sqlalchemy.engine import Connection

from profilehub import collector
from profilehub.errors import BadRequest, ProfilehubError, error_body
from profilehub.identity.normalize import Identifier
from profilehub.identity.resolve import PreparedWrite, apply_write
from profilehub.identity.strategy import Strategy
from profilehub.ingest import checkpoint as checkpoints
from profilehub.ingest.cdp import CdpSink, profile_write
from profilehub.ingest.reader import SourceRecord
from profilehub.ingest.runner import (
    EARLY_STOP_RECORDS,
    ImportStopped,
    ImportSummary,
    Progress,
    RecordSource,
    _reason,
    _start_worker,
    _stop_on_interrupt,
    carried_suppressed,
    default_workers,
)
from profilehub.profiles import Prepared, WriteResult, prepare_write
from profilehub.store.changes import now_ms
from profilehub.store.database import lock_scope, savepoint
from profilehub.store.events import EventRow, append_events
from profilehub.store.profile_storage import profile_storage

# Records per job handed to a worker process: large enough that pickling is a small share.
PREPARE_CHUNK = 5000
# How often (records) the resolve loop looks whether Ctrl-C was pressed.
STOP_CHECK_EVERY = 1000


class BulkInterrupted(ProfilehubError):
    """Ctrl-C stopped a bulk import: its transaction was rolled back, nothing of it is written."""

    status = 499
    summary: ImportSummary | None = None

    def __init__(
        self,
        message: str = "interrupted: the bulk import was rolled back, nothing of it is written",
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)


@dataclass
class BulkSummary(ImportSummary):
    """The online importer's summary, and what the bulk path adds: its clock, its phases' times
    (seconds) and the peak resident memory of the importer and of its worker processes."""

    at: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    peak_rss_bytes: int = 0
    peak_rss_workers_bytes: int = 0


def _peak_rss() -> tuple[int, int]:
    # ru_maxrss is in KiB on Linux; RUSAGE_CHILDREN is the largest of the waited-for children.
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return me, children


def prepare_chunk(
    strategy: Strategy, org_id: int, region: str, actor: str, records: Sequence[dict[str, Any] | None]
) -> Prepared:
    """Each record as the online importer prepares it (``parse_write`` then ``prepare_write``):
    a ``PreparedWrite`` or the error refusing it; None (an unreadable line) stays None's slot."""
    items: list[PreparedWrite | ProfilehubError] = []
    for record in records:
        if record is None:
            items.append(BadRequest("unreadable record", field="line"))  # the reader's reject stands
            continue
        try:
            items.append(prepare_write(strategy, profile_write(record, org_id, region), actor))
        except ProfilehubError as exc:
            items.append(exc)
    return Prepared(org_id, strategy.version, items)


@dataclass
class _Plan:
    """The file as the transaction needs it: one slot per record, in file order."""

    records: list[SourceRecord]
    items: list[PreparedWrite | ProfilehubError | None]  # None: unreadable line
    strategy_version: int


class _Again(Exception):
    """A write was refused while it applied: roll back and apply the rest again without it."""


class BulkImporter:
    def __init__(
        self,
        source: Path,
        records: RecordSource,
        sink: CdpSink,
        *,
        progress: Progress | None = None,
        workers: int | None = None,
        early_stop: int = EARLY_STOP_RECORDS,
        at: int | None = None,
    ) -> None:
        self.source = source
        self.records = records
        self.sink = sink
        self.progress = progress or (lambda _summary: None)
        self.workers = default_workers() if workers is None else workers
        self.early_stop = early_stop
        self.at = at
        self._stop = threading.Event()
        self.summary: BulkSummary | None = None

    # --- phases ---
    def _read(self, summary: BulkSummary) -> list[SourceRecord]:
        out = list(self.records(0, 0))
        summary.offset = summary.source_size
        summary.line = out[-1].line if out else 0
        return out

    def _prepare(
        self, strategy: Strategy, records: list[SourceRecord]
    ) -> list[PreparedWrite | ProfilehubError | None]:
        sink = self.sink
        data = [r.data for r in records]
        chunks = [data[i : i + PREPARE_CHUNK] for i in range(0, len(data), PREPARE_CHUNK)]
        args = (strategy, sink.org_id, sink.region, sink.actor)
        prepared: list[Prepared] = []
        if self.workers and len(chunks) > 1:
            # spawn, not fork: the database writer's thread already runs in this process
            with ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(os.getpid(),),
            ) as pool:
                futures = [pool.submit(prepare_chunk, *args, chunk) for chunk in chunks]
                for f in futures:
                    if self._stop.is_set():
                        for other in futures:
                            other.cancel()
                        raise BulkInterrupted
                    prepared.append(f.result())
        else:
            for chunk in chunks:
                if self._stop.is_set():
                    raise BulkInterrupted
                prepared.append(prepare_chunk(*args, chunk))
        items: list[PreparedWrite | ProfilehubError | None] = []
        for p in prepared:
            items += p.items
        return [None if r.data is None else item for r, item in zip(records, items, strict=True)]

    def _job(self, plan: _Plan, at: int, summary: BulkSummary) -> Any:
        sink = self.sink
        service = sink.service
        org_id = sink.org_id

        def job(conn: Connection) -> dict[int, ProfilehubError]:
            strategy = service.strategies.get(conn, org_id)
            items = plan.items
            if strategy.version != plan.strategy_version:
                # The org's strategy changed since the file was prepared: prepared again under the
                # locks, as the online writer does with a batch prepared under an older version.
                items = [
                    None if r.data is None else i
                    for r, i in zip(
                        plan.records,
                        prepare_chunk(
                            strategy, org_id, sink.region, sink.actor, [r.data for r in plan.records]
                        ).items,
                        strict=True,
                    )
                ]
            ready = [(n, w) for n, w in enumerate(items) if isinstance(w, PreparedWrite)]
            scopes: dict[str, tuple[list[Identifier], list[str]]] = {}
            for _, w in ready:
                ids, ucids = scopes.setdefault(w.region, ([], []))
                ids += w.ids
                if w.ucid is not None:
                    ucids.append(w.ucid)
            for region in sorted(scopes):
                lock_scope(conn, org_id, f"profiles:{region}")
            refused: dict[int, ProfilehubError] = {}
            while True:
                try:
                    with savepoint(conn):
                        self._apply(conn, strategy, scopes, ready, refused, at, summary)
                        return refused
                except _Again:
                    continue

        return job

    def _apply(
        self,
        conn: Connection,
        strategy: Strategy,
        scopes: dict[str, tuple[list[Identifier], list[str]]],
        ready: list[tuple[int, PreparedWrite]],
        refused: dict[int, ProfilehubError],
        at: int,
        summary: BulkSummary,
    ) -> None:
        service = self.sink.service
        org_id = self.sink.org_id
        storage = profile_storage(conn, service.journal)
        for region, (ids, ucids) in sorted(scopes.items()):
            storage.prefetch(org_id, region, ids, ucids)
        events: list[EventRow] = []
        again = False
        created = updated = 0
        for k, (index, write) in enumerate(ready):
            if k % STOP_CHECK_EVERY == 0:
                if self._stop.is_set():
                    raise BulkInterrupted
                summary.created, summary.updated = created, updated
            if index in refused:
                continue
            try:
                result = WriteResult(strategy, apply_write(storage, strategy, write, at))
            except ProfilehubError as exc:
                refused[index] = exc
                again = True
                continue
            if result.created:
                created += 1
            else:
                updated += 1
            events.append(result.event(org_id))
        if again:
            raise _Again
        summary.created, summary.updated = created, updated
        storage.flush()
        if service.journal and ready:
            service.journal_pruner.prune(conn, [org_id], at)
        append_events(conn, events)

    # --- the run ---
    def run(self) -> BulkSummary:
        source = self.source
        size = source.stat().st_size
        at = self.at if self.at is not None else now_ms()
        summary = BulkSummary(source, size, at=at)
        self.summary = summary
        started = time.monotonic()
        stop = self._stop = threading.Event()
        sink = self.sink
        database = sink.service.db

        def phase(name: str, began: float) -> None:
            summary.phases[name] = time.monotonic() - began
            summary.seconds = time.monotonic() - started
            summary.peak_rss_bytes, summary.peak_rss_workers_bytes = _peak_rss()

        try:
            with _stop_on_interrupt(stop), collector.tuned():
                t = time.monotonic()
                records = self._read(summary)
                phase("read", t)
                self.progress(summary)
                t = time.monotonic()
                with database.read() as conn:
                    strategy = sink.service.strategies.get(conn, sink.org_id)
                items = self._prepare(strategy, records)
                phase("prepare", t)
                self._check_head(records, items, summary)
                t = time.monotonic()
                plan = _Plan(records, items, strategy.version)
                future: Future[dict[int, ProfilehubError]] = database.submit(self._job(plan, at, summary))
                while not future.done():
                    wait([future], timeout=1.0)
                    summary.seconds = time.monotonic() - started
                    self.progress(summary)
                refused = future.result()
                phase("resolve_write", t)
        except BulkInterrupted as exc:
            summary.seconds = time.monotonic() - started
            exc.summary = summary
            raise
        self._finish(records, items, refused, summary)
        summary.seconds = time.monotonic() - started
        summary.peak_rss_bytes, summary.peak_rss_workers_bytes = _peak_rss()
        self.progress(summary)
        return summary

    def _check_head(
        self,
        records: list[SourceRecord],
        items: list[PreparedWrite | ProfilehubError | None],
        summary: BulkSummary,
    ) -> None:
        """As online: when the first ``early_stop`` records were all refused for one reason (a
        wrong org, region or mapping), stop; here before anything is written."""
        n = self.early_stop
        if not n or len(records) < n:
            return
        reasons = {
            "parse" if item is None else _reason(item) if isinstance(item, ProfilehubError) else ""
            for item in items[:n]
        }
        if len(reasons) == 1 and "" not in reasons:
            reason = reasons.pop()
            self._finish(records[:n], items[:n], {}, summary)
            raise ImportStopped(summary, reason, n)

    def _finish(
        self,
        records: list[SourceRecord],
        items: list[PreparedWrite | ProfilehubError | None],
        refused: dict[int, ProfilehubError],
        summary: BulkSummary,
    ) -> None:
        """Counts and the rejects file (the online format, in line order)."""
        rejects_file = checkpoints.rejects_path(self.source)
        summary.read = len(records)
        summary.rejected = 0
        summary.reject_reasons, summary.reject_examples = {}, {}
        with rejects_file.open("wb") as rejects:
            for index, (record, item) in enumerate(zip(records, items, strict=True)):
                summary.line = record.line
                if item is None:
                    body = error_body(400, record.error or "unreadable record", {"line": "unreadable"})
                    self._reject(record, body, "parse", summary, rejects)
                    continue
                error = refused.get(index) if isinstance(item, PreparedWrite) else item
                if carried_suppressed(item if error is None else error):
                    summary.suppressed += 1
                if error is not None:
                    body = error_body(error.status, error.message, error.errors)
                    self._reject(record, body, _reason(error), summary, rejects)
        if summary.rejected == 0:
            rejects_file.unlink(missing_ok=True)

    def _reject(
        self,
        record: SourceRecord,
        error: dict[str, Any],
        reason: str,
        summary: BulkSummary,
        rejects: BinaryIO,
    ) -> None:
        summary.rejected += 1
        summary.reject_reasons[reason] = summary.reject_reasons.get(reason, 0) + 1
        message = str(error["message"])
        example = message if message.startswith("line ") else f"line {record.line}: {message}"
        summary.reject_examples.setdefault(reason, example)
        rejects.write(orjson.dumps({"line": record.line, "record": record.raw, "error": error}) + b"\n")


def run_bulk_import(
    source: Path,
    records: RecordSource,
    sink: CdpSink,
    *,
    progress: Progress | None = None,
    workers: int | None = None,
    early_stop: int = EARLY_STOP_RECORDS,
    at: int | None = None,
    **_online_only: Any,
) -> BulkSummary:
    """Import ``source`` through the bulk path; the arguments of ``ingest.runner.Importer`` (its
    ``batch_size`` and ``shared`` mean nothing here and are accepted and ignored) plus ``at``, the
    one time (epoch ms) every record is written at (default: the run's start).

    Raises ``BulkInterrupted`` (nothing written) on Ctrl-C, ``ImportStopped`` (nothing written)
    when the first records are all refused for one reason.
    """
    importer = BulkImporter(
        source, records, sink, progress=progress, workers=workers, early_stop=early_stop, at=at
    )
    return importer.run()
