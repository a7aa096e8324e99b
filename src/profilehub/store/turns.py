"""Turns at one SQLite file's write lock, shared fairly between profilehub processes.

SQLite's own lock is not fair: a writer that finds the file locked sleeps in its busy handler (for
up to 100 ms between looks), while the process that just committed begins its next transaction at
once. An importer writing batch after batch therefore kept a server beside it from writing at all.
So every profilehub writer of a file takes a turn first, with two advisory locks (``flock``) on
files beside the database:

- ``<db>-writer``: held, exclusively, for the whole write transaction;
- ``<db>-waiting``: held, shared, by each writer waiting for ``<db>-writer``;
- ``<db>-present``: held, shared, by every writer but the importer's for as long as it is open,
  so an importer knows from its start whether a server shares the file.

Before a turn, every writer lets those waiting go first (each gets one turn), so two servers or a
server and an importer alternate instead of the one that just committed going on. A polite writer
(the importer) also yields, while others write or wait, for as long as its own last turn lasted
before it queues up itself: when both want the lock, the server gets about half of it. Yields last
at most ``_MAX_YIELD`` seconds, so nobody starves. Waiters look for the lock every millisecond, so
a turn passes within about a millisecond of the commit. Other programs
writing the file still meet SQLite's lock and busy timeout as before.

PostgreSQL's writers wait on row and advisory locks, in order, and need none of this for
correctness; the workers of one ``serve --workers N`` take turns all the same (files in a folder
of their own), so that each gathers its batch once the other has committed rather than waiting,
batch in hand, inside its transaction (``Database``'s ``postgres_turns``).
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
# Set by ``serve --workers N`` for its workers on PostgreSQL: the folder of their writer turns
# (``Database``'s ``postgres_turns``).
POSTGRES_TURNS_ENV = "PROFILEHUB_SERVE_WRITER_TURNS"


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
        self._present = os.open(f"{database}-present", os.O_RDWR | os.O_CREAT, 0o644)
        if not polite:
            fcntl.flock(self._present, fcntl.LOCK_SH)
        self._lock = threading.Lock()  # the descriptors' locks belong to one thread at a time
        self._yielded = 0.0
        self._last_held = 0.0  # how long this writer's last turn lasted

    def _waiters(self) -> bool:
        if _try(self._waiting, fcntl.LOCK_EX):
            fcntl.flock(self._waiting, fcntl.LOCK_UN)
            return False
        return True

    def others_waiting(self) -> bool:
        """Whether a writer of another process waits for the file now (or, for a polite writer,
        did at its last turns)."""
        return time.monotonic() - self._yielded < _RECENT or self._waiters()

    def others_present(self) -> bool:
        """Whether another process has a (not polite) writer of the file open: a server."""
        if _try(self._present, fcntl.LOCK_EX):
            fcntl.flock(self._present, fcntl.LOCK_UN)
            return False
        return True

    def _share(self) -> bool:
        """A polite writer's yield: while others write or wait, for as long as its own last turn
        lasted (an even share of the lock when both want it). True when the lock came free and is
        now ours."""
        deadline = time.monotonic() + min(_MAX_YIELD, self._last_held)
        while True:
            if not self._waiters() and _try(self._writer, fcntl.LOCK_EX):
                return True
            self._yielded = time.monotonic()
            if self._yielded > deadline:
                return False
            time.sleep(_POLL)

    def _let_waiters_go_first(self) -> None:
        # Granted once every writer that waits has had its turn (a waiter stops waiting then).
        if self._waiters() and _poll(self._waiting, fcntl.LOCK_EX, _MAX_YIELD):
            fcntl.flock(self._waiting, fcntl.LOCK_UN)

    def _take(self) -> bool:
        if self.polite and self._share():
            return True
        self._let_waiters_go_first()
        if _try(self._writer, fcntl.LOCK_EX):
            return True
        fcntl.flock(self._waiting, fcntl.LOCK_SH)  # queue up: the next writer lets us go first
        try:
            return _poll(self._writer, fcntl.LOCK_EX, _MAX_WAIT)
        finally:
            fcntl.flock(self._waiting, fcntl.LOCK_UN)

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._lock:
            got = self._take()
            started = time.monotonic()
            try:
                yield
            finally:
                self._last_held = time.monotonic() - started
                if got:
                    fcntl.flock(self._writer, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._writer >= 0:  # a Database may be closed twice (its app's lifespan, then a test)
            os.close(self._writer)
            os.close(self._waiting)
            os.close(self._present)
            self._writer = self._waiting = self._present = -1
