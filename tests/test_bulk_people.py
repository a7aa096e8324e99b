"""``profilehub import people --bulk``: the same people, emails, links, profiles, change log,
journal, events, rejects and summary as the online people import given the same ``--at`` and
``--batch-size``; all or nothing."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from bench.bulk_equivalence import BULK_ORG, ONLINE_ORG, cli_import, cli_import_people, run_gate
from bench.gate_people import people_gate_set
from click.testing import CliRunner

from profilehub.bulk import people as people_bulk
from profilehub.bulk.interrupted import BulkInterrupted
from profilehub.bulk.people import PeopleBulkImporter
from profilehub.cli import main
from profilehub.crm import people as crm_people
from profilehub.ingest import checkpoint
from profilehub.ingest.reader import SourceRecord, read_ndjson
from profilehub.store.database import Database, lock_scope
from tests.conftest import make_org

AT = 1_780_000_000_000
ORG = 1234


@pytest.mark.parametrize(("batch_size", "set_based"), [(7, True), (2000, True), (7, False)])
def test_bulk_people_write_what_the_online_people_import_writes(
    database_url: str, tmp_path: Path, batch_size: int, set_based: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Set-based (components, closed form, the rest replayed against the store) and per call
    (the path it falls back to). At batch size 7 the person store's rows go to the tables every
    few people and the replayed writes' rows to a new spool group every few writes, as a large
    file's do (one group each at 2,000)."""
    monkeypatch.setattr(people_bulk, "SET_BASED", set_based)
    if batch_size < 10:
        monkeypatch.setattr(people_bulk, "FLUSH_PEOPLE", 5)
        monkeypatch.setattr(people_bulk, "SPOOL_GROUP", 4)
    in_closed_form: list[int] = []
    real_resolve = people_bulk.resolve_group

    def spy(strategy: Any, org_id: int, group: Any, *args: Any) -> Any:
        in_closed_form.append(len(group))
        return real_resolve(strategy, org_id, group, *args)

    monkeypatch.setattr(people_bulk, "resolve_group", spy)
    data = people_gate_set(48, seed=21)
    result = run_gate(
        database_url,
        data.main,
        tmp_path,
        AT,
        seed_records=data.seed,
        seed_people=data.seed_people,
        importer=partial(cli_import_people, batch_size=batch_size),
        seed_importer=cli_import,
        people_importer=cli_import_people,
    )
    assert result.differences == []
    assert result.online == result.bulk
    # People with a second email, whose profile holds one email already: counted alike.
    assert "written without ids over a profile's limit" in result.bulk, result.bulk
    # The set is as ugly as it claims: emails of another person (409), shape and value errors,
    # people matched again, people whose emails are stored profiles' (merges, refused merges).
    rejects = [json.loads(line) for line in checkpoint.rejects_path(tmp_path / "bulk" / "gate.ndjson").open()]
    statuses = Counter(r["error"]["status"] for r in rejects)
    assert statuses[409] >= 3 and statuses[400] >= 3, statuses
    assert " 0 updated" not in result.bulk
    assert result.counts["linkedUcid"] >= 2  # people joining stored profiles merged them
    db = Database(database_url)
    try:
        with db.read() as conn:
            notices = Counter(
                n["code"]
                for (detail,) in conn.exec_driver_sql(
                    f"SELECT detail FROM changes WHERE org_id = {BULK_ORG} AND entity = 'profile'"
                )
                for n in json.loads(detail).get("notices", [])
            )
            linked = conn.exec_driver_sql(
                f"SELECT count(*) FROM profile_ids WHERE org_id = {ONLINE_ORG} AND id_type = 'crm_person_id'"
            ).scalar_one()
    finally:
        db.close()
    assert notices["merge_refused"] > 0, notices
    assert linked >= 20
    # Set-based, most people's graph writes resolved in closed form, the rest against the store.
    assert (sum(in_closed_form) >= 10) if set_based else not in_closed_form, in_closed_form


def test_bulk_people_matched_by_another_attribute_write_what_the_online_import_writes(
    database_url: str, tmp_path: Path
) -> None:
    """Matched by first name the CRM part reads its own rows as it goes: the per-call path, which
    replaces a matched person's emails (the profile lets go of the dropped ones)."""
    data = people_gate_set(24, seed=22)
    result = run_gate(
        database_url,
        data.main,
        tmp_path,
        AT,
        seed_records=data.seed,
        seed_people=data.seed_people,
        importer=partial(cli_import_people, batch_size=7, matching="firstName"),
        seed_importer=cli_import,
        people_importer=cli_import_people,
    )
    assert result.differences == []
    assert " 0 updated" not in result.bulk, result.bulk


def _people_file(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "people.ndjson"
    with path.open("w") as f:
        for k in range(n):
            f.write(json.dumps({"firstName": f"P{k}", "emails": [f"p{k}@x.example"]}) + "\n")
    return path


def _table_counts(db: Database) -> dict[str, int]:
    with db.read() as conn:
        return {
            t: conn.exec_driver_sql(f"SELECT count(*) FROM {t} WHERE org_id = {ORG}").scalar_one()
            for t in ("crm_records", "crm_person_emails", "profiles", "profile_ids", "changes", "events")
        }


@pytest.mark.parametrize("set_based", [True, False])
def test_a_failed_bulk_people_import_leaves_nothing(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, set_based: bool
) -> None:
    """A fault after rows were written in the transaction (set-based: people, profiles and ids,
    then the change log fails; per call: two calls' people, links and events): nothing stays."""
    db = Database(database_url)
    try:
        make_org(db, ORG)
        before = _table_counts(db)
        path = _people_file(tmp_path, 30)
        if set_based:
            real_rows = people_bulk._stream_rows

            def failing_rows(conn: Any, table: str, *args: Any, **kw: Any) -> None:
                if table == "changes":
                    raise RuntimeError("disk gone")
                real_rows(conn, table, *args, **kw)

            monkeypatch.setattr(people_bulk, "_stream_rows", failing_rows)
        else:
            real = crm_people._resolve_in_graph
            calls = 0

            def failing(*args: Any, **kw: Any) -> None:
                nonlocal calls
                calls += 1
                if calls >= 3:  # every attempt (the writer tries a failed job again)
                    raise RuntimeError("disk gone")
                real(*args, **kw)

            monkeypatch.setattr(people_bulk, "_resolve_in_graph", failing)
        importer = PeopleBulkImporter(
            path,
            partial(read_ndjson, path),
            db,
            ORG,
            "email",
            "t",
            batch_size=10,
            at=AT,
            set_based=set_based,
            workers=0,
        )
        with pytest.raises(RuntimeError, match="disk gone"):
            importer.run()
        assert _table_counts(db) == before
    finally:
        db.close()


def test_an_interrupted_bulk_people_import_leaves_nothing(database_url: str, tmp_path: Path) -> None:
    """Ctrl-C (the stop the signal handler sets) while the file is written: rolled back."""
    db = Database(database_url)
    try:
        make_org(db, ORG)
        before = _table_counts(db)
        path = _people_file(tmp_path, 30)
        importer: PeopleBulkImporter

        def records(offset: int, line: int) -> Iterator[SourceRecord]:
            for record in read_ndjson(path, offset, line):
                if record.line == 25:
                    importer._stop.set()
                yield record

        importer = PeopleBulkImporter(path, records, db, ORG, "email", "t", batch_size=10, at=AT, workers=0)
        with pytest.raises(BulkInterrupted):
            importer.run()
        assert _table_counts(db) == before
    finally:
        db.close()


def test_import_people_bulk_from_the_command_line(database_url: str, tmp_path: Path) -> None:
    """The command a user runs: a summary as online, the rejects file, status 1 over --max-rejects."""
    db = Database(database_url)
    make_org(db, ORG)
    db.close()
    path = tmp_path / "people.csv"
    path.write_text("Email,First\nann@x.com,Ann\nbob@x.com,Bob\nANN@x.com,Annie\nnot-an-email,Bad\n")
    args = ["import", "people", str(path), "--org-id", str(ORG), "--matching-attribute", "email"]
    args += ["--map", "Email=emails", "--map", "First=firstName", "--quiet", "--bulk"]
    result = CliRunner().invoke(main, args, env={"PROFILEHUB_DATABASE_URL": database_url})
    assert result.exit_code == 1, result.output
    assert "4 records" in result.output and "2 created, 1 updated, 1 rejected" in result.output
    assert "more than --max-rejects 0" in result.output
    [reject] = [json.loads(x) for x in checkpoint.rejects_path(path).read_text().splitlines()]
    assert reject["line"] == 5
    result = CliRunner().invoke(main, [*args, "--resume"], env={"PROFILEHUB_DATABASE_URL": database_url})
    assert result.exit_code == 1 and "all or nothing" in result.output


def test_a_bulk_people_import_whose_first_records_are_all_refused_stops_and_writes_nothing(
    database_url: str, tmp_path: Path
) -> None:
    db = Database(database_url)
    make_org(db, ORG)
    before = _table_counts(db)
    db.close()
    path = tmp_path / "people.ndjson"
    lines = [json.dumps({"emails": [f"n{k}@x.example"]}) for k in range(120)]  # no name: 400
    path.write_text("\n".join([*lines, json.dumps({"firstName": "Ok", "emails": ["ok@x.example"]})]) + "\n")
    args = ["import", "people", str(path), "--org-id", str(ORG), "--matching-attribute", "email"]
    result = CliRunner().invoke(
        main, [*args, "--quiet", "--bulk", "--workers", "0"], env={"PROFILEHUB_DATABASE_URL": database_url}
    )
    assert result.exit_code == 1 and "the first 100 records were all rejected" in result.output, result.output
    assert "(firstName: line 1: " in result.output  # the reason and its first example, as online
    rejects = checkpoint.rejects_path(path).read_text().splitlines()
    assert len(rejects) == 120 and json.loads(rejects[0])["line"] == 1
    db = Database(database_url)
    try:
        assert _table_counts(db) == before
    finally:
        db.close()


@pytest.mark.parametrize("scope", ["crm", "profiles:EU"])
def test_the_bulk_people_import_holds_the_locks_the_online_path_takes(
    database_url: str, tmp_path: Path, scope: str
) -> None:
    """Another process's writer of the org's people (``crm``) or home-region profiles waits until
    the bulk import commits, as it would for an online batch."""
    db = Database(database_url)
    make_org(db, ORG)
    other = Database(database_url)
    path = _people_file(tmp_path, 30)
    waiting: list[threading.Thread] = []
    took: list[float] = []
    seen_while_running: list[int] = []

    def lock(conn: Any) -> None:
        lock_scope(conn, ORG, scope)
        took.append(time.monotonic())

    def records(offset: int, line: int) -> Iterator[SourceRecord]:
        for record in read_ndjson(path, offset, line):
            if record.line == 25 and not waiting:
                waiting.append(threading.Thread(target=other.write, args=(lock,)))
                waiting[0].start()
                time.sleep(1.0)
                seen_while_running.append(len(took))
            yield record

    try:
        importer = PeopleBulkImporter(path, records, db, ORG, "email", "t", batch_size=10, at=AT, workers=0)
        summary = importer.run()
        waiting[0].join(30)
    finally:
        other.close()
        db.close()
    assert summary.created == 30
    assert seen_while_running == [0] and len(took) == 1  # it waited, then took the lock
