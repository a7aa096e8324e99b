"""The bulk import's interruption, apart from the engine so that the CLI can name it without
importing numpy and scipy (seconds of start-up every other command would pay)."""

from __future__ import annotations

from typing import Any

from profilehub.errors import ProfilehubError
from profilehub.ingest.runner import ImportSummary


class BulkInterrupted(ProfilehubError):
    """Ctrl-C stopped a bulk import: its transaction was rolled back, nothing of it is written."""

    status = 499
    summary: ImportSummary | None = None

    def __init__(
        self,
        message: str = "interrupted: the bulk import was rolled back, nothing of it is written",
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
