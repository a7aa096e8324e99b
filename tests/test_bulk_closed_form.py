"""Which components the bulk path computes in closed form (``bulk.resolve.simple_components``):
those the identity core would resolve to one profile with nothing merged, refused or evicted. A
component wrongly called simple would get one profile where the online import makes several (the
equivalence gate would catch it on a large enough file; these name the cases)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from profilehub.bulk import graph
from profilehub.bulk.graph import components
from profilehub.bulk.resolve import simple_components

EMAIL, AD = 0, 1  # idType codes; limits below: one email, two ad ids


def classify(writes: list[list[tuple[int, int]]]) -> list[bool]:
    """``writes``: each write's ids as (idType code, value); the simple flag of each write's component."""
    codes: dict[tuple[int, int], int] = {}
    offsets, flat = [0], []
    for ids in writes:
        for ident in ids:
            flat.append(codes.setdefault(ident, len(codes)))
        offsets.append(len(flat))
    id_type = np.zeros(len(codes), dtype=np.int64)
    for (t, _), code in codes.items():
        id_type[code] = t
    graph = components(offsets, flat, len(codes))
    simple = simple_components(
        np.asarray(offsets, dtype=np.int64),
        np.asarray(flat, dtype=np.int64),
        graph.label,
        graph.id_label,
        id_type,
        np.array([1, 2], dtype=np.int64),
        graph.count,
    )
    return [bool(simple[graph.label[k]]) for k in range(len(writes))]


def test_a_person_seen_again_by_an_id_already_seen_is_simple() -> None:
    assert classify([[(EMAIL, 1), (AD, 1)], [(AD, 1), (AD, 2)], [(EMAIL, 1)]]) == [True] * 3


def test_two_profiles_joined_later_are_not_simple() -> None:
    # The first two writes share nothing: two profiles, merged by the third.
    assert classify([[(EMAIL, 1)], [(AD, 1)], [(EMAIL, 1), (AD, 1)], [(AD, 9)]]) == [
        False,
        False,
        False,
        True,
    ]


def test_more_values_than_an_idtype_allows_is_not_simple() -> None:
    # A second email (primary limit 1: not attached); a third ad id (secondary limit 2: evicts).
    assert classify([[(EMAIL, 1), (AD, 1)], [(AD, 1), (EMAIL, 2)]]) == [False, False]
    assert classify([[(AD, 1), (AD, 2)], [(AD, 2), (AD, 3)]]) == [False, False]
    assert classify([[(AD, 1), (AD, 2)], [(AD, 2), (AD, 1)]]) == [True, True]


def test_a_write_without_ids_is_a_profile_of_its_own() -> None:
    assert classify([[], [(EMAIL, 1)], []]) == [True, True, True]


def test_ids_are_coded_as_numpy_would_code_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``code_buckets(bucket_keys(...))`` replaces ``np.unique`` (for memory): the same codes, or records would link
    wrongly; also when it splits the keys into buckets of a few (``CHUNK``) by their top bits,
    up to the most buckets it makes (256); the buckets' files are gone after."""
    rng = np.random.default_rng(20)
    for chunk in (graph.CHUNK, 7, 3):
        monkeypatch.setattr(graph, "CHUNK", chunk)
        for n in (0, 1, 7, 5000):
            pool = rng.integers(-(2**63), 2**63 - 1, max(1, n // 3), dtype=np.int64)  # hashes
            extremes = np.array([-(2**63), 2**63 - 1, -1, 0] * (n // 4), dtype=np.int64)
            for keys in (rng.integers(-40, 40, n).astype(np.int64) << 40, rng.choice(pool, n), extremes):
                distinct, inverse = np.unique(keys, return_inverse=True)
                count, codes = graph.code_buckets(graph.bucket_keys(keys, tmp_path))
                assert count == len(distinct) and np.array_equal(codes, inverse)
                assert not list(tmp_path.iterdir())
                # the import's keys come from a file of their own, read a chunk at a time
                raw = tmp_path / "keys.bin"
                raw.write_bytes(keys.tobytes())
                read = graph.CodeFile(raw, np.dtype(np.int64))
                try:
                    count, codes = graph.code_buckets(graph.bucket_keys(read, tmp_path))
                finally:
                    read.close()
                    raw.unlink()
                assert count == len(distinct) and np.array_equal(codes, inverse)
                assert not list(tmp_path.iterdir())


def test_components_are_scipys(monkeypatch: pytest.MonkeyPatch) -> None:
    """``components`` (a union-find in numpy, for memory) finds and numbers the components as
    scipy's ``connected_components`` does on the graph of writes and ids: the same groups, the
    same closed-form decisions. Random graphs, writes without ids and ids no write holds among
    them, also in chunks of a few ids."""
    rng = np.random.default_rng(21)
    for chunk in (graph.CHUNK, 5):
        monkeypatch.setattr(graph, "CHUNK", chunk)
        for _ in range(300):
            n, ids = int(rng.integers(0, 50)), int(rng.integers(0, 70))
            offsets = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(rng.integers(0, 5 if ids else 1, n), out=offsets[1:])
            flat = rng.integers(0, max(ids, 1), int(offsets[-1])).astype(np.int32)
            size = n + ids
            indptr = np.concatenate([offsets, np.full(ids, offsets[-1])])
            matrix = csr_matrix((np.ones(len(flat)), flat.astype(np.int64) + n, indptr), shape=(size, size))
            count, labels = connected_components(matrix, directed=False)
            found = graph.components(offsets, flat, ids)
            assert found.count == count
            assert np.array_equal(found.label, labels[:n]) and np.array_equal(found.id_label, labels[n:])


def test_codes_read_from_their_file_give_the_same_components(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The import links with the ids' codes read back from their file a chunk at a time
    (``graph.CodeFile``, for memory): the same components and closed-form decisions as with the
    codes in memory, also in chunks of a few ids."""
    rng = np.random.default_rng(22)
    path = tmp_path / "codes.npy"
    for chunk in (graph.CHUNK, 5):
        monkeypatch.setattr(graph, "CHUNK", chunk)
        for _ in range(100):
            n, ids = int(rng.integers(1, 50)), int(rng.integers(1, 70))
            offsets = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(rng.integers(0, 5, n), out=offsets[1:])
            flat = rng.integers(0, ids, int(offsets[-1])).astype(np.int32)
            id_type = rng.integers(0, 2, ids).astype(np.int8)
            limits = np.array([1, 2], dtype=np.int64)
            np.save(path, flat)
            codes = graph.CodeFile(path)
            try:
                assert len(codes) == len(flat) and np.array_equal(codes[0 : len(flat)], flat)
                held, read = components(offsets, flat, ids), components(offsets, codes, ids)
                assert held.count == read.count
                assert np.array_equal(held.label, read.label) and np.array_equal(held.id_label, read.id_label)
                expected = simple_components(
                    offsets, flat, held.label, held.id_label, id_type, limits, held.count
                )
                found = simple_components(
                    offsets, codes, read.label, read.id_label, id_type, limits, read.count
                )
                assert np.array_equal(expected, found)
            finally:
                codes.close()
