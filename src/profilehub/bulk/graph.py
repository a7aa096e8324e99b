"""Which records can share a profile: connected components of the records and their ids.

Two records can end up on one profile only if a chain of shared ids joins them (in one region:
identity never crosses regions), so the connected components of the bipartite graph of records and ids
are independent: each can be resolved on its own, in any order, as long as its own records are
applied in file order. Ids are coded as integers (``bucket_keys``, then ``code_buckets``) and
the components found by a union-find over the ids in numpy (``components``): seconds for tens of
millions of ids, in a few bytes a record and id over its input.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

# Id occurrences handled at a time where a whole-array step would need another copy of them: the
# temporaries stay a few tens of MB whatever the file's size.
CHUNK = 1 << 21


@dataclass
class Components:
    """``label[k]``: the component of the k-th write; ``id_label[code]``: the component of each id.
    Components are numbered in the order of their first write (ids no write holds come last, in
    code order), as ``scipy.sparse.csgraph.connected_components`` numbers them over the graph
    of writes then ids; 32-bit where the numbers fit."""

    label: NDArray[np.integer[Any]]
    id_label: NDArray[np.integer[Any]]
    count: int


def _roots(parent: NDArray[np.integer[Any]], nodes: NDArray[np.integer[Any]]) -> NDArray[np.integer[Any]]:
    found: NDArray[np.integer[Any]] = parent[nodes]
    up = parent[found]
    climbing = np.flatnonzero(up != found)  # only those not at their root yet go on up
    up = up[climbing]
    while len(climbing):
        found[climbing] = up
        above = parent[up]
        moved = above != up
        climbing, up = climbing[moved], above[moved]
    return found


def _union(
    parent: NDArray[np.integer[Any]], u: NDArray[np.integer[Any]], v: NDArray[np.integer[Any]]
) -> None:
    """Join the trees of ``u[i]`` and ``v[i]``, each edge's larger root under its smaller one (so a
    tree's root is its smallest id and no hook makes a cycle); the edges whose roots another
    edge's hook took first are tried again until every edge is inside one tree."""
    while len(u):
        ru = _roots(parent, u)
        rv = _roots(parent, v)
        parent[u] = ru  # path compression: the trees stay shallow
        parent[v] = rv
        apart = ru != rv
        if not apart.any():
            return
        u, v, ru, rv = u[apart], v[apart], ru[apart], rv[apart]
        parent[np.maximum(ru, rv)] = np.minimum(ru, rv)


def components(
    offsets: Sequence[int] | NDArray[np.integer[Any]],
    flat: Sequence[int] | NDArray[np.integer[Any]] | CodeFile,
    ids: int,
) -> Components:
    """The components of ``n`` writes whose ids (coded 0..ids-1) are ``flat[offsets[k]:offsets[k+1]]``.

    Union-find over the ids alone, in numpy: each write joins its first id with each of its others,
    a chunk of writes at a time. It holds one 32-bit parent per id beside its input; scipy's
    ``connected_components`` (used before, and the reference of ``tests/test_bulk_closed_form.py``)
    needs the graph as a matrix of writes and ids with float64 weights, and its transpose: at ten
    million records about 1.3 GB over its input, measured, against about 0.3 GB this way."""
    off = np.frombuffer(offsets, dtype=np.int64) if isinstance(offsets, array) else np.asarray(offsets)
    codes: NDArray[np.integer[Any]] | CodeFile = (
        flat
        if isinstance(flat, CodeFile)
        else np.frombuffer(flat, dtype=np.int64)
        if isinstance(flat, array)
        else np.asarray(flat)
    )
    n = len(off) - 1
    small = np.int32 if max(ids, n) + 1 < 2**31 else np.int64
    if n == 0:
        return Components(np.zeros(0, dtype=small), np.arange(ids, dtype=small), ids)
    parent: NDArray[np.integer[Any]] = np.arange(ids, dtype=small)
    counts = np.diff(off)
    has = counts > 0  # writes without ids are components of their own
    starts = off[:-1]
    # each write's first id, of those with ids
    first_ids: NDArray[np.integer[Any]] = np.empty(int(has.sum()), dtype=small)
    taken = 0
    r = 0
    while r < n:
        # the writes r..e-1: about CHUNK id occurrences (one write at least)
        e = min(n, max(r + 1, int(np.searchsorted(off, off[r] + CHUNK, side="right")) - 1))
        held = has[r:e]
        others: NDArray[np.integer[Any]] = codes[int(off[r]) : int(off[e])].astype(small, copy=False)
        heads = others[starts[r:e][held] - off[r]]
        first_ids[taken : taken + len(heads)] = heads
        taken += len(heads)
        _union(parent, np.repeat(heads, counts[r:e][held]), others)
        r = e
    del counts, heads, others
    _flatten(parent)
    # Number the components by their first write: a write opens one when it is the first write
    # whose first id has its root (or when it has no ids).
    writes = np.flatnonzero(has).astype(small, copy=False)
    _look_up(parent, first_ids)
    root = first_ids
    del first_ids
    first: NDArray[np.integer[Any]] = np.full(ids, n, dtype=small)  # each root's first write
    np.minimum.at(first, root, writes)
    opens = np.ones(n, dtype=bool)
    opens[writes] = first[root] == writes
    label: NDArray[np.integer[Any]] = np.cumsum(opens, dtype=small)
    label -= 1
    count = int(label[-1]) + 1
    del opens
    label[writes] = label[first[root]]
    del root, writes
    # Each id's component's first write (n: an id no write holds), then its component, made in
    # the parents' own array: the id-sized arrays held at once are two, not four (at ten million
    # records ~47 million ids, 190 MB each).
    owner = parent
    del parent
    _look_up(first, owner)
    del first
    lone = owner == n
    owner[lone] = 0
    id_label = owner
    _look_up(label, id_label)
    del owner
    alone = int(lone.sum())
    id_label[lone] = count + np.arange(alone, dtype=small)
    return Components(label, id_label, count + alone)


class CodeFile:
    """A one-dimensional array kept in a file and read a slice at a time (``codes[a:b]``): each
    id occurrence's code (``code_buckets``' output, saved as a ``.npy`` file) as ``components`` and
    ``resolve.simple_components`` go through them, or (``dtype`` given: a file of that type's
    values and nothing else) the plan's keys as ``bucket_keys`` goes through them. Only the slice
    read is held (at ten million records the codes are 265 MB, the keys 530 MB). Read with
    ``np.fromfile``, not mapped: mapped pages once read stay resident, and count as the process's."""

    def __init__(self, path: Path, dtype: np.dtype[Any] | None = None) -> None:
        self._file = path.open("rb")
        if dtype is not None:
            self.dtype: np.dtype[Any] = dtype
            self._size = path.stat().st_size // dtype.itemsize
            self._start = 0
            return
        version = np.lib.format.read_magic(self._file)
        if version == (1, 0):
            shape, fortran, found = np.lib.format.read_array_header_1_0(self._file)
        else:
            shape, fortran, found = np.lib.format.read_array_header_2_0(self._file)
        if len(shape) != 1 or fortran:
            raise ValueError(f"{path}: not a one-dimensional array")
        self.dtype = found
        self._size = int(shape[0])
        self._start = self._file.tell()

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, part: slice) -> NDArray[np.integer[Any]]:
        start, stop, step = part.indices(self._size)
        if step != 1:
            raise ValueError("a CodeFile is read a contiguous slice at a time")
        self._file.seek(self._start + start * self.dtype.itemsize)
        return np.fromfile(self._file, dtype=self.dtype, count=max(0, stop - start))

    def close(self) -> None:
        self._file.close()


def _look_up(table: NDArray[np.integer[Any]], index: NDArray[np.integer[Any]]) -> None:
    """``index[:] = table[index]`` a chunk at a time (``np.take`` into its own index array
    copies the whole of it first)."""
    for at in range(0, len(index), CHUNK):
        part = index[at : at + CHUNK]
        part[...] = table[part]


def _flatten(parent: NDArray[np.integer[Any]]) -> None:
    """Every id's parent made its root, in place, a chunk at a time (a parent only ever moves to
    an ancestor, so chunks may go in any order): a whole-array ``parent[parent]`` per step held
    a second id-sized array."""
    moved = True
    while moved:
        moved = False
        for at in range(0, len(parent), CHUNK):
            part = parent[at : at + CHUNK]
            up = parent[part]
            if not np.array_equal(up, part):
                part[...] = up
                moved = True


@dataclass
class KeyBuckets:
    """Keys split by their top bits into files (``bucket_keys``): each bucket's keys and their
    places in the input, in input order, the buckets in the keys' own order."""

    size: int  # keys in all
    paths: list[Path]  # of each bucket not empty, in order
    record: np.dtype[Any]  # a key and its place: (``key``, int64; ``place``, 32-bit where it fits)


def bucket_keys(keys: NDArray[np.int64] | CodeFile, folder: Path) -> KeyBuckets:
    """Split ``keys`` into buckets of about ``CHUNK`` keys by their top bits (hashes spread
    evenly), each written to a file of ``folder`` (its keys and their places) a chunk of the input
    at a time: one pass, whatever the number of buckets (selecting each bucket from the whole
    input cost a pass a bucket: at ten million records 32 of them), and nothing of the input
    held once written (``code_buckets`` reads one bucket at a time). At most 256 buckets, one
    file open each while it runs."""
    size = len(keys)
    record = np.dtype([("key", "<i8"), ("place", "<i8" if size >= 2**31 else "<i4")])
    bits = min(8, max(0, math.ceil(math.log2(size / CHUNK)))) if size > CHUNK else 0
    first = -(2 ** (bits - 1)) if bits else 0
    count = 2**bits
    paths = [folder / f"bucket-{b}.keys" for b in range(count)]
    sizes = [0] * count
    outputs = [path.open("wb") for path in paths]
    try:
        for at in range(0, size, CHUNK):
            part = keys[at : at + CHUNK]
            if bits:
                # each key's bucket: its top ``bits`` bits, signed as the key is, from 0
                top = (np.right_shift(part, 64 - bits) - first).astype(np.uint8)
                order = np.argsort(top, kind="stable")  # a radix sort of bytes: in input order
                ends = np.cumsum(np.bincount(top, minlength=count))
                del top
            else:
                order = np.arange(len(part))
                ends = np.array([len(part)])
            records = np.empty(len(part), dtype=record)
            records["key"] = part[order]
            records["place"] = order
            records["place"] += at
            del order
            start = 0
            for b, end in enumerate(ends.tolist()):
                if end > start:
                    outputs[b].write(records[start:end].tobytes())
                    sizes[b] += end - start
                start = end
    finally:
        for out in outputs:
            out.close()
    for path, n in zip(paths, sizes, strict=True):
        if not n:
            path.unlink()
    return KeyBuckets(size, [path for path, n in zip(paths, sizes, strict=True) if n], record)


def code_buckets(buckets: KeyBuckets) -> tuple[int, NDArray[np.integer[Any]]]:
    """The number of distinct keys of ``buckets`` and each key's code (its distinct key's place
    among them, sorted), in input order, 32-bit where it fits: ``np.unique(keys,
    return_inverse=True)`` less the distinct keys themselves, holding beside the codes one bucket
    at a time. Each bucket's file is removed once read."""
    flat: NDArray[np.integer[Any]] = np.empty(buckets.size, dtype=buckets.record["place"])
    code = 0
    for path in buckets.paths:
        records = np.fromfile(path, dtype=buckets.record)
        path.unlink()
        order = np.argsort(records["key"])
        keys = records["key"][order]
        starts = np.empty(len(keys), dtype=bool)
        starts[0] = True
        np.not_equal(keys[1:], keys[:-1], out=starts[1:])
        del keys
        codes = np.cumsum(starts, dtype=flat.dtype)
        del starts
        codes += code - 1
        flat[records["place"][order]] = codes
        del records, order
        code = int(codes[-1]) + 1
    return code, flat
