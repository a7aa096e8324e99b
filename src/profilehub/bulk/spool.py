"""Rows waiting for the bulk write, kept on disk instead of in memory.

A million records make a few million rows (profiles, ids, change log, journal, events); held as
Python tuples they would take gigabytes. Each table's rows are appended to a file in a temporary
folder as JSON lines, in the order they were made, and read back one at a time by the write
(``COPY`` on PostgreSQL, ``executemany`` over an iterator on SQLite).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import orjson

_FLUSH_BYTES = 1 << 20
_READ_BYTES = 1 << 18


class Spool:
    """One table's rows, appended and then read back in order: in the order appended or, with
    ``sort``, in the rows' own order (kept in memory until ``close``; a group's rows at most)."""

    def __init__(self, path: Path, sort: bool = False) -> None:
        self.path = path
        self.count = 0
        # One growing buffer: orjson's bytes keep their whole working buffer (~4 KB each), so a
        # list of them would hold far more than the rows.
        self._buffer = bytearray()
        self._rows: list[Sequence[Any]] | None = [] if sort else None
        self._file: BinaryIO | None = path.open("wb")

    def append(self, row: Sequence[Any]) -> None:
        self.count += 1
        if self._rows is not None:
            self._rows.append(row)
            return
        self._buffer += orjson.dumps(row)
        self._buffer += b"\n"
        if len(self._buffer) >= _FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._buffer and self._file is not None:
            self._file.write(self._buffer)
            self._buffer.clear()

    def close(self) -> None:
        if self._rows is not None:
            rows, self._rows = self._rows, None
            rows.sort()  # type: ignore[call-arg]  # rows of one table: comparable tuples
            for row in rows:
                self._buffer += orjson.dumps(row)
                self._buffer += b"\n"
                if len(self._buffer) >= _FLUSH_BYTES:
                    self._flush()
            del rows
        self._flush()
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self) -> dict[str, Any]:
        # Sent back from a worker process once closed: its path and count, no open file.
        self.close()
        return {"path": self.path, "count": self.count, "_buffer": bytearray(), "_rows": None, "_file": None}

    def rows(self) -> Iterator[tuple[Any, ...]]:
        self.close()
        with self.path.open("rb") as f:
            for line in f:
                yield tuple(orjson.loads(line))

    def blocks(self) -> Iterator[list[list[Any]]]:
        """The rows in order as ``rows`` gives them (as lists), a block of about 256 KB at a time."""
        self.close()
        loads = orjson.loads
        with self.path.open("rb") as f:
            while lines := f.readlines(_READ_BYTES):
                yield [loads(line) for line in lines]

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def merged(spools: Sequence[Spool]) -> Iterator[list[list[Any]]]:
    """The rows of ``spools``, each sorted (``Spool(sort=True)``), as one sorted stream in blocks.

    ``heapq.merge`` costs a Python step per row; this takes a block of each spool, hands on every
    buffered row up to the smallest of the spools' last buffered rows (no spool can still give a
    smaller one), sorted together (``list.sort`` merges the runs in C), and reads on."""
    Buffer = tuple[Iterator[list[list[Any]]], list[list[Any]], int]  # blocks, block, rows taken
    buffers: list[Buffer] = []
    for spool in spools:
        blocks = spool.blocks()
        first = next(blocks, None)
        if first:
            buffers.append((blocks, first, 0))
    while len(buffers) > 1:
        bound = min(rows[-1] for _, rows, _ in buffers)
        out: list[list[Any]] = []
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
