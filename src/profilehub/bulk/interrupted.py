"""The bulk import's interruption and its full work folder, apart from the engine so that the CLI
can name them without importing numpy and scipy (seconds of start-up every other command would
pay)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from profilehub.errors import ProfilehubError
from profilehub.ingest.runner import ImportSummary


class BulkInterrupted(ProfilehubError):
    """Ctrl-C or SIGTERM stopped a bulk import: its transaction was rolled back, nothing of it is
    written. ``terminated``: SIGTERM stopped it (the command exits with status 1, and 130 after a
    Ctrl-C, as a shell reports a command it stopped)."""

    status = 499
    summary: ImportSummary | None = None
    terminated: bool = False

    def __init__(
        self,
        message: str = "interrupted: the bulk import was rolled back, nothing of it is written",
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)


class WorkFolderFull(Exception):
    """The disk holding the bulk import's temporary folder (``bulk.workdir``) filled up: the
    import stopped there and its transaction, if begun, was rolled back, nothing of it written."""

    def __init__(self, folder: Path, cause: OSError) -> None:
        self.folder = folder
        super().__init__(
            f"import stopped: no space left for the --bulk import's temporary files in {folder.parent} "
            f"({cause.strerror or cause}): nothing was written; a bulk import needs room there for its "
            "prepared records and resolved rows (docs/bulk.md); free space, or set TMPDIR to a "
            "folder on a larger disk, then run the same command again"
        )
