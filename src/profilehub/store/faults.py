"""What went wrong when the database refused: named, so answers and logs can say it.

A write the database refuses is answered 503 whatever the cause, but the cause decides what the
operator does (free space, restart the database, find the process holding a lock) and whether
trying again at once can help: a full disk or a read-only file fails every retry the same way,
so the writer fails those at once instead of retrying each write.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import sqlalchemy as sa


class FaultKind(enum.Enum):
    DISK_FULL = "disk full"
    READ_ONLY = "read-only"
    LOCKED = "locked"
    UNREACHABLE = "unreachable"
    UNAVAILABLE = "unavailable"  # anything else the driver reports as operational


# What an operator does about each, said after the cause.
_ADVICE = {
    FaultKind.DISK_FULL: "nothing was written; retry once space is freed",
    FaultKind.READ_ONLY: "nothing was written; the database file or server refuses writes",
    FaultKind.LOCKED: "nothing was written; another process holds the database's write lock; retry",
    FaultKind.UNREACHABLE: "nothing was written; retry",
    FaultKind.UNAVAILABLE: "nothing was written; retry",
}

# Faults that another attempt a few milliseconds later meets again.
PERSISTENT = frozenset({FaultKind.DISK_FULL, FaultKind.READ_ONLY})

_SQLITE = {
    "SQLITE_FULL": FaultKind.DISK_FULL,
    "SQLITE_READONLY": FaultKind.READ_ONLY,
    "SQLITE_BUSY": FaultKind.LOCKED,
    "SQLITE_LOCKED": FaultKind.LOCKED,
    "SQLITE_CANTOPEN": FaultKind.UNREACHABLE,
}
# PostgreSQL SQLSTATEs (exact codes, then classes by their first two characters)
_PG = {"53100": FaultKind.DISK_FULL, "25006": FaultKind.READ_ONLY, "55P03": FaultKind.LOCKED}
_PG_CLASSES = {"08": FaultKind.UNREACHABLE, "57": FaultKind.UNREACHABLE, "53": FaultKind.DISK_FULL}


@dataclass(frozen=True)
class DatabaseFault:
    kind: FaultKind
    detail: str  # the driver's own words, first line

    @property
    def cause(self) -> str:
        return f"{self.kind.value} ({self.detail})"

    @property
    def message(self) -> str:
        return f"database: {self.cause}; {_ADVICE[self.kind]}"

    @property
    def persistent(self) -> bool:
        return self.kind in PERSISTENT


def _kind(orig: BaseException) -> FaultKind:
    name = getattr(orig, "sqlite_errorname", None)
    if isinstance(name, str):
        # Extended codes (SQLITE_BUSY_SNAPSHOT, SQLITE_READONLY_DBMOVED) share their base's meaning.
        for base, kind in _SQLITE.items():
            if name == base or name.startswith(base + "_"):
                return kind
        return FaultKind.DISK_FULL if "disk is full" in str(orig) else FaultKind.UNAVAILABLE
    state = getattr(orig, "sqlstate", None)
    if isinstance(state, str):
        return _PG.get(state) or _PG_CLASSES.get(state[:2], FaultKind.UNAVAILABLE)
    # psycopg reports a connection that never opened or was lost without a SQLSTATE
    return FaultKind.UNREACHABLE


def classify(exc: BaseException) -> DatabaseFault:
    """The fault behind a driver error (SQLAlchemy's wrapper or the driver's own exception)."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
    text = str(orig).strip().splitlines()
    return DatabaseFault(_kind(orig), text[0] if text else type(orig).__name__)
