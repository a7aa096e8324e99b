"""``profilehub import cdp``: NDJSON and CSV, rejects, resume after an interruption, idempotent re-runs."""

from __future__ import annotations

import gc
import json
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from profilehub import collector
from profilehub.cli import main
from profilehub.errors import BadRequest
from profilehub.identity.normalize import Identifier
from profilehub.identity.resolve import PreparedWrite
from profilehub.ingest import checkpoint
from profilehub.ingest.cdp import cdp_sink, prepare_records, profile_write
from profilehub.ingest.reader import ColumnMapping, read_csv, read_ndjson
from profilehub.ingest.runner import Importer, Outcome, Sink
from profilehub.profiles import ProfileService
from profilehub.store.database import Database
from profilehub.store.strategy_store import block_value
from tests.conftest import make_org

ORG = 1234


def people(n: int) -> list[dict[str, Any]]:
    """Records with overlap: every third one repeats an earlier email with a new phone (a merge)."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        if i % 3 == 2:
            ids = {"email": f" Person{i - 2}@Example.com", "cellphone": f"+4915{i:08d}"}
        else:
            ids = {"email": f"person{i}@example.com", "AdId": f"ad-{i}"}
        out.append({"ids": ids, "upsert": {"profile": {"seq": i}}})
    return out


def write_ndjson(path: Path, records: Sequence[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def snapshot(db: Database, org_id: int = ORG) -> list[tuple[Any, ...]]:
    """Every profile's identity and attributes, without timestamps or ucids' random parts."""
    with db.read() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT p.ucid, p.merged_into, p.data FROM profiles p WHERE p.org_id = {org_id}"
        ).all()
        ids = conn.exec_driver_sql(
            f"SELECT ucid, id_type, value FROM profile_ids WHERE org_id = {org_id} ORDER BY id_type, value"
        ).all()
    by_ucid: dict[str, list[tuple[str, str]]] = {}
    for ucid, id_type, value in ids:
        by_ucid.setdefault(ucid, []).append((id_type, value))
    out = []
    for ucid, merged_into, data in rows:
        attrs = {c: {k: v for k, v in a.items() if k != "_ts"} for c, a in json.loads(data).items()}
        out.append(
            (tuple(sorted(by_ucid.get(ucid, []))), merged_into is not None, json.dumps(attrs, sort_keys=True))
        )
    return sorted(out)


@pytest.fixture
def service(db: Database) -> ProfileService:
    make_org(db, ORG)
    return ProfileService(db)


def run_import(
    service: ProfileService,
    path: Path,
    resume: bool = False,
    sink: Sink | None = None,
    batch_size: int = 7,
    workers: int | None = None,
) -> Any:
    importer = Importer(
        path,
        lambda offset, line: read_ndjson(path, offset, line),
        sink or cdp_sink(service, ORG, "EU", "test-import"),
        batch_size=batch_size,
        workers=workers,
    )
    return importer.run(resume=resume)


def test_ndjson_import_writes_and_counts(service: ProfileService, tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "people.ndjson", people(30))
    summary = run_import(service, path)
    assert (summary.read, summary.created, summary.updated, summary.rejected) == (30, 20, 10, 0)
    assert not checkpoint.rejects_path(path).exists() and not checkpoint.checkpoint_path(path).exists()
    found = service.search(ORG, None, {"email": ["person0@example.com"]})
    [profile] = found
    assert profile["profile"]["seq"] == 2 and profile["ids"]["maid"][0]["AdId"] == "ad-0"


@pytest.mark.parametrize("workers", [0, 2], ids=["inline", "worker-processes"])
def test_rejects_file_lists_bad_records_with_reasons(
    service: ProfileService, tmp_path: Path, workers: int
) -> None:
    records: list[Any] = [
        {"upsert": {}, "ids": {"email": "good@x.com"}},
        "{not json",
        {"upsert": {}, "ids": {"nope": "1"}},
        {"orgId": 999, "upsert": {}, "ids": {"email": "other@x.com"}},
        '["an", "array"]',
        {"upsert": {}, "ids": {"email": "good2@x.com"}, "region": "MARS"},
        {"upsert": {}, "ids": {"email": "good3@x.com"}, "extra": True},
        {"upsert": {}, "ids": {"email": "good4@x.com"}},
    ]
    path = write_ndjson(tmp_path / "mixed.ndjson", records)
    summary = run_import(service, path, batch_size=3, workers=workers)
    assert (summary.read, summary.created, summary.rejected) == (8, 2, 6)
    rejects = [json.loads(line) for line in checkpoint.rejects_path(path).read_text().splitlines()]
    assert [r["line"] for r in rejects] == [2, 3, 4, 5, 6, 7]
    assert rejects[0]["record"] == "{not json" and "not valid JSON" in rejects[0]["error"]["message"]
    assert "ids.nope" in rejects[1]["error"]["errors"]
    assert rejects[2]["error"]["status"] == 403 and "orgId" in rejects[2]["error"]["errors"]
    # A JSON array (a whole export on one line, say): told that the file must be NDJSON.
    assert "a JSON array" in rejects[3]["error"]["message"] and "NDJSON" in rejects[3]["error"]["message"]
    assert "region" in rejects[4]["error"]["errors"]
    assert "extra" in rejects[5]["error"]["message"]
    assert all(r["error"]["success"] is False for r in rejects)


def test_preparing_in_worker_processes_gives_the_same_profiles_as_inline(
    db: Database, tmp_path: Path
) -> None:
    # Two orgs, one database: the same file imported with ids prepared inline and in workers.
    make_org(db, ORG)
    make_org(db, 5678)
    path = write_ndjson(tmp_path / "people.ndjson", people(90))
    inline = run_import(ProfileService(db), path, batch_size=10, workers=0)
    other = Importer(
        path,
        lambda offset, line: read_ndjson(path, offset, line),
        cdp_sink(ProfileService(db), 5678, "EU", "test-import"),
        batch_size=10,
        workers=2,
    ).run()
    assert (
        inline.counts()
        == other.counts()
        == {"read": 90, "created": 60, "updated": 30, "rejected": 0, "suppressed": 0, "over_id_limit": 0}
    )
    assert snapshot(db) == snapshot(db, org_id=5678)


def test_writes_prepared_before_a_strategy_change_are_prepared_again(
    service: ProfileService, db: Database
) -> None:
    # The importer prepares the next batch under the strategy of the last one; a value blocked
    # meanwhile must still be dropped when the batch is written.
    sink = cdp_sink(service, ORG, "EU", "test-import")
    sink([{"upsert": {}, "ids": {"email": "first@x.com"}}])
    records = [{"upsert": {}, "ids": {"email": "later@x.com", "AdId": "ad-blocked-later"}}]
    job = sink.prepare_job(records)
    assert job is not None
    prepared = job[0](*job[1])
    assert prepared.strategy_version == service.strategies.cached(ORG).version  # type: ignore[union-attr]
    db.write(lambda c: block_value(c, ORG, "ad-blocked-later"))
    [outcome] = sink.write(records, prepared)
    assert not isinstance(outcome, Exception) and outcome.created
    [profile] = service.search(ORG, None, {"email": ["later@x.com"]})
    assert "maid" not in profile["ids"]
    assert service.search(ORG, None, {"AdId": ["ad-blocked-later"]}) == []


class Interrupted(Exception):
    pass


def interrupting(sink: Sink, after_batches: int) -> Sink:
    calls = {"n": 0}

    def write(records: Sequence[dict[str, Any]]) -> Sequence[Outcome]:
        calls["n"] += 1
        if calls["n"] > after_batches:
            raise Interrupted
        return sink(records)

    return write


def test_resume_after_an_interruption_gives_the_same_final_state(
    service: ProfileService, db: Database, tmp_path: Path
) -> None:
    records: list[Any] = people(60)
    records[40] = {"upsert": {}, "ids": {"bad_type": "x"}}  # a reject after the interruption point
    records[5] = {"upsert": {}, "ids": {"bad_type": "y"}}  # and one before it
    path = write_ndjson(tmp_path / "people.ndjson", records)
    sink = cdp_sink(service, ORG, "EU", "test-import")
    with pytest.raises(Interrupted):
        run_import(service, path, sink=interrupting(sink, after_batches=3))
    saved = checkpoint.load(path)
    assert saved is not None and 0 < saved.line < 60
    summary = run_import(service, path, resume=True)
    assert summary.resumed_from_line == saved.line
    assert (summary.read, summary.rejected) == (60, 2)
    assert not checkpoint.checkpoint_path(path).exists()
    rejects = [json.loads(line) for line in checkpoint.rejects_path(path).read_text().splitlines()]
    assert [r["line"] for r in rejects] == [6, 41]
    resumed = snapshot(db)

    # The same file imported in one go into a fresh org gives the same profiles.
    other = make_org(db, 4321)
    fresh_sink = cdp_sink(service, other.org_id, "EU", "test-import")
    fresh = tmp_path / "again.ndjson"
    fresh.write_bytes(path.read_bytes())
    run_import(service, fresh, sink=fresh_sink)
    with db.read() as conn:
        conn.exec_driver_sql("DELETE FROM profile_ids WHERE org_id = 1234")
        conn.exec_driver_sql("DELETE FROM profiles WHERE org_id = 1234")
        conn.exec_driver_sql("UPDATE profile_ids SET org_id = 1234 WHERE org_id = 4321")
        conn.exec_driver_sql("UPDATE profiles SET org_id = 1234 WHERE org_id = 4321")
        conn.commit()
    assert snapshot(db) == resumed


def test_a_resumed_import_reports_the_rejects_of_the_whole_import_by_reason(
    service: ProfileService, tmp_path: Path
) -> None:
    # The summary's "rejected" counts the run before the interruption too; so must its reasons
    # (they add up to it) and the first reject shown for each.
    records: list[Any] = people(60)
    records[5] = {"upsert": {}, "ids": {"bad_type": "y"}}  # rejected before the interruption
    records[40] = {"upsert": {}, "ids": {"bad_type": "x"}}  # and after it
    records[50] = {"upsert": {"nope": {}}, "ids": {"email": "z@x.com"}}
    path = write_ndjson(tmp_path / "people.ndjson", records)
    with pytest.raises(Interrupted):
        run_import(service, path, sink=interrupting(cdp_sink(service, ORG, "EU", "t"), after_batches=3))
    summary = run_import(service, path, resume=True)
    assert summary.rejected == 3
    assert summary.reject_reasons == {"ids.bad_type": 2, "upsert.nope": 1}
    assert summary.reject_examples["ids.bad_type"].startswith("line 6: ")


def test_re_running_an_import_is_idempotent(service: ProfileService, db: Database, tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "people.ndjson", people(45))
    first = run_import(service, path)
    before = snapshot(db)
    again = run_import(service, path)
    assert snapshot(db) == before
    assert (first.created, again.created, again.updated) == (30, 0, 45)


def test_resume_refuses_a_changed_file(service: ProfileService, tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "people.ndjson", people(20))
    with pytest.raises(Interrupted):
        run_import(service, path, sink=interrupting(cdp_sink(service, ORG, "EU", "t"), after_batches=1))
    write_ndjson(path, people(21))
    with pytest.raises(checkpoint.CheckpointMismatch):
        run_import(service, path, resume=True)


def test_csv_with_a_column_mapping(tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text(
        "email,first_name,ids.AdId,note\n"
        'ann@x.com,Ann,ad-1,"two\nlines"\n'
        "\n"
        " ANN@x.com ,,ad-2,\n"
        'bob@x.com,"Bob, Jr.",,x\n'
    )
    # As `import cdp` reads a CSV: every row has an upsert, empty when its upsert cells are.
    mapping = ColumnMapping.parse(
        ["email=ids.email", "first_name=upsert.profile.first_name"], objects=("upsert",)
    )
    records = list(read_csv(path, mapping))
    assert [r.data for r in records] == [
        {"ids": {"email": "ann@x.com", "AdId": "ad-1"}, "upsert": {"profile": {"first_name": "Ann"}}},
        {"upsert": {}, "ids": {"email": " ANN@x.com ", "AdId": "ad-2"}},
        {"ids": {"email": "bob@x.com"}, "upsert": {"profile": {"first_name": "Bob, Jr."}}},
    ]
    assert [r.line for r in records] == [2, 5, 6]
    # Resuming from a record's end offset reads exactly the records after it.
    rest = list(read_csv(path, mapping, records[0].end_offset, records[0].line + 1))
    assert [r.data for r in rest] == [r.data for r in records[1:]]


@pytest.mark.parametrize("workers", ["0", "2"])
def test_import_cdp_command_with_csv_mapping(
    database_url: str, tmp_path: Path, monkeypatch: Any, workers: str
) -> None:
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)
    db = Database(database_url)
    make_org(db, ORG)
    db.close()
    path = tmp_path / "people.csv"
    path.write_text("E-mail,Name,phone\nann@x.com,Ann,+4915112345678\nnot-an-email,Bad,\nann@x.com,Ann B,\n")
    args = [
        "import",
        "cdp",
        str(path),
        "--org-id",
        str(ORG),
        "--region",
        "EU",
        "--quiet",
        "--workers",
        workers,
        "--max-rejects",
        "1",
    ]
    maps = [
        "--map",
        "E-mail=ids.email",
        "--map",
        "Name=upsert.profile.first_name",
        "--map",
        "phone=ids.cellphone",
    ]
    result = CliRunner().invoke(main, [*args, *maps])
    assert result.exit_code == 0, result.output
    assert "3 records" in result.output and "1 created, 1 updated, 1 rejected" in result.output
    [reject] = [json.loads(x) for x in checkpoint.rejects_path(path).read_text().splitlines()]
    assert reject["line"] == 3 and "ids.email" in reject["error"]["errors"]
    bad_map = CliRunner().invoke(main, [*args, "--map", "missing=ids.email"])
    assert bad_map.exit_code != 0 and "missing" in bad_map.output


@pytest.mark.parametrize("bulk", [False, True], ids=["online", "bulk"])
def test_the_summary_counts_records_written_without_ids_over_a_profiles_limit(
    database_url: str, tmp_path: Path, monkeypatch: Any, bulk: bool
) -> None:
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)
    db = Database(database_url)
    make_org(db, ORG)
    db.close()
    # A profile holds one crm_id: the second record's crm_id B is not attached to f1's profile.
    path = write_ndjson(
        tmp_path / "limits.ndjson",
        [
            {"ids": {"fpuid": "f1", "crm_id": "A"}, "upsert": {}},
            {"ids": {"fpuid": "f1", "crm_id": "B"}, "upsert": {}},
            {"ids": {"fpuid": "f2", "crm_id": "C"}, "upsert": {}},
        ],
    )
    args = ["import", "cdp", str(path), "--org-id", str(ORG), "--region", "EU", "--quiet", "--workers", "0"]
    result = CliRunner().invoke(main, [*args, *(["--bulk"] if bulk else [])])
    assert result.exit_code == 0, result.output
    said = "2 created, 1 updated, 0 rejected, 1 written without ids over a profile's limit"
    assert said in result.output, result.output


def test_text_that_bulk_loading_must_escape_round_trips(service: ProfileService, tmp_path: Path) -> None:
    # New rows reach PostgreSQL by COPY, whose text format gives tabs, newlines and backslashes
    # meanings of their own; ids and attributes must come back exactly as written.
    tricky = 'tab\there\nnew line \\N back\\slash \\\\ \r quote" ümlaut 😀 \\t'
    records = [
        {"ids": {"crm_id": f"c\\0\t{tricky}", "fpuid": "\\N"}, "upsert": {"profile": {"note": tricky}}},
        {"ids": {"crm_id": "plain"}, "upsert": {"profile": {"note": "\\N"}}},
    ]
    path = write_ndjson(tmp_path / "tricky.ndjson", records)
    summary = run_import(service, path, workers=0)
    assert summary.counts() == {
        "read": 2,
        "created": 2,
        "updated": 0,
        "rejected": 0,
        "suppressed": 0,
        "over_id_limit": 0,
    }
    [found] = service.search(ORG, None, {"crm_id": [f"c\\0\t{tricky}"]})
    assert found["profile"]["note"] == tricky
    assert found["ids"]["fpuid"][0]["fpuid"] == "\\N"
    [plain] = service.search(ORG, None, {"crm_id": ["plain"]})
    assert plain["profile"]["note"] == "\\N"


def test_writes_prepared_for_another_org_are_prepared_again(service: ProfileService, db: Database) -> None:
    # Strategy versions are per org: the same number under another org's strategy proves nothing.
    make_org(db, 5678)
    db.write(lambda c: block_value(c, 5678, "ad-shared"))
    db.write(lambda c: block_value(c, ORG, "something-else"))
    with db.read() as conn:
        mine, other = service.strategies.get(conn, ORG), service.strategies.get(conn, 5678)
    assert mine.version == other.version
    records = [{"upsert": {}, "ids": {"email": "x@x.com", "AdId": "ad-shared"}}]
    wrong = prepare_records(other, 5678, "EU", "test-import", records)
    writes = [profile_write(r, ORG, "EU") for r in records]
    assert wrong.org_id == 5678
    [outcome] = service.write_batch(writes, "test", wrong)
    assert not isinstance(outcome, Exception)
    [profile] = service.search(ORG, None, {"AdId": ["ad-shared"]})  # not blocked in this org
    assert profile["ucid"] == outcome.profile["ucid"]


def test_prepared_batches_survive_the_trip_from_a_worker_process(
    service: ProfileService, db: Database
) -> None:
    # Worker processes send prepared batches back pickled, in a compact form of their own.
    db.write(lambda c: block_value(c, ORG, "blocked-ad"))
    with db.read() as conn:
        strategy = service.strategies.get(conn, ORG)
    records: list[dict[str, Any]] = [
        {
            "upsert": {},
            "ids": {"email": " A@Example.com", "cellphone": "+4915000000001", "AdId": "blocked-ad"},
        },
        {"ids": {}, "ucid": "0190b4c4-0000-7000-8000-000000000001", "upsert": {"consent": None}},
        {"upsert": {}, "ids": {"email": "not an email"}},
        {"ids": {"AdId": "ad-1"}, "upsert": {"profile": {"name": "Ann", "tags": ["a", "b"]}}},
    ]
    prepared = prepare_records(strategy, ORG, "EU", "test-import", records)
    back = pickle.loads(pickle.dumps(prepared))
    assert (back.org_id, back.strategy_version) == (prepared.org_id, prepared.strategy_version)
    writes = [i for i in prepared.items if not isinstance(i, Exception)]
    assert [i for i in back.items if not isinstance(i, Exception)] == writes and len(writes) == 3
    first = back.items[0]
    assert isinstance(first, PreparedWrite)
    assert [n.code for n in first.notices] == ["blocked"]
    assert all(isinstance(i, Identifier) for i in first.ids) and len(first.ids) == 8
    assert isinstance(back.items[2], BadRequest) and back.items[2].field == "ids.email"


def test_the_collector_is_tuned_during_an_import_and_restored_after(tmp_path: Path) -> None:
    # Full collections were a fifth of an import's CPU (profilehub.collector); a program that
    # runs an import in-process gets its own settings back afterwards.
    before, frozen_before = gc.get_threshold(), gc.get_freeze_count()
    seen: list[tuple[tuple[int, int, int], int]] = []

    def sink(records: Sequence[dict[str, Any]]) -> Sequence[Outcome]:
        seen.append((gc.get_threshold(), gc.get_freeze_count()))
        return [_Written() for _ in records]

    path = write_ndjson(tmp_path / "people.ndjson", people(5))
    Importer(path, lambda offset, line: read_ndjson(path, offset, line), sink, workers=0).run()
    assert seen and all(threshold == collector.THRESHOLD and frozen > 0 for threshold, frozen in seen)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0 or frozen_before > 0


class _Written:
    created = True


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_a_line_over_the_body_limit_is_refused_unread_and_the_next_ones_read_from_their_place(
    tmp_path: Path, newline: bytes
) -> None:
    """The rest of a line over the limit is skipped, not held (a 2 GB array on one line); the
    records after it keep their line numbers and offsets, which the checkpoint resumes from."""
    ok = json.dumps({"ids": {"email": "a@x.com"}, "upsert": {}}).encode()
    big = b'{"ids": {"email": "big@x.com"}, "upsert": {"n": "' + b"x" * 3_000_000 + b'"}}'
    path = tmp_path / "profiles.ndjson"
    path.write_bytes(ok + newline + big + newline + newline + ok + newline + big)  # no newline at the end
    records = list(read_ndjson(path, max_bytes=1024))
    assert [(r.line, r.data is None) for r in records] == [(1, False), (2, True), (4, False), (5, True)]
    assert records[1].error == (
        f"line 2: the record is {len(big):,} bytes, more than the 1,024 the API takes in a request "
        "body (PROFILEHUB_MAX_BODY_BYTES; a larger body is answered 413)"
    )
    assert big.decode().startswith(records[1].raw) and 1000 < len(records[1].raw) <= 2000  # its start
    assert records[3].end_offset == path.stat().st_size
    # Resumed after the line over the limit: the next record, as read from the top.
    assert next(read_ndjson(path, records[1].end_offset, records[1].line, 1024)) == records[2]
    # A line of exactly the limit is a record.
    assert [r.data is not None for r in read_ndjson(path, max_bytes=len(big))] == [True] * 4
