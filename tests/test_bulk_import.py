"""``profilehub import cdp --bulk``: the same profiles, rejects and logs as the online importer given
the same clock; all or nothing; into a scope that already holds profiles; under the scope's lock.

The broad equivalence gate (generated ugly sets) is tests/test_bulk_equivalence.py; these are the
bulk path's own focused cases.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from profilehub import bulk
from profilehub.bulk import engine, prepare, resolve
from profilehub.bulk.resolve import key_state
from profilehub.cli import main
from profilehub.ingest import checkpoint
from profilehub.ingest.cdp import cdp_sink
from profilehub.ingest.reader import read_ndjson
from profilehub.ingest.runner import Importer
from profilehub.profiles import ProfileService
from profilehub.store.database import Database
from tests.conftest import make_org
from tests.test_import import people, snapshot, write_ndjson
from tests.test_write_atomicity import passing_fault

AT = 1_780_000_000_000
ONLINE, BULK = 1234, 5678


def ugly() -> list[Any]:
    """Merges, a clear, Unicode case, a blocked-looking dummy, shape errors, an unknown ucid."""
    records: list[Any] = list(people(12))
    records += [
        {"ids": {"email": "STRASSE@example.com"}, "upsert": {"profile": {"city": "Köln"}}},
        {"ids": {"email": "straße@example.com", "AdId": "ad-0"}, "upsert": {"consent": None}},
        {"ids": {"email": "İstanbul@example.com"}, "upsert": {"profile": {"seq": None}}},
        {"ids": {}, "upsert": {}},  # no id: refused (ids)
        "not json",  # refused (parse)
        {"ids": {"email": "x@example.com"}},  # no upsert: refused (upsert)
        {"ucid": "0190d5a4-0000-7000-8000-000000000000", "upsert": {"profile": {"a": 1}}},  # 404
        {"ids": {"cellphone": "+4915000000002", "email": "person0@example.com"}, "upsert": {}},
    ]
    return records


def journal(db: Database, org_id: int) -> list[tuple[Any, ...]]:
    """The journal in its order (seq), ucids left out."""
    with db.read() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT ts, created, named_ucid, ids, upsert FROM profile_writes WHERE org_id = {org_id} "
            "ORDER BY seq"
        ).all()
    return [tuple(r) for r in rows]


def events(db: Database, org_id: int) -> list[tuple[Any, ...]]:
    """The change events in the feed's order: type, time, and the profile's attributes."""
    with db.read() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT type, ts, data FROM events WHERE org_id = {org_id} ORDER BY event_id"
        ).all()
    out = []
    for kind, ts, data in rows:
        profile = json.loads(data)["profile"]
        out.append((kind, ts, json.dumps([profile[c] for c in ("profile", "consent")], sort_keys=True)))
    return out


def counts(db: Database, org_id: int) -> dict[str, int]:
    with db.read() as conn:
        return {
            table: conn.exec_driver_sql(f"SELECT count(*) FROM {table} WHERE org_id = {org_id}").scalar_one()
            for table in ("profiles", "profile_ids", "profile_writes", "events", "consent_ledger")
        }


def change_log(db: Database, org_id: int) -> list[tuple[Any, ...]]:
    """The change log's entries in the feed's order (change ids), ucids left out (they differ
    between orgs)."""
    with db.read() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT ts, action, detail FROM changes WHERE org_id = {org_id} AND entity = 'profile' "
            "ORDER BY change_id"
        ).all()
    out = []
    for ts, action, detail in rows:
        d = json.loads(detail)
        out.append(
            (
                ts,
                action,
                d["idTypes"],
                json.dumps(d["attributes"], sort_keys=True),
                len(d["merged"]),
                len(d["notices"]),
            )
        )
    return out


def online(db: Database, path: Path, org_id: int = ONLINE) -> Any:
    service = ProfileService(db, clock=lambda: AT)
    return Importer(
        path,
        lambda offset, line: read_ndjson(path, offset, line),
        cdp_sink(service, org_id, "EU", "test-import"),
        batch_size=5,
        workers=0,
    ).run()


def bulk_run(db: Database, path: Path, org_id: int = BULK, workers: int = 0, **kw: Any) -> bulk.BulkSummary:
    return bulk.run_bulk_import(
        path,
        lambda offset, line: read_ndjson(path, offset, line),
        cdp_sink(ProfileService(db), org_id, "EU", "test-import"),
        workers=workers,
        at=AT,
        **kw,
    )


@pytest.fixture
def orgs(db: Database) -> Database:
    make_org(db, ONLINE)
    make_org(db, BULK)
    return db


def _ledger(db: Database, org_id: int) -> list[tuple[Any, ...]]:
    with db.read() as conn:
        return [
            tuple(r)
            for r in conn.exec_driver_sql(
                "SELECT attribute, value, ts, actor, source FROM consent_ledger "
                f"WHERE org_id = {org_id} ORDER BY seq, n"
            )
        ]


def test_bulk_keeps_the_consent_ledger_the_online_importer_keeps(orgs: Database, tmp_path: Path) -> None:
    path = write_ndjson(
        tmp_path / "consent.ndjson",
        [
            {"ids": {"email": "a@example.com"}, "upsert": {"consent": {"email": "no"}}},
            {"ids": {"AdId": "ad-1"}, "upsert": {"consent": {"email": "yes", "sms": "yes"}}},
            {"ids": {"email": "a@example.com", "AdId": "ad-1"}, "upsert": {"consent": {"email": "yes"}}},
        ],
    )
    online(orgs, path)
    bulk_run(orgs, path)
    kept = _ledger(orgs, ONLINE)
    assert _ledger(orgs, BULK) == kept
    assert [(a, v, source) for a, v, _, _, source in kept] == [
        ("email", '"no"', "import"),
        ("email", '"yes"', "import"),
        ("sms", '"yes"', "import"),
        ("sms", '"yes"', "merge"),  # what the merge brought to the master
        ("email", '"yes"', "import"),  # the merging write's grant...
        ("email", '"no"', "merge"),  # ...and the denial kept over it
    ]


def test_bulk_gives_what_the_online_importer_gives(orgs: Database, tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "ugly.ndjson", ugly())
    one_by_one = online(orgs, path)
    online_rejects = checkpoint.rejects_path(path).read_text()
    summary = bulk_run(orgs, path)
    assert (summary.read, summary.created, summary.updated, summary.rejected) == (
        one_by_one.read,
        one_by_one.created,
        one_by_one.updated,
        one_by_one.rejected,
    )
    assert (
        summary.reject_reasons
        == one_by_one.reject_reasons
        == {
            "ids": 1,
            "parse": 1,
            "upsert": 1,
            "ucid": 1,
        }
    )
    assert checkpoint.rejects_path(path).read_text() == online_rejects
    assert snapshot(orgs, BULK) == snapshot(orgs, ONLINE)
    assert change_log(orgs, BULK) == change_log(orgs, ONLINE)
    assert journal(orgs, BULK) == journal(orgs, ONLINE)
    assert events(orgs, BULK) == events(orgs, ONLINE)
    assert counts(orgs, BULK) == counts(orgs, ONLINE)
    assert summary.at == AT and summary.peak_rss_bytes > 0


def test_bulk_with_a_worker_process_gives_the_same(
    orgs: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records prepared and groups of components resolved by a worker process and the importer
    at once, and the write's rows made by a worker process (SQLite: the scratch files;
    PostgreSQL: the ``COPY`` data, sent as it is encoded): the same rows, in the same order, as
    the online importer."""
    monkeypatch.setattr(engine, "GROUP_WRITES", 4)  # many groups, shared by both processes
    path = write_ndjson(tmp_path / "ugly.ndjson", ugly() + people(40)[12:])
    online(orgs, path)
    switches = sys.getswitchinterval()
    summary = bulk.run_bulk_import(
        path,
        lambda offset, line: read_ndjson(path, offset, line),
        cdp_sink(ProfileService(orgs), BULK, "EU", "test-import"),
        workers=1,
        at=AT,
    )
    assert summary.resolved_in_memory > 0 and summary.peak_rss_workers_bytes > 0
    assert sys.getswitchinterval() == switches  # shortened while preparing, the process's own again
    assert snapshot(orgs, BULK) == snapshot(orgs, ONLINE)
    assert change_log(orgs, BULK) == change_log(orgs, ONLINE)
    assert journal(orgs, BULK) == journal(orgs, ONLINE)
    assert events(orgs, BULK) == events(orgs, ONLINE)
    if orgs.engine.dialect.name == "postgresql":
        assert "write_encode_wait" in summary.phases  # written through the encoding worker


def test_the_largest_worker_process_is_the_worker_not_the_importer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The summary's "largest worker process" is that process's own peak memory, not the size of
    the importer that started it: here an importer holding 512 MB more than its workers ever do."""
    orgs = Database(f"sqlite:///{tmp_path / 'workers.db'}")
    make_org(orgs, BULK)
    monkeypatch.setattr(engine, "GROUP_WRITES", 4)
    path = write_ndjson(tmp_path / "ugly.ndjson", ugly())
    ballast = bytearray(512 * 2**20)
    ballast[::4096] = b"x" * len(ballast[::4096])  # resident, every page written
    summary = bulk.run_bulk_import(
        path,
        lambda offset, line: read_ndjson(path, offset, line),
        cdp_sink(ProfileService(orgs), BULK, "EU", "test-import"),
        workers=1,
        at=AT,
    )
    assert summary.peak_rss_bytes > len(ballast)
    assert 0 < summary.peak_rss_workers_bytes < len(ballast)
    del ballast
    orgs.close()


def test_bulk_into_a_scope_that_holds_profiles(orgs: Database, tmp_path: Path) -> None:
    """Profiles already stored are found, merged and updated as the online path does."""
    first = write_ndjson(tmp_path / "first.ndjson", people(9))
    second = write_ndjson(tmp_path / "second.ndjson", ugly())
    online(orgs, first)
    online(orgs, first, BULK)
    online(orgs, second)
    summary = bulk_run(orgs, second)
    assert summary.updated > 0
    assert snapshot(orgs, BULK) == snapshot(orgs, ONLINE)
    assert change_log(orgs, BULK) == change_log(orgs, ONLINE)
    assert events(orgs, BULK) == events(orgs, ONLINE)


def test_an_interrupted_bulk_import_writes_nothing(
    orgs: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the writes are applied: the transaction is rolled back, not half written."""
    path = write_ndjson(tmp_path / "people.ndjson", people(30))
    before = counts(orgs, BULK)
    importer: list[engine.BulkImporter] = []
    real_init = engine.BulkImporter.__init__
    calls = 0

    def keep(self: engine.BulkImporter, *a: Any, **kw: Any) -> None:
        real_init(self, *a, **kw)
        importer.append(self)

    def then_press_ctrl_c(real: Any) -> Any:
        def resolve_then_press_ctrl_c(*a: Any, **kw: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 20:
                importer[0]._stop.set()  # what the Ctrl-C handler does
            return real(*a, **kw)

        return resolve_then_press_ctrl_c

    monkeypatch.setattr(engine.BulkImporter, "__init__", keep)
    # A write resolves by replay (apply_write) or, whole one-profile components at once, in
    # closed form: one component a call here, so each call is at least one write.
    monkeypatch.setattr(resolve, "apply_write", then_press_ctrl_c(resolve.apply_write))
    monkeypatch.setattr(resolve, "closed_form", then_press_ctrl_c(resolve.closed_form))
    monkeypatch.setattr(resolve, "CLOSED_AT_ONCE", 1)
    monkeypatch.setattr(engine, "GROUP_WRITES", 7)  # stops are looked for between groups too
    with pytest.raises(bulk.BulkInterrupted):
        bulk_run(orgs, path)
    assert counts(orgs, BULK) == before
    assert 20 <= calls < 30  # stopped before the last write was applied


def type_key(state: Any) -> int:
    """One key for every value of a region's idType, from its ``key_state``."""
    return int.from_bytes(state.digest(), "little", signed=True)


def test_ids_sharing_a_key_still_resolve_exactly(
    orgs: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The importer links records by 64-bit keys of their ids. Were two ids to share one, their
    components would be taken as one; here every id of an idType shares one key, so unrelated people
    look like one simple component by their keys, and must not be computed as one profile."""
    path = write_ndjson(tmp_path / "ugly.ndjson", ugly())
    online(orgs, path)
    # the records' keys: one per idType (``keyed`` is given the state of a region's idType)
    monkeypatch.setattr(
        prepare, "id_key", lambda region, id_type, value: type_key(key_state(region, id_type))
    )
    monkeypatch.setattr(prepare, "keyed", lambda state, value: type_key(state))
    summary = bulk_run(orgs, path)
    assert summary.components < 5 and summary.closed_form > 0  # looked simple by the keys
    assert snapshot(orgs, BULK) == snapshot(orgs, ONLINE)
    assert change_log(orgs, BULK) == change_log(orgs, ONLINE)
    assert events(orgs, BULK) == events(orgs, ONLINE)


def test_ids_sharing_a_key_find_the_stored_profiles_they_touch(
    orgs: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Into a scope that holds profiles each distinct id is looked up once, known by its key: with
    every id sharing one key, the stored people's ids, which come after new people's in the file,
    must still be found, and their component replayed against the store."""
    first = write_ndjson(tmp_path / "first.ndjson", people(9))
    second = write_ndjson(tmp_path / "second.ndjson", people(18)[9:] + people(9)[:4])
    online(orgs, first)
    online(orgs, first, BULK)
    online(orgs, second)
    monkeypatch.setattr(prepare, "id_key", lambda region, id_type, value: 7)
    monkeypatch.setattr(prepare, "keyed", lambda state, value: 7)
    summary = bulk_run(orgs, second)
    assert summary.replayed_in_store > 0
    assert snapshot(orgs, BULK) == snapshot(orgs, ONLINE)
    assert change_log(orgs, BULK) == change_log(orgs, ONLINE)
    assert events(orgs, BULK) == events(orgs, ONLINE)


def _indexes(db: Database) -> set[str]:
    with db.read() as conn:
        sql = (
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
            if conn.dialect.name == "postgresql"
            else "SELECT name FROM sqlite_master WHERE type = 'index'"
        )
        return {str(name) for (name,) in conn.exec_driver_sql(sql)}


def test_a_first_bulk_import_failing_mid_write_leaves_the_store_and_its_indexes(
    orgs: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Into an empty store the bulk path builds the ucid indexes after loading the rows; a failure
    halfway through the id rows rolls back the rows and the dropped index alike."""
    path = write_ndjson(tmp_path / "people.ndjson", people(30))
    indexes = _indexes(orgs)
    assert {"ix_profile_ids_ucid", "ix_changes_entity", "ix_events_entity"} <= indexes
    before = counts(orgs, BULK)
    real_insert = engine._insert

    def insert_then_fail(conn: Any, table: str, columns: Any, rows: Any) -> None:
        if table == "profile_ids":  # some id rows in, the index dropped, then the disk fills up
            real_insert(conn, table, columns, itertools.islice(rows, 20))
            raise RuntimeError("the disk is full")
        real_insert(conn, table, columns, rows)

    with monkeypatch.context() as patch:
        patch.setattr(engine, "_insert", insert_then_fail)
        with pytest.raises(RuntimeError, match="disk is full"):
            bulk_run(orgs, path)
    assert counts(orgs, BULK) == before
    assert _indexes(orgs) == indexes
    summary = bulk_run(orgs, path)
    assert summary.created > 0 and "index_profile_ids" in summary.phases  # built after the load
    assert _indexes(orgs) == indexes
    online(orgs, path)
    assert snapshot(orgs, BULK) == snapshot(orgs, ONLINE)


def _postgres_only(
    db: Database, why: str = "the encoded COPY load is PostgreSQL's; SQLite's run covers its scratch files"
) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip(why)


def test_a_stop_during_the_encoded_write_writes_nothing(
    orgs: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the worker's encoded rows are sent to PostgreSQL (the id rows in, the
    indexes dropped): nothing written, the indexes back, and the next import runs."""
    _postgres_only(orgs)
    path = write_ndjson(tmp_path / "people.ndjson", people(30))
    indexes = _indexes(orgs)
    before = counts(orgs, BULK)
    real_copy = engine.BulkImporter._copy_file
    copied: list[str] = []

    def copy_then_press_ctrl_c(self: engine.BulkImporter, conn: Any, table: str, *a: Any) -> float:
        waited = real_copy(self, conn, table, *a)
        copied.append(table)
        if table == "profile_ids":
            self._stop.set()  # what the Ctrl-C handler does
        return waited

    with monkeypatch.context() as patch:
        patch.setattr(engine.BulkImporter, "_copy_file", copy_then_press_ctrl_c)
        with pytest.raises(bulk.BulkInterrupted):
            bulk_run(orgs, path, workers=1)
    assert copied == ["profiles", "profile_ids"]
    assert counts(orgs, BULK) == before
    assert _indexes(orgs) == indexes
    assert bulk_run(orgs, path, workers=1).created > 0


def test_a_failing_encoder_process_stops_the_import_with_nothing_written(
    orgs: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker process that encodes the rows for PostgreSQL fails on the change log (a spool
    of its rows is gone): the import stops with that error, nothing written, the indexes back."""
    _postgres_only(orgs)
    path = write_ndjson(tmp_path / "people.ndjson", people(30))
    indexes = _indexes(orgs)
    before = counts(orgs, BULK)
    real_write = engine.BulkImporter._write_encoded

    def write_with_a_spool_gone(self: engine.BulkImporter, conn: Any, spools: Any, *a: Any) -> None:
        spools[-1].changes.close()
        Path(spools[-1].changes.path).unlink()  # read only by the worker
        real_write(self, conn, spools, *a)

    with monkeypatch.context() as patch:
        patch.setattr(engine.BulkImporter, "_write_encoded", write_with_a_spool_gone)
        with pytest.raises(FileNotFoundError, match="changes"):
            bulk_run(orgs, path, workers=1)
    assert counts(orgs, BULK) == before
    assert _indexes(orgs) == indexes


def test_cli_bulk_and_at(orgs: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", orgs.url)
    path = write_ndjson(tmp_path / "ugly.ndjson", ugly())
    runner = CliRunner()
    args = ["import", "cdp", str(path), "--region", "EU", "--quiet", "--max-rejects", "10", "--workers", "0"]
    done = runner.invoke(main, [*args, "--org-id", str(ONLINE), "--at", str(AT)])
    assert done.exit_code == 0, done.output
    done = runner.invoke(main, [*args, "--org-id", str(BULK), "--at", str(AT), "--bulk"])
    assert done.exit_code == 0, done.output
    assert "4 rejected" in done.output
    # what the run took, said at the end, and which phase grew it
    assert re.search(
        r"peak memory \(RSS\): importer [\d,]+ MB \(by the end of prepare [\d,]+, link [\d,]+, "
        r"resolve [\d,]+, write [\d,]+\)",
        done.output,
    )
    assert re.search(
        r"phases: prepare [\d.]+s, link [\d.]+s, resolve [\d.]+s, write [\d.]+s, commit [\d.]+s", done.output
    )
    assert snapshot(orgs, BULK) == snapshot(orgs, ONLINE)
    assert change_log(orgs, BULK) == change_log(orgs, ONLINE)
    refused = runner.invoke(main, [*args, "--org-id", str(BULK), "--bulk", "--resume"])
    assert refused.exit_code == 1 and "all or nothing" in refused.output


def test_bulk_summary_says_which_phase_runs_for_the_progress_display(
    orgs: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the file is read the bar stands full while the transaction's phases run (minutes at
    ten million records): the summary names the running one, which the CLI shows beside the file's
    name, in the order docs/bulk.md gives, and none once the import is done."""
    seen: list[str] = []
    begin = engine.BulkSummary.begin

    def spy(summary: engine.BulkSummary, phase: str) -> float:
        seen.append(phase)
        return begin(summary, phase)

    monkeypatch.setattr(engine.BulkSummary, "begin", spy)
    path = write_ndjson(tmp_path / "some.ndjson", ugly())
    summary = bulk_run(orgs, path)
    assert seen == ["prepare", "link", "resolve", "write", "commit"]
    assert summary.running == ""


def test_a_bulk_import_that_meets_a_passing_database_fault_stops_after_one_run(
    orgs: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault another attempt may not meet (an I/O error, a lost connection) ends the import with
    it, nothing written, instead of the writer running the whole transaction again (up to five
    times, minutes each at millions of records): the user runs it again once it is fixed."""
    runs = 0
    transaction = engine.BulkImporter._transaction

    def faulty(self: engine.BulkImporter, conn: Any, *args: Any) -> Any:
        nonlocal runs
        runs += 1
        transaction(self, conn, *args)  # written, then the fault before the commit
        raise passing_fault()

    monkeypatch.setattr(engine.BulkImporter, "_transaction", faulty)
    path = write_ndjson(tmp_path / "some.ndjson", ugly())
    with pytest.raises(sa.exc.OperationalError):
        bulk_run(orgs, path)
    assert runs == 1
    assert counts(orgs, BULK)["profiles"] == 0


def _rows_held(db: Database, org_id: int) -> int:
    with db.read() as conn:
        return int(
            conn.exec_driver_sql("SELECT count(*) FROM profile_ids WHERE org_id = %s", (org_id,)).scalar_one()
        )


def _rows_planned(db: Database, org_id: int) -> float:
    """The planner's estimate of ``org_id``'s rows in profile_ids."""
    with db.read() as conn:
        [[plan]] = conn.exec_driver_sql(
            "EXPLAIN (FORMAT JSON) SELECT 1 FROM profile_ids WHERE org_id = %s", (org_id,)
        ).all()
    return float(plan[0]["Plan"]["Plan Rows"])


def test_a_bulk_import_into_an_org_newer_than_its_statistics_analyses_before_its_lookups(
    orgs: Database, tmp_path: Path
) -> None:
    """Statistics taken before the org wrote (here: when only another org had) put the org at about
    one row, and the bulk lookup's probes of its ids then went through the ucid index, every row of
    the org filtered for each id (minutes at a few thousand profiles, seen at 3,000 profiles under
    150,000 ids of another org): the import analyses the tables first."""
    _postgres_only(
        orgs,
        "stale planner statistics are PostgreSQL's: SQLite stores are never analysed, their lookups take the key",
    )
    with orgs.engine.connect() as conn:
        # Another org's 200,000 ids, analysed: the primary key deep enough that a probe of an org
        # estimated at one row looks cheaper through the ucid index.
        conn.exec_driver_sql(
            f"INSERT INTO profile_ids (org_id, region, id_type, value, ucid, ts) SELECT {ONLINE}, 'EU', "
            "(ARRAY['email_sha256_lowercase', 'email_md5_lowercase', 'AdId', 'fpuid', 'ga_clientid'])[n %% 5 + 1], "
            "md5(n::text), md5((n / 7)::text), 0 FROM generate_series(1, 200000) n"
        )
        conn.exec_driver_sql("ANALYZE profile_ids")
        conn.commit()
    online(orgs, write_ndjson(tmp_path / "first.ndjson", people(600)), BULK)
    assert _rows_planned(orgs, BULK) < _rows_held(orgs, BULK) / 10, "the stale statistics this test is about"
    summary = bulk_run(orgs, write_ndjson(tmp_path / "second.ndjson", people(30)))
    assert summary.updated > 0
    assert _rows_planned(orgs, BULK) > _rows_held(orgs, BULK) / 2
