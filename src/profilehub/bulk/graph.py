"""Which records can share a profile: connected components of the records and their ids.

Two records can end up on one profile only if a chain of shared ids joins them (in one region:
identity never crosses regions), so the connected components of the bipartite graph of records and ids
are independent: each can be resolved on its own, in any order, as long as its own records are
applied in file order. Ids are coded as integers and the components found by
``scipy.sparse.csgraph.connected_components`` (about a second for millions of ids).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from profilehub.identity.normalize import Identifier
from profilehub.identity.resolve import PreparedWrite

IdKey = tuple[str, Identifier]  # (region, id)


@dataclass
class Components:
    """``label[k]``: the component of the k-th write; ``ids``: every distinct (region, id) of the
    writes with its code; ``id_label[code]``: the component of each id."""

    label: NDArray[np.int64]
    ids: dict[IdKey, int]
    id_label: NDArray[np.int64]
    count: int


def components(writes: Sequence[PreparedWrite]) -> Components:
    codes: dict[IdKey, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    for k, w in enumerate(writes):
        region = w.region
        for ident in w.ids:
            code = codes.setdefault((region, ident), len(codes))
            rows.append(k)
            cols.append(code)
    n = len(writes)
    size = n + len(codes)
    row = np.asarray(rows, dtype=np.int64)
    col = np.asarray(cols, dtype=np.int64) + n
    del rows, cols
    graph = coo_matrix((np.ones(len(row), dtype=np.int8), (row, col)), shape=(size, size)).tocsr()
    count, labels = connected_components(graph, directed=False)
    labels = labels.astype(np.int64)
    return Components(labels[:n], codes, labels[n:], int(count))
