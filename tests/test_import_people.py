"""``profilehub import people``: CRM people from CSV and NDJSON, upserted by a matching attribute."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from profilehub.cli import main
from profilehub.crm.people import upsert_people_batch
from profilehub.ingest import checkpoint
from profilehub.store.database import Database
from tests.conftest import make_org

ORG = 1234


def test_import_people_csv_upserts_by_email(database_url: str, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)
    db = Database(database_url)
    make_org(db, ORG)
    db.close()
    path = tmp_path / "people.csv"
    path.write_text(
        "Email,First,Last\nann@x.com,Ann,Lee\nbob@x.com,Bob,\nANN@x.com,Annie,\nnot-an-email,Bad,\n"
    )
    args = ["import", "people", str(path), "--org-id", str(ORG), "--matching-attribute", "email", "--quiet"]
    args += ["--max-rejects", "1"]
    maps = ["--map", "Email=emails", "--map", "First=firstName", "--map", "Last=lastName"]
    result = CliRunner().invoke(main, [*args, *maps])
    assert result.exit_code == 0, result.output
    assert "4 records" in result.output and "2 created, 1 updated, 1 rejected" in result.output
    [reject] = [json.loads(x) for x in checkpoint.rejects_path(path).read_text().splitlines()]
    assert reject["line"] == 5 and reject["error"]["status"] in (400, 422)
    # Re-running changes nothing: the same people are matched again.
    again = CliRunner().invoke(main, [*args, *maps])
    assert "0 created, 3 updated, 1 rejected" in again.output, again.output
    db = Database(database_url)
    [ann] = upsert_people_batch(db, ORG, [{"emails": ["ann@x.com"], "firstName": "Annie"}], "email", "t")
    db.close()
    assert not isinstance(ann, Exception) and not ann.created
    assert ann.person["lastName"] == "Lee"


def test_import_people_ndjson(database_url: str, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)
    db = Database(database_url)
    make_org(db, ORG)
    db.close()
    path = tmp_path / "people.ndjson"
    path.write_text(
        json.dumps({"emails": ["c@x.com"], "firstName": "C"})
        + "\n"
        + json.dumps({"lastName": "NoFirst"})
        + "\n"
    )
    result = CliRunner().invoke(
        main,
        ["import", "people", str(path), "--org-id", str(ORG), "--matching-attribute", "email", "--quiet"],
    )
    assert result.exit_code == 1, result.output  # a record was rejected
    assert "more than --max-rejects 0" in result.output
    assert "1 created, 0 updated, 1 rejected" in result.output
