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
        [outcome] = sink([{"ids": {"email": "a@b.co", "cellphone": "+4915012345678", "AdId": "ad-1"}}])
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
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # bench.writer_phases times the writer's own methods: if they are renamed, its report would
    # silently lose phases, so check every phase still shows up, for every slice.
    from bench import writer_phases

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


def test_ceiling_compact_lookup_holds_one_row_per_id(tmp_path: Path) -> None:
    # The compact variant must store every id of the records it claims to (a fingerprint
    # collision or a lost batch would make its rate look better than the layout deserves).
    from bench.ceiling import ID_TYPES, sqlite_key_rate

    for owner_text in (True, False):
        path = tmp_path / f"compact-{owner_text}.db"
        assert sqlite_key_rate(str(path), 250, 100, owner_text=owner_text, tuned=False) > 0
        con = sqlite3.connect(path)
        try:
            count, owners = con.execute("SELECT count(*), count(DISTINCT owner) FROM ids").fetchone()
        finally:
            con.close()
        assert (count, owners) == (250 * len(ID_TYPES), 250)
