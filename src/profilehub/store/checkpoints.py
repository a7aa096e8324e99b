"""SQLite's WAL copied back into the database file by a thread of its own, not by the writer.

In WAL mode a commit appends its pages to ``<db>-wal``; by default the connection whose commit
takes the WAL past 1,000 pages then checkpoints it in that same call: it syncs the WAL, copies its
pages into the database file and syncs that. On ``serve``'s single writer that happened every few
hundred writes and was the batch's commit taking 20-170 ms instead of ~1.5 ms (bench/NOTES-crm.md),
while every write queued behind it waited: the p99 latency of 64 HTTP clients was that stall.

Here the server's writer leaves checkpoints alone (its own automatic one only as a backstop, at
``BACKSTOP_PAGES``) and this thread runs a ``PASSIVE`` checkpoint once the writer has committed
and ``INTERVAL`` seconds have passed since the last one. A passive checkpoint takes no lock that a
writer or reader waits for (it copies what no reader still needs, and stops there), and Python's
sqlite3 module lets other threads run while it syncs, so writes go on meanwhile. What a commit
guarantees is unchanged: ``synchronous=NORMAL`` syncs the WAL at each checkpoint, as before.

The WAL file starts over from its beginning only after a checkpoint that copied all of it, and
one that runs beside commits never has: under sustained writes the WAL grows to the backstop
(~40 MB; the file keeps that size), where the writer's own checkpoint copies what this thread has
not copied yet (at most ``INTERVAL``'s writes) and the WAL starts over. So the writer still
checkpoints, once per 10,000 pages written instead of once per 1,000, and little each time.

How little is what the interval decides. A CRM upsert writes some 10-12 pages of WAL, so 64 clients
fill the 10,000 pages in about 0.4 s: at a 0.25 s interval the writer's backstop found up to
~7,000 pages left, and that batch took 35-65 ms instead of ~13, every write queued behind it
waiting (the slow requests of a round were those batches, each ending within ~15 ms of a WAL
restart; bench/NOTES-crm.md, 2026-12-02). At 0.05 s the worst round's p99 fell by 10-25 ms;
0.02 s gave about the same for ~5% more server CPU a request.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

# Seconds between two checkpoints while the writer commits: short, so that what the writer's
# backstop checkpoint finds left to copy is short too (see above).
INTERVAL = 0.05
# The writer's own automatic checkpoint, should this thread fall behind (SQLite's default: 1,000).
BACKSTOP_PAGES = 10_000


class WalCheckpointer:
    def __init__(self, database: Path, interval: float = INTERVAL) -> None:
        self._database = database
        self._interval = interval
        self._written = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="profilehub-checkpoints", daemon=True)
        self._thread.start()

    def wrote(self) -> None:
        """The writer committed (called after each batch; never blocks)."""
        self._written.set()

    def close(self) -> None:
        self._stopping.set()
        self._written.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        failing = False  # said once per run of failures (a full disk fails each second until freed)
        try:
            while True:
                self._written.wait()
                if self._stopping.is_set():
                    return
                self._written.clear()
                try:
                    if conn is None:
                        conn = sqlite3.connect(self._database, timeout=30, check_same_thread=False)
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    failing = False
                except sqlite3.Error:
                    # The writer's backstop checkpoints meanwhile; try again after its next commit.
                    if not failing:
                        log.warning(
                            "WAL checkpoint failed; the writer checkpoints itself meanwhile", exc_info=True
                        )
                    failing = True
                    if conn is not None:
                        conn.close()
                    conn = None
                if self._stopping.wait(self._interval):
                    return
        finally:
            if conn is not None:
                conn.close()
