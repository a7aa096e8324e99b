"""A first backfill into a SQLite file that nobody else has open is written once, not twice.

In WAL mode (how profilehub runs SQLite, so that readers never wait for the writer) every page a
transaction writes goes to the WAL first, and a checkpoint copies it into the database file
afterwards. For a bulk import into an empty store that is the whole import written twice: a
million records are ~4 GB in the WAL, then ~4 GB copied (14 of a 97 s import, measured), and the
disk must hold both copies at once (~80 GB at ten million records).

A rollback journal keeps the old content of the pages a transaction changes; pages beyond the
file's size at the start of the transaction have no old content and are not journaled, so a load
into an empty store is written once, straight into the file. Leaving WAL mode needs the file to
itself, and readers would wait on the writer in that mode, so the importer takes it only when:

- the file holds no profiles yet (a first backfill: what was measured; into a filled store the
  changed pages would be journaled anyway, and WAL stays);
- no other process has the file open (SQLite refuses the switch otherwise, and the import goes
  through the WAL as before);
- for as long as the import's transaction runs, the file stays this process's alone
  (``locking_mode=EXCLUSIVE``): another process opening it meanwhile waits, then gets
  "database is locked". The file is switched back to WAL before anyone else can open it.

All-or-nothing holds by SQLite's own means in both modes: a process killed mid-import leaves a
hot journal, which the next connection to the file rolls back before reading it; that connection
then switches the file back to WAL (``store.database._enable_wal``). While in this mode the
connection syncs fully (``synchronous=FULL``: with a rollback journal ``NORMAL`` can lose the
file to a power cut at the wrong moment, SQLite's documentation says).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection

if TYPE_CHECKING:
    from profilehub.store.database import Database

log = logging.getLogger(__name__)

ROLLBACK = "rollback journal"
WAL = "WAL"


def _to_rollback_journal(conn: Connection) -> bool:
    raw = conn.connection.driver_connection
    assert raw is not None
    raw.execute("PRAGMA locking_mode=EXCLUSIVE")
    try:
        mode = str(raw.execute("PRAGMA main.journal_mode=DELETE").fetchone()[0]).lower()
    except sqlite3.OperationalError:  # "database is locked": another connection has it open
        mode = "wal"
    if mode != "delete":
        # A connection in WAL mode keeps its exclusive locking until it is closed.
        conn.invalidate()
        return False
    raw.execute("PRAGMA synchronous=FULL")
    return True


def _back_to_wal(conn: Connection) -> None:
    raw = conn.connection.driver_connection
    assert raw is not None
    try:
        # ``main.``: the import's scratch files are still attached (``bulk.load``), and a bare
        # ``journal_mode`` would switch them too, making WAL files in its work folder (which, the
        # import stopped by that folder's full disk, failed the switch back).
        raw.execute("PRAGMA main.journal_mode=WAL")
    finally:
        # Closed, its locks go with it (and its settings: the pool opens a new one as usual).
        conn.invalidate()


def _holds_profiles(db: Database) -> bool:
    with db.read() as conn:
        return conn.exec_driver_sql("SELECT 1 FROM profile_ids LIMIT 1").first() is not None


@contextmanager
def written_once(db: Database) -> Iterator[str | None]:
    """For the block (one import's transaction, run by ``db``'s writer): the SQLite file in
    rollback-journal mode and this process's alone, where the module's conditions hold. Yields
    which journal the block writes through (``ROLLBACK`` or ``WAL``; None on PostgreSQL)."""
    if db.sqlite_file() is None:
        yield None if db.dialect != "sqlite" else WAL
        return
    if db.writers_present() or _holds_profiles(db):
        yield WAL
        return
    db.release_readers()  # this process's own idle readers would refuse the switch too
    if not db.on_writer_connection(_to_rollback_journal):
        log.info("another process has the SQLite file open: the import writes through the WAL")
        yield WAL
        return
    try:
        yield ROLLBACK
    finally:
        db.on_writer_connection(_back_to_wal)
