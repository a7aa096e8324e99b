"""Import progress kept in the database, for ``serve``'s ``/metrics``.

``profilehub import`` is a process of its own, often short-lived, maybe on another machine than
the servers: Prometheus could not count on scraping it. So each run keeps one row of
``import_runs`` up to date (at its start, at most once a second as batches are committed, and at
its end), and every server's ``/metrics`` reads those rows at scrape time. A run is shown until an
hour after its last update; a run whose process was killed stays ``running`` but stops being
updated, which ``profilehub_import_updated_timestamp_seconds`` shows. Rows are deleted a week after
their last update (by the org's next import).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.ingest.runner import ImportSummary
from profilehub.store.database import Database
from profilehub.store.tables import import_runs

SHOWN_FOR_MS = 3600 * 1000
KEPT_FOR_MS = 7 * 24 * 3600 * 1000
UPDATE_EVERY_S = 1.0
STATES = ("running", "done", "interrupted", "stopped", "failed")
Clock = Callable[[], float]


@dataclass(frozen=True)
class ImportRun:
    org_id: int
    run_id: str
    kind: str
    source: str
    state: str
    source_bytes: int
    read_bytes: int
    records: dict[str, int]  # read, created, updated, rejected
    started_ts: int
    updated_ts: int
    finished_ts: int | None


def start_run(conn: Connection, org_id: int, kind: str, source: str, source_bytes: int, now: int) -> str:
    """A new running import of ``org_id``; the org's runs not updated for a week are deleted."""
    conn.execute(
        import_runs.delete().where(
            import_runs.c.org_id == org_id, import_runs.c.updated_ts < now - KEPT_FOR_MS
        )
    )
    run_id = uuid.uuid4().hex
    conn.execute(
        import_runs.insert().values(
            org_id=org_id,
            run_id=run_id,
            kind=kind,
            source=source[:255],
            state="running",
            source_bytes=source_bytes,
            read_bytes=0,
            records_read=0,
            records_created=0,
            records_updated=0,
            records_rejected=0,
            started_ts=now,
            updated_ts=now,
            finished_ts=None,
        )
    )
    return run_id


def update_run(
    conn: Connection, org_id: int, run_id: str, summary: ImportSummary, now: int, state: str = "running"
) -> None:
    conn.execute(
        import_runs.update()
        .where(import_runs.c.org_id == org_id, import_runs.c.run_id == run_id)
        .values(
            state=state,
            read_bytes=summary.offset,
            records_read=summary.read,
            records_created=summary.created,
            records_updated=summary.updated,
            records_rejected=summary.rejected,
            updated_ts=now,
            finished_ts=None if state == "running" else now,
        )
    )


def recent_runs(conn: Connection, now: int) -> list[ImportRun]:
    """Every org's runs updated in the last hour, oldest first."""
    rows = conn.execute(
        sa.select(import_runs)
        .where(import_runs.c.updated_ts >= now - SHOWN_FOR_MS)
        .order_by(import_runs.c.started_ts, import_runs.c.run_id)
    ).all()
    return [
        ImportRun(
            org_id=r.org_id,
            run_id=r.run_id,
            kind=r.kind,
            source=r.source,
            state=r.state,
            source_bytes=r.source_bytes,
            read_bytes=r.read_bytes,
            records={
                "read": r.records_read,
                "created": r.records_created,
                "updated": r.records_updated,
                "rejected": r.records_rejected,
            },
            started_ts=r.started_ts,
            updated_ts=r.updated_ts,
            finished_ts=r.finished_ts,
        )
        for r in rows
    ]


class ProgressRecorder:
    """One import run's row: ``start`` it, pass the recorder as the importer's progress callback,
    ``finish`` it with how the run ended."""

    def __init__(
        self, database: Database, org_id: int, kind: str, source: Path, clock: Clock = time.time
    ) -> None:
        self.database = database
        self.org_id = org_id
        self.kind = kind
        self.source = source
        self.clock = clock
        self.run_id = ""
        self._last = 0.0

    def _now(self) -> int:
        return int(self.clock() * 1000)

    def start(self) -> None:
        size, now = self.source.stat().st_size, self._now()
        self.run_id = str(
            self.database.write(lambda c: start_run(c, self.org_id, self.kind, self.source.name, size, now))
        )
        self._last = self.clock()

    def __call__(self, summary: ImportSummary) -> None:
        """After each committed batch; written at most once per ``UPDATE_EVERY_S``."""
        if self.clock() - self._last < UPDATE_EVERY_S:
            return
        self._last = self.clock()
        self._write(summary, "running")

    def finish(self, summary: ImportSummary, state: str) -> None:
        self._write(summary, state)

    def _write(self, summary: ImportSummary, state: str) -> None:
        now = self._now()
        self.database.write(lambda c: update_run(c, self.org_id, self.run_id, summary, now, state))


def runs_to_show(database: Database, clock: Clock = time.time) -> list[ImportRun]:
    """``recent_runs`` as of now: what ``/metrics`` shows."""
    with database.read() as conn:
        return recent_runs(conn, int(clock() * 1000))
