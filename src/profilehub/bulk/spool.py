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

# Rows per frame at most: large enough that a frame's overhead is nothing.
FRAME_ROWS = 2000
# A frame's bytes at most (``frame_bytes``): the write's merge holds a frame of every spool it
# merges at once, so their size, not their rows, is what bounds it. At ten million records there
# are 500 groups, and 2,000 events' rows (about 1 KB of JSON each) a group came to 1 GB a table
# in the merge, twice over with the rows it hands on: 5.2 GB at the peak, measured.
FRAME_BYTES = 1 << 20
# The frames one merge step holds, all spools together (``marshal`` bytes; as Python objects
# 1.2-3.5 times that: long JSON strings, short id rows), and the smallest frame worth reading.
MERGE_BYTES = 32 << 20
MIN_FRAME_BYTES = 16 << 10
# Spools merged at once: with more, ``merged`` merges them in passes (each a spool again).
MERGE_FAN_IN = MERGE_BYTES // MIN_FRAME_BYTES
_LENGTH = struct.Struct("<Q")


def frame_bytes(spools: int) -> int:
    """The frame size for spools that are to be merged ``spools`` at a time: together their
    frames stay within ``MERGE_BYTES`` (at most ``FRAME_BYTES`` each, at least ``MIN_FRAME_BYTES``,
    beyond which ``merged`` goes in passes)."""
    return max(MIN_FRAME_BYTES, min(FRAME_BYTES, MERGE_BYTES // max(1, min(spools, MERGE_FAN_IN))))


class Spool:
    """One table's rows, appended and then read back in order: in the order appended or, with
    ``sort``, in the rows' own order (kept in memory until ``close``; a group's rows at most).
    ``key``, if given, must order the rows as they order themselves (it only sorts them faster).
    Frames hold up to ``FRAME_ROWS`` rows and about ``frame`` bytes (never more than twice that,
    unless one row alone is larger): the rows a frame takes follow the size of the last."""

    def __init__(
        self,
        path: Path,
        sort: bool = False,
        key: Callable[[tuple[Any, ...]], Any] | None = None,
        frame: int = FRAME_BYTES,
    ) -> None:
        self.path = path
        self.count = 0
        self._sort = sort
        self._key = key
        self._frame = frame
        self._per_frame = FRAME_ROWS
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
        if not rows or self._file is None:
            return
        start, per, limit = 0, self._per_frame, self._frame
        while start < len(rows):
            part = rows[start : start + per]
            frame = marshal.dumps(part)
            while len(frame) > 2 * limit and len(part) > 1:  # rows larger than the last: fewer
                part = part[: max(1, len(part) * limit // len(frame))]
                frame = marshal.dumps(part)
            self._file.write(_LENGTH.pack(len(frame)))
            self._file.write(frame)
            start += len(part)
            per = max(1, min(FRAME_ROWS, len(part) * limit // max(1, len(frame))))
        self._per_frame = per

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
            "_frame": self._frame,
            "_per_frame": self._per_frame,
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


def merged(
    spools: Sequence[Spool],
    fan_in: int = MERGE_FAN_IN,
    key: Callable[[tuple[Any, ...]], Any] | None = None,
) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of ``spools``, each sorted (``Spool(sort=True)``), as one sorted stream in blocks.

    ``heapq.merge`` costs a Python step per row; this takes a frame of each spool, hands on every
    buffered row up to the smallest of the spools' last buffered rows (no spool can still give a
    smaller one), sorted together (``list.sort`` merges the runs in C), and reads on, every spool
    left with less than half a frame taking its next one first. So it holds at most a frame and a
    half of each spool and as many rows again: with frames sized by ``frame_bytes``, a small
    multiple of ``MERGE_BYTES`` whatever the file's size. More than ``fan_in`` spools are merged in
    passes, ``fan_in`` at a time into spools of their own (next to the first), each removed once
    read. ``key``, if given, must order the rows as they order themselves (the spools' own
    ``key``): the merge compares it instead of the rows (the id rows: one string against a tuple
    compared column by column, the merge of 1.4 million of them 1.02 -> 0.76 s of CPU)."""
    if len(spools) > fan_in:
        return _merged_in_passes(spools, fan_in, key)
    return _merged(spools, key)


def _merged_in_passes(
    spools: Sequence[Spool], fan_in: int, key: Callable[[tuple[Any, ...]], Any] | None
) -> Iterator[list[tuple[Any, ...]]]:
    folder = spools[0].path.parent
    level = list(spools)
    depth = 0
    while len(level) > fan_in:
        depth += 1
        size = frame_bytes(fan_in)
        merged_level: list[Spool] = []
        for n in range(0, len(level), fan_in):
            out = Spool(folder / f"{spools[0].path.stem}.merge{depth}-{n // fan_in}", frame=size)
            for block in _merged(level[n : n + fan_in], key):
                out.extend(block)
            out.close()
            if depth > 1:  # a pass's own spools; the callers' stay theirs
                for used in level[n : n + fan_in]:
                    used.discard()
            merged_level.append(out)
        level = merged_level
    try:
        yield from _merged(level, key)
    finally:
        if depth:
            for used in level:
                used.discard()


def _merged(
    spools: Sequence[Spool], key: Callable[[tuple[Any, ...]], Any] | None = None
) -> Iterator[list[tuple[Any, ...]]]:
    # A buffer: the spool's frames, its rows held, how many of them were handed on, and the size
    # of its last frame.
    Buffer = tuple[Iterator[list[tuple[Any, ...]]], list[tuple[Any, ...]], int, int]
    buffers: list[Buffer] = []
    for spool in spools:
        blocks = spool.blocks()
        first = next(blocks, None)
        if first:
            buffers.append((blocks, first, 0, len(first)))
    while len(buffers) > 1:
        # Every buffer down to less than half a frame takes its next one first: each step then
        # hands on about half a frame of every spool. Refilling only the one that ran out made a
        # step per frame read, each a Python pass over every spool (with 500 spools of frames of
        # ~60 rows, 17 µs a row instead of 6, measured).
        filled: list[Buffer] = []
        for blocks, rows, at, size in buffers:
            if len(rows) - at < size // 2 and (more := next(blocks, None)):
                rows, at, size = rows[at:] + more, 0, len(more)
            if at < len(rows):
                filled.append((blocks, rows, at, size))
        buffers = filled
        if len(buffers) < 2:
            break
        bound = min(rows[-1] if key is None else key(rows[-1]) for _, rows, _, _ in buffers)
        out: list[tuple[Any, ...]] = []
        kept: list[Buffer] = []
        for blocks, rows, at, size in buffers:
            cut = bisect_right(rows, bound, at, key=key)
            out += rows[at:cut]
            if cut < len(rows):
                kept.append((blocks, rows, cut, size))
            elif more := next(blocks, None):
                kept.append((blocks, more, 0, len(more)))
        buffers = kept
        out.sort(key=key)
        yield out
    for blocks, rows, at, _ in buffers:
        yield rows[at:]
        yield from blocks
