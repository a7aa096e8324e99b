"""The bulk import path: a whole file resolved at once and written in one transaction.

``run_bulk_import`` takes the arguments of the online importer (``ingest.runner.Importer``) and
returns the same summary (``BulkSummary`` is an ``ImportSummary`` with the peak RSS and the
phases' times). It resolves exactly as the online path given the same clock (``at``): every
record written at one time, file order breaking ties. See docs/bulk.md.
"""

from profilehub.bulk.engine import BulkInterrupted, BulkSummary, run_bulk_import

__all__ = ["BulkInterrupted", "BulkSummary", "run_bulk_import"]
