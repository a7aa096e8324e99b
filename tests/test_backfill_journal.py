"""A first bulk import into a SQLite file that nobody else has open is written through a rollback
journal, once, instead of through the WAL and a checkpoint (``store.backfill_journal``): the same
store as through the WAL, the file back in WAL mode afterwards, nothing written when the importer is
killed mid-transaction, and the WAL as before when another connection has the file open or the
store already holds profiles. SQLite only: PostgreSQL has no such mode (its imports say None)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from profilehub import bulk
from profilehub.bulk import engine
from profilehub.store.backfill_journal import ROLLBACK, WAL
from profilehub.store.database import Database
from tests.conftest import make_org
from tests.test_bulk_import import (
    BULK,
    ONLINE,
    _ledger,
    bulk_run,
    change_log,
    counts,
    events,
    journal,
    online,
    ugly,
)
from tests.test_import import people, snapshot, write_ndjson

OTHER = 9012
_CLI = "import sys; from profilehub.cli import main; sys.argv[0] = 'profilehub'; main()"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'store.db'}")
    for org_id in (ONLINE, BULK, OTHER):
        make_org(db, org_id)
    yield db
    db.close()


def _journal_mode(file: Path) -> str:
    with closing(sqlite3.connect(file)) as conn:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])


def test_a_first_backfill_is_written_once_and_stores_what_the_wal_stores(
    store: Database, tmp_path: Path
) -> None:
    path = write_ndjson(tmp_path / "ugly.ndjson", ugly())
    first = bulk_run(store, path)
    assert first.journal == ROLLBACK and first.created > 0
    file = store.sqlite_file()
    assert file is not None
    assert not Path(f"{file}-journal").exists()
    assert _journal_mode(file) == "wal"  # and another connection could open it again
    # The store holds profiles now: the same file into another org goes through the WAL.
    second = bulk_run(store, path, org_id=OTHER)
    assert second.journal == WAL
    assert snapshot(store, BULK) == snapshot(store, OTHER)
    assert change_log(store, BULK) == change_log(store, OTHER)
    assert events(store, BULK) == events(store, OTHER)
    online(store, path)  # and both are what the online importer stores
    assert snapshot(store, BULK) == snapshot(store, ONLINE)


def test_another_connection_open_on_the_file_keeps_the_wal(store: Database, tmp_path: Path) -> None:
    file = store.sqlite_file()
    assert file is not None
    with closing(sqlite3.connect(file)) as other:  # a server's reader, say
        assert other.execute("SELECT count(*) FROM profiles").fetchone() == (0,)
        summary = bulk_run(store, write_ndjson(tmp_path / "people.ndjson", people(40)))
        assert summary.journal == WAL
        # it read all along, and reads the import now
        written = other.execute("SELECT count(*) FROM profiles WHERE org_id = ?", (BULK,)).fetchone()
        assert written == (summary.created,)
    assert _journal_mode(file) == "wal"


def test_postgresql_has_no_journal_to_choose(db: Database, tmp_path: Path) -> None:
    make_org(db, BULK)
    summary = bulk_run(db, write_ndjson(tmp_path / "people.ndjson", people(10)))
    assert summary.journal == (None if db.dialect == "postgresql" else ROLLBACK)


def test_an_importer_killed_mid_transaction_leaves_nothing_and_the_file_in_wal_mode(
    store: Database, tmp_path: Path
) -> None:
    file = store.sqlite_file()
    assert file is not None
    url = store.url
    store.close()  # the importer's process is then the only one with the file open
    path = write_ndjson(tmp_path / "big.ndjson", people(60_000))
    cmd = [sys.executable, "-c", _CLI, "import", "cdp", str(path), "--org-id", str(BULK), "--region", "EU"]
    cmd += ["--bulk", "--quiet", "--workers", "0"]
    env = {**os.environ, "PROFILEHUB_DATABASE_URL": url, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    hot = Path(f"{file}-journal")
    try:
        while not hot.exists():  # the transaction has begun writing
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise AssertionError(f"the import ended ({proc.returncode}) before it wrote:\n{out}")
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.communicate(timeout=60)
    assert hot.exists()  # a hot journal: what the transaction changed, to be put back
    reopened = Database(url)
    try:
        assert counts(reopened, BULK) == dict.fromkeys(counts(reopened, BULK), 0)
        assert _journal_mode(file) == "wal"
        assert not hot.exists()
        summary = bulk_run(reopened, write_ndjson(tmp_path / "small.ndjson", people(20)))
        assert summary.journal == ROLLBACK and summary.created > 0
    finally:
        reopened.close()


def test_a_worker_loads_the_logs_of_a_first_backfill_beside_the_importer(
    store: Database, tmp_path: Path
) -> None:
    """With a worker process, a first backfill's change log, journal, ledger and events are loaded
    into a scratch file by the worker and copied in (``bulk.load``): the same rows as online."""
    path = write_ndjson(tmp_path / "ugly.ndjson", ugly() + people(40)[12:])
    summary = bulk_run(store, path, workers=1)
    assert summary.journal == ROLLBACK and "write_scratch_wait" in summary.phases
    online(store, path)
    assert snapshot(store, BULK) == snapshot(store, ONLINE)
    assert change_log(store, BULK) == change_log(store, ONLINE)
    assert journal(store, BULK) == journal(store, ONLINE)
    assert _ledger(store, BULK) == _ledger(store, ONLINE)
    assert events(store, BULK) == events(store, ONLINE)
    with store.read() as conn:  # the log tables' indexes are there again
        names = {
            row[0] for row in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
    assert {"ix_changes_entity", "ix_events_entity", "ix_events_feed"} <= names


def test_a_stop_while_the_worker_loads_writes_nothing(
    store: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_ndjson(tmp_path / "people.ndjson", people(200))
    importers: list[engine.BulkImporter] = []
    real_init, real_stream = engine.BulkImporter.__init__, engine._stream_rows

    def keep(self: engine.BulkImporter, *a: Any, **kw: Any) -> None:
        real_init(self, *a, **kw)
        importers.append(self)

    def stream_then_press_ctrl_c(conn: Any, table: str, *a: Any, **kw: Any) -> None:
        real_stream(conn, table, *a, **kw)
        if table == "profile_ids":  # the importer's part loaded; the worker's still to copy
            importers[0]._stop.set()

    monkeypatch.setattr(engine.BulkImporter, "__init__", keep)
    monkeypatch.setattr(engine, "_stream_rows", stream_then_press_ctrl_c)
    with pytest.raises(bulk.BulkInterrupted):
        bulk_run(store, path, workers=1)
    assert counts(store, BULK) == dict.fromkeys(counts(store, BULK), 0)
    file = store.sqlite_file()
    assert file is not None and _journal_mode(file) == "wal"
