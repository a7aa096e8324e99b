"""Rows waiting for the bulk write, kept on disk instead of in memory.

A million records make a few million rows (profiles, ids, change log, journal, events); held as
Python tuples they would take gigabytes. Each table's rows are appended to a file in a temporary
folder and read back one at a time by the write (``COPY`` on PostgreSQL, ``executemany`` over an
iterator on SQLite). The file is a sequence of frames of ``FRAME_ROWS`` rows each, a frame a
``marshal`` dump of a list of tuples behind its length: C code throughout (a JSON line per row
cost a call and an escaped copy of every JSON column per row, each way; ``pickle`` was twice as
slow as ``marshal``, measured), the rows come back as the tuples they were, and reading holds one
frame at a time. ``marshal``'s format is this Python's own: the files live only as long as the
import, in its own temporary folder, and are read only by the process that made them or its
workers (the same interpreter).
"""

from __future__ import annotations

import marshal
import struct
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

# Rows per pickled frame: large enough that a frame's overhead is nothing, small enough that the
# frames the write merges (one per group and table) stay a few MB in all.
FRAME_ROWS = 2000
_LENGTH = struct.Struct("<Q")


class Spool:
    """One table's rows, appended and then read back in order: in the order appended or, with
    ``sort``, in the rows' own order (kept in memory until ``close``; a group's rows at most).
    ``key``, if given, must order the rows as they order themselves (it only sorts them faster)."""

    def __init__(
        self, path: Path, sort: bool = False, key: Callable[[tuple[Any, ...]], Any] | None = None
    ) -> None:
        self.path = path
        self.count = 0
        self._sort = sort
        self._key = key
        self._rows: list[tuple[Any, ...]] = []
        self._file: BinaryIO | None = path.open("wb")

    def append(self, row: tuple[Any, ...]) -> None:
        self.count += 1
        self._rows.append(row)
        if not self._sort and len(self._rows) >= FRAME_ROWS:
            self._flush()

    def extend(self, rows: list[tuple[Any, ...]]) -> None:
        """``append`` each of ``rows`` (a list made for the spool: it may keep it)."""
        self.count += len(rows)
        if not self._rows:
            self._rows = rows
        else:
            self._rows += rows
        if not self._sort and len(self._rows) >= FRAME_ROWS:
            self._flush()

    def _flush(self) -> None:
        rows, self._rows = self._rows, []
        if rows and self._file is not None:
            for start in range(0, len(rows), FRAME_ROWS):
                frame = marshal.dumps(rows[start : start + FRAME_ROWS])
                self._file.write(_LENGTH.pack(len(frame)))
                self._file.write(frame)

    def close(self) -> None:
        if self._file is None:
            return
        if self._sort:
            self._rows.sort(key=self._key)
        self._flush()
        self._file.close()
        self._file = None

    def __getstate__(self) -> dict[str, Any]:
        # Sent back from a worker process once closed: its path and count, no open file.
        self.close()
        return {
            "path": self.path,
            "count": self.count,
            "_sort": self._sort,
            "_key": None,
            "_rows": [],
            "_file": None,
        }

    def rows(self) -> Iterator[tuple[Any, ...]]:
        for block in self.blocks():
            yield from block

    def blocks(self) -> Iterator[list[tuple[Any, ...]]]:
        """The rows in order as ``rows`` gives them, a frame (``FRAME_ROWS``) at a time."""
        self.close()
        with self.path.open("rb") as f:
            while length := f.read(_LENGTH.size):
                yield marshal.loads(f.read(_LENGTH.unpack(length)[0]))

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def merged(spools: Sequence[Spool]) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of ``spools``, each sorted (``Spool(sort=True)``), as one sorted stream in blocks.

    ``heapq.merge`` costs a Python step per row; this takes a block of each spool, hands on every
    buffered row up to the smallest of the spools' last buffered rows (no spool can still give a
    smaller one), sorted together (``list.sort`` merges the runs in C), and reads on."""
    Buffer = tuple[Iterator[list[tuple[Any, ...]]], list[tuple[Any, ...]], int]  # blocks, block, rows taken
    buffers: list[Buffer] = []
    for spool in spools:
        blocks = spool.blocks()
        first = next(blocks, None)
        if first:
            buffers.append((blocks, first, 0))
    while len(buffers) > 1:
        bound = min(rows[-1] for _, rows, _ in buffers)
        out: list[tuple[Any, ...]] = []
        kept: list[Buffer] = []
        for blocks, rows, at in buffers:
            cut = bisect_right(rows, bound, at)
            out += rows[at:cut]
            if cut < len(rows):
                kept.append((blocks, rows, cut))
            elif more := next(blocks, None):
                kept.append((blocks, more, 0))
        buffers = kept
        out.sort()
        yield out
    for blocks, rows, at in buffers:
        yield rows[at:]
        yield from blocks
