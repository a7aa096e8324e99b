"""The latency probes: new people are really new, existing people are spread over the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.generate import ORG_ID, REGION, dataset
from bench.run_import import setup_org
from bench.run_latency import PROBES, probe_writes

from profilehub.identity.normalize import normalise_ids
from profilehub.ingest.cdp import cdp_sink
from profilehub.ingest.reader import read_ndjson
from profilehub.ingest.runner import Importer
from profilehub.profiles import ProfileService
from profilehub.store.database import Database
from profilehub.store.strategy_store import load_strategy

RECORDS = 1500


def _stored(db: Database, bodies: list[dict[str, Any]]) -> list[bool]:
    """For each body: whether any of its ids is stored (normalised and hashed as the store does)."""
    with db.read() as conn:
        strategy = load_strategy(conn, ORG_ID)
        stored = set(conn.exec_driver_sql("SELECT id_type, value FROM profile_ids").all())
    return [
        any((i.id_type, i.value) in stored for i in normalise_ids(strategy, body["ids"], REGION)[0])
        for body in bodies
    ]


def test_probe_people_are_new_or_spread_over_the_whole_store(database_url: str, tmp_path: Path) -> None:
    data = dataset(tmp_path, RECORDS)
    setup_org(database_url)
    db = Database(database_url)
    try:
        sink = cdp_sink(ProfileService(db), ORG_ID, REGION, "probe-test")
        Importer(
            data.records, lambda offset, line: read_ndjson(data.records, offset, line), sink, batch_size=500
        ).run()
        existing, new, people = probe_writes(data, RECORDS, stage=1)
        assert len(existing) == len(new) == PROBES // 2
        # New people: not one of their ids is stored, so each write makes a profile.
        assert not any(_stored(db, new))
        # Existing people: every probe's ids are already stored.
        assert all(_stored(db, existing))
    finally:
        db.close()
    # Drawn uniformly from every stored person, not from the last records imported (hot in the
    # cache): each quarter of the population (people are numbered as they first appear) holds
    # about a quarter of them.
    assert len(set(people)) == len(people)
    quarters = [sum(q * data.people <= 4 * n < (q + 1) * data.people for n in people) for q in range(4)]
    assert all(count >= 0.15 * len(people) for count in quarters), quarters
