"""The equivalence gate: one ugly file through the online importer and through ``--bulk``, the same
``--at``, into two orgs that start from the same stored profiles; every profile, id, ``linkedUcid``,
change log entry, journal entry, event, reject and count must be the same (ucids mapped by content,
``bench/bulk_equivalence.py``). A million records go through it in ``bench.bulk_path``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bench.bulk_equivalence import Importer, cli_import, run_gate
from bench.gate_set import gate_set

AT = 1_780_000_000_000


def test_bulk_writes_what_the_online_importer_writes(database_url: str, tmp_path: Path) -> None:
    data = gate_set(60, seed=20)
    result = run_gate(database_url, data.main, tmp_path, AT, seed_records=data.seed)
    assert result.differences == []
    assert result.online == result.bulk
    assert " 0 rejected" not in result.online and " 0 updated" not in result.online
    # The set is as ugly as it claims: merges, refused merges, evictions, limits, ucids, rejects.
    assert result.counts["linkedUcid"] >= 5
    # Writes that kept ids their profile did not take: both paths name them for an erasure.
    assert result.counts["unattached"] > 0
    changes = _changes(database_url)
    codes = Counter(n["code"] for change in changes for n in change.get("notices", []))
    for code in ("merge_refused", "id_evicted", "id_limit", "id_owned_elsewhere", "ucid_not_found"):
        assert codes[code] > 0, (code, codes)
    # Both summaries count the records written without ids over a profile's limit: one per write
    # whose change log entry has the notice (one entry may name several ids).
    limited = sum(any(n["code"] == "id_limit" for n in change.get("notices", [])) for change in changes)
    assert result.online.endswith(f", {limited} written without ids over a profile's limit"), result.online


def _changes(url: str) -> list[dict[str, object]]:
    import orjson
    import sqlalchemy as sa
    from bench.bulk_equivalence import ONLINE_ORG

    from profilehub.store.database import Database
    from profilehub.store.tables import changes

    db = Database(url)
    try:
        with db.read() as conn:
            rows = conn.scalars(
                sa.select(changes.c.detail).where(
                    changes.c.org_id == ONLINE_ORG, changes.c.entity == "profile"
                )
            ).all()
    finally:
        db.close()
    return [orjson.loads(r) for r in rows]


def test_the_gate_sees_a_bulk_import_that_differs(tmp_path: Path) -> None:
    """A 'bulk' side written one millisecond later than asked: the gate names what differs."""

    def late_bulk(url: str, path: Path, org_id: int, region: str, at: int, bulk: bool) -> tuple[int, str]:
        return cli_import(url, path, org_id, region, at + 1 if bulk else at, bulk)

    importer: Importer = late_bulk
    data = gate_set(12, seed=3)
    url = f"sqlite:///{tmp_path / 'gate.db'}"
    result = run_gate(url, data.main, tmp_path, AT, seed_records=data.seed, importer=importer)
    assert not result.same
    sections = {line.split(":")[0] for line in result.differences if not line.startswith(" ")}
    assert {"profiles", "ids", "changes", "journal", "events"} <= sections
    assert any(line.startswith("digest: profiles: rows differ") for line in result.differences)
