"""The bulk import path: a whole file resolved at once and written in one transaction.

``run_bulk_import`` takes the arguments of the online importer (``ingest.runner.Importer``) and
returns the same summary (``BulkSummary`` is an ``ImportSummary`` with the peak RSS and the
phases' times). It resolves exactly as the online path given the same clock (``at``): every
record written at one time, file order breaking ties. See docs/bulk.md.

The engine is imported on first use: it brings numpy and scipy, whose import would otherwise add
seconds to every ``profilehub`` command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from profilehub.bulk.interrupted import BulkInterrupted

if TYPE_CHECKING:
    from profilehub.bulk.engine import BulkSummary, run_bulk_import

__all__ = ["BulkInterrupted", "BulkSummary", "run_bulk_import"]


def __getattr__(name: str) -> Any:
    if name in ("BulkSummary", "run_bulk_import"):
        from profilehub.bulk import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
