"""The bulk write's spools and their merge (``bulk.spool``): what the merge holds at once is
bounded by bytes, not rows, whatever the number of groups, and the rows come out exactly as one
sort of all of them would give them (the load's key order)."""

from __future__ import annotations

import marshal
import random
from pathlib import Path
from typing import Any

import pytest

from profilehub.bulk import spool
from profilehub.bulk.resolve import id_order
from profilehub.bulk.spool import Spool, frame_bytes, merged


def _rows(rng: random.Random, n: int) -> list[tuple[Any, ...]]:
    # events-like rows: a key, then JSON of very different sizes
    return [(rng.randrange(10**6), "x" * rng.choice((10, 100, 3000))) for _ in range(n)]


def _frames(path: Path) -> list[int]:
    sizes = []
    with path.open("rb") as f:
        while length := f.read(8):
            frame = f.read(int.from_bytes(length, "little"))
            marshal.loads(frame)
            sizes.append(len(frame))
    return sizes


def test_frames_are_bounded_by_bytes(tmp_path: Path) -> None:
    rng = random.Random(1)
    s = Spool(tmp_path / "a.rows", sort=True, frame=20_000)
    rows = _rows(rng, 3000)
    s.extend(list(rows))
    s.close()
    sizes = _frames(s.path)
    assert len(sizes) > 10 and max(sizes) <= 2 * 20_000  # rows of ~3 KB: far fewer than 2,000 a frame
    assert list(s.rows()) == sorted(rows)


@pytest.mark.parametrize("fan_in", [spool.MERGE_FAN_IN, 3])
def test_a_merge_gives_every_row_in_order_and_holds_a_frame_a_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fan_in: int
) -> None:
    """Many groups, frames sized for their number; with a fan-in of 3, merged in passes (whose
    own files are removed after). The merge never hands on more rows at once than the frames of
    all spools hold."""
    rng = random.Random(2)
    groups = 11
    monkeypatch.setattr(spool, "MERGE_BYTES", 200_000)
    size = frame_bytes(groups)
    assert size == max(spool.MIN_FRAME_BYTES, 200_000 // groups)
    spools, everything = [], []
    for g in range(groups):
        s = Spool(tmp_path / f"g{g}-events.rows", sort=True, frame=size)
        rows = _rows(rng, rng.randrange(0, 400))
        everything += rows
        s.extend(list(rows))
        s.close()
        spools.append(s)
    out: list[tuple[Any, ...]] = []
    most = 0
    for block in merged(spools, fan_in):
        most = max(most, sum(len(r[1]) for r in block))
        out += block
    assert out == sorted(everything)
    assert most <= groups * 2 * size
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(s.path.name for s in spools)


def test_id_rows_merged_by_their_key_come_out_as_by_themselves(tmp_path: Path) -> None:
    """The write merges the id rows by one string (``resolve.id_order``) instead of comparing them
    column by column: the same rows in the same order (idTypes and values sharing prefixes, a
    region of its own)."""
    rng = random.Random(3)
    spools, everything = [], []
    for g in range(7):
        s = Spool(tmp_path / f"g{g}-ids.rows", sort=True, key=id_order, frame=spool.MIN_FRAME_BYTES)
        rows = [
            (
                1234,
                rng.choice(("EU", "EU2", "UK")),
                rng.choice(("email", "email_md5", "AdId", "a")),
                rng.choice(("", "0", "00", "0a", "a", "é")) + format(rng.randrange(16**6), "x"),
                f"u{rng.randrange(100)}",
                5,
            )
            for _ in range(rng.randrange(0, 900))
        ]
        everything += rows
        s.extend(list(rows))
        s.close()
        spools.append(s)
    by_key = [row for block in merged(spools, key=id_order) for row in block]
    assert by_key == sorted(everything)
    assert by_key == [row for block in merged(spools, 3, key=id_order) for row in block]  # in passes
