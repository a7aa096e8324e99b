"""Python's cyclic garbage collector, kept off the hot paths of the server and the importer.

Both allocate heavily (a dict or tuple per id, per row, per request) and keep a large, long-lived
heap (SQLAlchemy, pydantic and FastAPI structures, the phone-number cache, the batch in flight).
With Python's defaults a young collection runs every 700 surviving allocations and, every
~70,000, a full one walks that whole heap. Measured (docs/bulk.md): under 64 concurrent HTTP
writers that gave p99 latencies of 110-130 ms at a p50 near 27 ms; in an import of 200,000
records it was 15 of the importer's 70 CPU seconds (12 of them in full collections).

``tune`` freezes what exists (it lives as long as the process anyway) out of every collection and
raises the young threshold so collections are rare; garbage is still mostly freed by reference
counting, and cycles are still collected.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# Young collections start after this many surviving container objects (Python's default: 700).
THRESHOLD = (50_000, 20, 20)


def tune(collect: bool = True) -> None:
    """For the rest of the process: collect once, freeze what survives, raise the threshold."""
    if collect:
        gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLD)


@contextmanager
def tuned() -> Iterator[None]:
    """``tune`` for the duration of the block, then Python's settings as they were.

    No collection first: garbage frozen now is unfrozen, and collected, when the block ends, and
    a full collection of a large heap (a test process, say) can take longer than a small import.
    """
    threshold = gc.get_threshold()
    tune(collect=False)
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


@contextmanager
def paused() -> Iterator[None]:
    """No automatic collection for the duration of the block (then as before).

    For a block that makes hundreds of thousands of objects which all live until it ends and form
    no cycles (the bulk import's rows of a group of writes): each young collection there walks the
    ~50,000 newest objects only to find them alive, 10-15% of the block's CPU (measured). The
    collector is the process's: meant for the one thread that does the work of its process.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
