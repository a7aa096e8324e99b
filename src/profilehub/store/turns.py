"""Turns at one SQLite file's write lock, shared fairly between profilehub processes.

SQLite's own lock is not fair: a writer that finds the file locked sleeps in its busy handler (for
up to 100 ms between looks), while the process that just committed begins its next transaction at
once. An importer writing batch after batch therefore kept a server beside it from writing at all.
So every profilehub writer of a file takes a turn first, with two advisory locks (``flock``) on
files beside the database:

- ``<db>-writer``: held, exclusively, for the whole write transaction;
- ``<db>-waiting``: held, shared, by each writer waiting for ``<db>-writer``.

A polite writer (the importer) looks at ``<db>-waiting`` before each turn and, while anyone waits,
lets them go first (for at most ``_MAX_YIELD`` seconds, so it never starves). Waiters look for the
lock every millisecond, so a turn passes within about a millisecond of the commit. Other programs
writing the file still meet SQLite's lock and busy timeout as before; PostgreSQL needs none of this
(its writers wait on row locks, in order).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_POLL = 0.001  # seconds between looks at a lock held by another process
_MAX_WAIT = 30.0  # then the transaction goes ahead and SQLite's busy timeout decides, as before
_MAX_YIELD = 2.0  # a polite writer lets waiters go first for at most this long per turn
_RECENT = 1.0  # a polite writer that yielded this recently is told writers are waiting


def _try(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _poll(fd: int, operation: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not _try(fd, operation):
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL)
    return True


class WriterTurns:
    def __init__(self, database: Path, *, polite: bool = False) -> None:
        self.polite = polite
        self._writer = os.open(f"{database}-writer", os.O_RDWR | os.O_CREAT, 0o644)
        self._waiting = os.open(f"{database}-waiting", os.O_RDWR | os.O_CREAT, 0o644)
        self._lock = threading.Lock()  # the descriptors' locks belong to one thread at a time
        self._yielded = 0.0

    def others_waiting(self) -> bool:
        """Whether a writer of another process waits for the file now (or, for a polite writer,
        did at its last turns)."""
        if time.monotonic() - self._yielded < _RECENT:
            return True
        if _try(self._waiting, fcntl.LOCK_EX):
            fcntl.flock(self._waiting, fcntl.LOCK_UN)
            return False
        return True

    def _let_waiters_go_first(self) -> None:
        if _try(self._waiting, fcntl.LOCK_EX):
            fcntl.flock(self._waiting, fcntl.LOCK_UN)
            return
        self._yielded = time.monotonic()
        # Granted once every waiter has its turn (a waiter leaves the queue when it gets one).
        if _poll(self._waiting, fcntl.LOCK_EX, _MAX_YIELD):
            fcntl.flock(self._waiting, fcntl.LOCK_UN)

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._lock:
            if self.polite:
                self._let_waiters_go_first()
            got = _try(self._writer, fcntl.LOCK_EX)
            if not got:
                if self.polite:
                    got = _poll(self._writer, fcntl.LOCK_EX, _MAX_WAIT)
                else:
                    fcntl.flock(self._waiting, fcntl.LOCK_SH)  # queue up: polite writers yield
                    try:
                        got = _poll(self._writer, fcntl.LOCK_EX, _MAX_WAIT)
                    finally:
                        fcntl.flock(self._waiting, fcntl.LOCK_UN)
            try:
                yield
            finally:
                if got:
                    fcntl.flock(self._writer, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._writer >= 0:  # a Database may be closed twice (its app's lifespan, then a test)
            os.close(self._writer)
            os.close(self._waiting)
            self._writer = self._waiting = -1
