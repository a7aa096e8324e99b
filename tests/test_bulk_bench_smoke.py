"""The benchmark's generator and identity check at a tiny size: accounting only, never timing."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from bench.generate import DUMMY_EMAIL, ORG_ID, REGION, ZERO_AD_ID, Person, dataset, records
from bench.identity_check import check_identity
from bench.run_import import setup_org

from profilehub.ingest.cdp import cdp_sink
from profilehub.ingest.reader import read_ndjson
from profilehub.ingest.runner import Importer
from profilehub.profiles import ProfileService
from profilehub.store.database import Database


def test_generator_is_deterministic_and_has_the_ugly_cases() -> None:
    first = list(records(3000, seed=3))
    assert first == list(records(3000, seed=3))
    assert all(len(body["ids"]) == 3 for body, _, _ in first)
    people = {number for _, number, _ in first}
    assert sum(new for _, _, new in first) == len(people) == max(people) + 1
    emails = [body["ids"].get("email") for body, _, _ in first if "email" in body["ids"]]
    assert DUMMY_EMAIL in emails
    assert any(e != e.strip() or e != e.lower() for e in emails if e != DUMMY_EMAIL)
    assert ZERO_AD_ID in {body["ids"]["AdId"] for body, _, _ in first}
    assert max(len(Person(n, 3).devices) for n in people) == 3
    repeats = Counter(number for _, number, _ in first)
    assert any(count > 1 for count in repeats.values())


def test_identity_check_against_ground_truth(database_url: str, tmp_path: Path) -> None:
    data = dataset(tmp_path, 1500, seed=5)
    truth_people = {line.split("\t")[0] for line in data.truth.read_text().splitlines()}
    assert len(truth_people) == data.people
    setup_org(database_url)
    db = Database(database_url)
    try:
        sink = cdp_sink(ProfileService(db), ORG_ID, REGION, "bench-smoke")
        summary = Importer(
            data.records, lambda offset, line: read_ndjson(data.records, offset, line), sink, batch_size=400
        ).run()
        assert summary.read == 1500 and summary.rejected == 0
        result = check_identity(db, data.truth)
    finally:
        db.close()
    # Blocked dummies never join two people; every person is found; a person seen only by email
    # and only by phone on different devices stays two profiles (split), which is right.
    assert result.over_merged_profiles == 0
    assert result.people == data.people
    assert result.profiles >= data.people
    assert 1.0 <= result.profiles_per_person < 1.1


def test_ceiling_writes_the_id_rows_profilehub_stores_for_such_a_record(database_url: str) -> None:
    # bench.ceiling claims to store what the importer stores for an email + phone + device record.
    from bench.ceiling import ID_TYPES, batches

    setup_org(database_url)
    db = Database(database_url)
    try:
        service = ProfileService(db)
        sink = cdp_sink(service, ORG_ID, REGION, "bench")
        [outcome] = sink(
            [{"upsert": {}, "ids": {"email": "a@b.co", "cellphone": "+4915012345678", "AdId": "ad-1"}}]
        )
        assert not isinstance(outcome, Exception)
        with db.read() as conn:
            stored = conn.exec_driver_sql("SELECT id_type, value FROM profile_ids").all()
    finally:
        db.close()
    assert sorted(t for t, _ in stored) == sorted(ID_TYPES)
    [rows] = list(batches(1, 10))
    lengths = {t: len(v) for _, _, t, v, _, _ in rows}
    assert lengths == {t: len(v) for t, v in stored if t != "AdId"} | {"AdId": 36}


def test_writer_phases_reports_each_slice_of_a_real_import(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # bench.writer_phases times the writer's own methods: if they are renamed, its report would
    # silently lose phases, so check every phase still shows up, for every slice.
    from bench import writer_phases
    from bench.machine import LOCK_ENV

    # The run takes the bench lock: a lock file of this test's own, not the machine's.
    monkeypatch.setenv(LOCK_ENV, str(tmp_path / "bench.lock"))
    backend = "postgres" if database_url.startswith("postgresql") else "sqlite"
    writer_phases.main(
        [
            "--records",
            "1200",
            "--slice",
            "600",
            "--batch-size",
            "300",
            "--backend",
            backend,
            "--out",
            str(tmp_path),
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    slices = [line for line in lines if "records/s in this slice" in line]
    assert [line.split(" records:")[0] for line in slices] == ["[phases] to 600", "[phases] to 1,200"]
    for name in (
        "reads (prefetch",
        "resolution in Python",
        "commit and the rest",
        "flush: INSERT profile_ids",
    ):
        assert sum(name in line for line in lines) == 2, name
    assert lines[-1].startswith("[phases] reproduce: ")


def test_ceiling_compares_like_with_like(tmp_path: Path) -> None:
    # Every layout gets the same ids, each table's rows in its own key order (as profilehub's flush
    # writes them), and the compact layout stores what a real one needs: the values and the owner
    # index beside the lookup. A layout missing rows or tables would look faster than it deserves.
    from bench.ceiling import ID_TYPES, batches, compact_batches, sqlite_compact_rate, sqlite_rate

    today = [row for rows in batches(250, 100) for row in rows]
    for rows in batches(250, 100):
        assert rows == sorted(rows, key=lambda r: (r[0], r[1], r[2], r[3]))
    ids = {(r[2], r[3]) for r in today}
    assert len(ids) == len(today) == 250 * len(ID_TYPES)
    for owner_text in (True, False):
        compact_ids = set()
        for lookup, values in compact_batches(250, 100, owner_text):
            assert lookup == sorted(lookup) and values == sorted(values)
            assert len(lookup) == len(values) == len({fp for fp, _ in lookup})
            compact_ids |= {(v[3], v[4]) for v in values}
        assert compact_ids == ids

    path = tmp_path / "today.db"
    assert sqlite_rate(str(path), 250, 100) > 0
    con = sqlite3.connect(path)
    try:
        indexes = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "ix_profile_ids_ucid" in indexes  # today's owner index is timed too
    finally:
        con.close()
    for owner_text in (True, False):
        path = tmp_path / f"compact-{owner_text}.db"
        assert sqlite_compact_rate(str(path), 250, 100, owner_text=owner_text) > 0
        con = sqlite3.connect(path)
        try:
            lookups, owners = con.execute("SELECT count(*), count(DISTINCT owner) FROM id_lookup").fetchone()
            values, by_owner = con.execute("SELECT count(*), count(DISTINCT owner) FROM id_values").fetchone()
            schema = con.execute("SELECT sql FROM sqlite_master WHERE name = 'id_values'").fetchone()[0]
        finally:
            con.close()
        assert (lookups, owners) == (values, by_owner) == (250 * len(ID_TYPES), 250)
        assert "PRIMARY KEY (org_id, region, owner, id_type, value)" in schema and "WITHOUT ROWID" in schema
