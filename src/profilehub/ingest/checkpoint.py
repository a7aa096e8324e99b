"""The resume point of an import: a small JSON file beside the input, replaced atomically.

It is written after every committed batch, so it never points past a record whose write is not
committed; a resumed import starts just after the last committed batch. Re-writing a record is an
idempotent upsert, so even a re-run from the start gives the same final profiles.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson


class CheckpointMismatch(ValueError):
    """The input changed since the checkpoint was written; resuming would skip the wrong records."""


@dataclass
class Checkpoint:
    source_size: int
    source_mtime_ns: int
    offset: int = 0  # bytes of the input fully handled
    line: int = 0  # last line fully handled
    rejects_size: int = 0  # bytes of the rejects file that belong to handled records
    counts: dict[str, int] = field(default_factory=dict)
    # The rejects so far by reason, and the first one's message of each: a resumed run's summary
    # reports the whole import's rejects, not only its own (absent from older checkpoints).
    reject_reasons: dict[str, int] = field(default_factory=dict)
    reject_examples: dict[str, str] = field(default_factory=dict)
    at: int | None = None  # ``--at``: the time every record is written at (None: the clock's)


def checkpoint_path(source: Path) -> Path:
    return source.with_name(source.name + ".checkpoint.json")


def rejects_path(source: Path) -> Path:
    return source.with_name(source.name + ".rejected.ndjson")


def fingerprint(source: Path) -> tuple[int, int]:
    st = source.stat()
    return st.st_size, st.st_mtime_ns


def load(source: Path) -> Checkpoint | None:
    path = checkpoint_path(source)
    if not path.exists():
        return None
    saved = Checkpoint(**orjson.loads(path.read_bytes()))
    if (saved.source_size, saved.source_mtime_ns) != fingerprint(source):
        raise CheckpointMismatch(
            f"{source} changed since {path} was written; re-run without --resume to import it anew"
        )
    return saved


def save(source: Path, checkpoint: Checkpoint) -> None:
    path = checkpoint_path(source)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(asdict(checkpoint)))
    os.replace(tmp, path)


def clear(source: Path) -> None:
    checkpoint_path(source).unlink(missing_ok=True)
