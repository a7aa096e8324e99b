"""``profilehub import cdp|people --at MS``: every record of the file written at one time, so two
imports of one file write the same profiles, change log, journal and events (ucids aside)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.bulk_equivalence import Watermark, compare, snapshot
from click.testing import CliRunner

from profilehub.cli import main
from profilehub.ingest import checkpoint
from profilehub.store.database import Database
from tests.conftest import make_org

AT = 1_600_000_000_123  # 2020-09-13: in the past, before anything else in the store

# Merges whose category clashes tie at AT (the master's side wins), a chain, a null attribute and
# a cleared category, an over-limit ad id, a record naming an unknown ucid, a refused merge.
RECORDS: list[dict[str, Any]] = [
    {"ids": {"email": "a@x.com"}, "upsert": {"profile": {"name": "A", "city": "Oslo"}}},
    {"ids": {"cellphone": "+4915000000001"}, "upsert": {"profile": {"name": "B", "age": 3}}},
    {"ids": {"AdId": "dev-1"}, "upsert": {"consent": {"ads": "yes"}}},
    {"ids": {"email": "a@x.com", "cellphone": "+4915000000001"}, "upsert": {"profile": {"city": None}}},
    {"ids": {"cellphone": "+4915000000001", "AdId": "dev-1"}, "upsert": {"consent": None}},
    *({"ids": {"email": "a@x.com", "AdId": f"dev-{k}"}, "upsert": {}} for k in range(2, 8)),
    {"ids": {"email": "b@x.com", "AdId": "dev-7"}, "upsert": {"mkt_preferences": {"sms": "no"}}},
    {"ucid": "3f0e5c1a-1111-4222-8333-444455556666", "ids": {"email": "d@x.com"}, "upsert": {}},
]


def _import(kind: str, path: Path, org_id: int, *extra: str) -> None:
    args = ["import", kind, str(path), "--org-id", str(org_id), "--quiet", "--workers", "0", *extra]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output


def test_two_cdp_imports_at_one_time_write_the_same(
    database_url: str, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)
    db = Database(database_url)
    make_org(db, 1)
    make_org(db, 2)
    path = tmp_path / "profiles.ndjson"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    # The store's clock is past AT: the imports' changes still come after what the feed held.
    marks = {org: Watermark.read(db, org) for org in (1, 2)}
    for org in (1, 2):
        _import("cdp", path, org, "--region", "EU", "--at", str(AT), "--batch-size", "3")
    one, two = (snapshot(db, org, marks[org]) for org in (1, 2))
    db.close()
    assert compare(one, two) == []
    counts = one.counts()
    assert counts["changes"] == counts["journal"] == counts["events"] == len(RECORDS)
    times = set()
    for p in one.sections["profiles"]:
        times |= {p["created_ts"], p["updated_ts"]}
        times |= {int(c["_ts"]) for c in p["data"].values() if "_ts" in c}
    times |= {row[4] for row in one.sections["ids"]}
    times |= {r["ts"] for name in ("changes", "journal", "events") for r in one.sections[name]}
    assert times == {AT}
    # Tied at AT, the merge kept the master's (first-created) side, and file order set the master.
    [linked] = one.sections["linkedUcid"]
    [master] = [p for p in one.sections["profiles"] if p["ucid"] == linked["ucid"]]
    assert len(linked["linkedUcid"]) == 2  # the phone's profile and the device's
    assert master["data"]["profile"] == {"name": "A", "age": 3, "_ts": str(AT)}
    assert master["data"]["consent"] == {"_ts": str(AT)}  # cleared by the fifth record


def test_two_people_imports_at_one_time_write_the_same(
    database_url: str, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)
    db = Database(database_url)
    make_org(db, 1)
    make_org(db, 2)
    path = tmp_path / "people.csv"
    path.write_text("Email,First,Phone\nann@x.com,Ann,+4915000000001\nbob@x.com,Bob,\nANN@x.com,Annie,\n")
    maps = ["--map", "Email=emails", "--map", "First=firstName", "--map", "Phone=phoneNumber"]
    marks = {org: Watermark.read(db, org) for org in (1, 2)}
    for org in (1, 2):
        _import("people", path, org, "--matching-attribute", "email", "--at", str(AT), *maps)
    one, two = (snapshot(db, org, marks[org]) for org in (1, 2))
    db.close()
    assert compare(one, two) == []
    assert len(one.sections["people"]) == 2 and len(one.sections["profiles"]) == 2
    assert {(p["created_ts"], p["updated_ts"]) for p in one.sections["people"]} == {(AT, AT)}
    assert {r["ts"] for name in ("changes", "events", "journal") for r in one.sections[name]} == {AT}


def test_at_is_epoch_milliseconds(tmp_path: Path) -> None:
    path = tmp_path / "p.ndjson"
    path.write_text("{}\n")
    args = ["import", "cdp", str(path), "--org-id", "1", "--region", "EU", "--at", "-5"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "--at" in result.output


def test_resume_keeps_the_interrupted_runs_at(database_url: str, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)
    db = Database(database_url)
    make_org(db, 1)
    path = tmp_path / "profiles.ndjson"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS[:4]))
    # A run --at AT stopped after its first line (as Ctrl-C leaves it: checkpointed, line 1 written).
    first = tmp_path / "first.ndjson"
    first.write_text(path.read_text().splitlines()[0] + "\n")
    _import("cdp", first, 1, "--region", "EU", "--at", str(AT))
    size, mtime = checkpoint.fingerprint(path)
    offset = len(path.read_text().splitlines()[0]) + 1
    checkpoint.save(
        path, checkpoint.Checkpoint(size, mtime, offset, 1, counts={"read": 1, "created": 1}, at=AT)
    )
    args = [
        "import",
        "cdp",
        str(path),
        "--org-id",
        "1",
        "--region",
        "EU",
        "--quiet",
        "--workers",
        "0",
        "--resume",
    ]
    for other in ([], ["--at", str(AT + 1)]):
        refused = CliRunner().invoke(main, [*args, *other])
        assert refused.exit_code == 1 and f"--at {AT}" in refused.output, refused.output
    _import("cdp", path, 1, "--region", "EU", "--at", str(AT), "--resume")
    with db.read() as conn:
        times = {r[0] for r in conn.exec_driver_sql("SELECT updated_ts FROM profiles WHERE org_id = 1")}
    db.close()
    assert times == {AT}
