"""``import people --bulk``: a whole file of CRM people in one writer transaction, all or nothing.

The online people import (``ingest.people.people_sink``) writes a file batch by batch, each batch
(``--batch-size`` lines, sent to the core ``MAX_BATCH`` bodies at a time) its own transaction:
the people's CRM rows (records, emails, values, change log), then their writes to the identity
graph of the org's home region (link ``crm_person_id``, emails, phone), then the events. A person's
match, its emails' owner checks (409 when an email is another person's) and the graph's merges
all depend on what earlier records did, in file order.

The bulk path runs the same core (``crm.people``: ``_upsert_payload`` then ``_resolve_in_graph``)
on the same calls, in the same order, but inside **one** transaction that holds the locks the
online path takes (the org's ``crm`` scope, then ``profiles:<home region>``) from the first record
to the commit: so it writes exactly the people, emails, links, profiles, change log, journal and
events the online import writes given the same clock (``--at``) and ``--batch-size``, and an
interrupted or failed run leaves nothing. One person store (``PeopleBatch``) and one strategy
serve the whole file, and nothing commits until the end.

A record refused after it changed the transaction (a fault between its rows, never a check) has
the whole transaction's savepoint rolled back and the file applied again without it, as the online
writer does for its group.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.engine import Connection

from profilehub import collector
from profilehub.bulk.engine import BulkSummary, _peak_rss
from profilehub.bulk.interrupted import BulkInterrupted
from profilehub.crm.people import (
    MAX_BATCH,
    FailedCall,
    PersonResult,
    _body_emails,
    _org_writes,
    _OrgWrites,
    _RecordRefused,
    _resolve_in_graph,
    _upsert_payload,
    prepare_people,
)
from profilehub.errors import ProfilehubError, error_body
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
    carried_suppressed,
)
from profilehub.profiles import ProfileService
from profilehub.store.changes import now_ms
from profilehub.store.database import Database, savepoint

Outcome = PersonResult | ProfilehubError


class _Stopped(Exception):
    """The first records were all refused for one reason: roll back, report it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Outcomes:
    """What the transaction reports of the file: the refused records (in file order) and counts."""

    rejects: list[tuple[SourceRecord, ProfilehubError | None]]  # None: unreadable
    created: int = 0
    updated: int = 0
    suppressed: int = 0


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
    ) -> None:
        self.source = source
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
        try:
            with _stop_on_interrupt(stop), collector.tuned():
                t = time.monotonic()
                future: Future[_Outcomes] = self.db.submit(self._job(at, summary))
                while not future.done():
                    wait([future], timeout=1.0)
                    summary.seconds = time.monotonic() - started
                    self.progress(summary)
                try:
                    outcomes = future.result()
                except _Stopped as stopped:
                    summary.seconds = time.monotonic() - started
                    raise ImportStopped(summary, stopped.reason, self.early_stop) from None
                summary.phases["transaction"] = time.monotonic() - t
        except BulkInterrupted as exc:
            summary.seconds = time.monotonic() - started
            exc.summary = summary
            raise
        self._report(outcomes, summary)
        summary.seconds = time.monotonic() - started
        summary.peak_rss_bytes, summary.peak_rss_workers_bytes = _peak_rss()
        self.progress(summary)
        return summary

    def _job(self, at: int, summary: BulkSummary) -> Callable[[Connection], _Outcomes]:
        def job(conn: Connection) -> _Outcomes:
            if conn.dialect.name == "postgresql":
                # The transaction runs for minutes between statements; the server's guard against a
                # frozen client holding locks would end it.
                conn.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = 0")
            refused: dict[tuple[int, int], ProfilehubError] = {}
            while True:
                try:
                    with savepoint(conn):
                        return self._attempt(conn, at, summary, refused)
                except _RecordRefused as again:
                    refused[again.at] = again.error

        return job

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
    ) -> _Outcomes:
        profiles = ProfileService(self.db, clock=lambda: at)
        org: _OrgWrites = _org_writes(conn, profiles, self.org_id)  # the locks, held to the commit
        out = _Outcomes([])
        head: list[str] = []
        index = 0  # the call's number, as ``_RecordRefused`` names it
        summary.read = 0
        for batch, calls in self._calls():
            self._check_stop()
            results: list[Outcome] = []
            for part in calls:
                prepared = prepare_people(profiles, self.org_id, part)
                org.rows.prefetch(_body_emails(part, prepared))
                answers = _upsert_payload(
                    conn, org, index, part, self.matching_attribute, self.actor, prepared, refused
                )
                index += 1
                if isinstance(answers, FailedCall):
                    raise answers.error
                _resolve_in_graph(conn, profiles, org)
                results += answers
            given = iter(results)
            for record in batch:
                outcome = None if record.data is None else next(given)
                if outcome is not None and carried_suppressed(outcome):
                    out.suppressed += 1
                if isinstance(outcome, PersonResult):
                    out.created += outcome.created
                    out.updated += not outcome.created
                else:
                    out.rejects.append((record, outcome))
                if len(head) < self.early_stop:
                    head.append(_head_reason(outcome))
            summary.read += len(batch)
            summary.line, summary.offset = batch[-1].line, batch[-1].end_offset
        if self.early_stop and len(head) >= self.early_stop and len(set(head)) == 1 and head[0]:
            raise _Stopped(head[0])  # nothing is written: the transaction rolls back
        summary.created, summary.updated = out.created, out.updated
        return out

    def _report(self, outcomes: _Outcomes, summary: BulkSummary) -> None:
        """The rejects file and the counts, as the online import writes them."""
        rejects_file = checkpoints.rejects_path(self.source)
        lines: list[bytes] = []
        summary.suppressed += outcomes.suppressed
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


def _head_reason(outcome: Outcome | None) -> str:
    if outcome is None:
        return "parse"
    return _reason(outcome) if isinstance(outcome, ProfilehubError) else ""
