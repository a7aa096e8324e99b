"""One reading of a CDP write body wherever it is sent (issue 11): the same bad body is refused with
the same status and field by ``POST /cdp/v1/users``, by ``_explain``, by ``_bulk`` (at its index)
and by ``profilehub import cdp`` (as a reject whose reason is that field)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from profilehub.cli import main
from profilehub.ingest import checkpoint
from tests.conftest import OrgFixture, names_field

OK: dict[str, Any] = {
    "orgId": 1234,
    "region": "EU",
    "ids": {"crm_id": "C-1"},
    "upsert": {"profile": {"a": 1}},
}


def _without(key: str) -> dict[str, Any]:
    return {k: v for k, v in OK.items() if k != key}


# (case, body, status, the field named: in `errors`, first in the message, the import's reason)
CASES: list[tuple[str, dict[str, Any], int, str]] = [
    ("upsert missing", _without("upsert"), 400, "upsert"),
    ("upsert null", {**OK, "upsert": None}, 400, "upsert"),
    ("upsert not an object", {**OK, "upsert": ["profile"]}, 400, "upsert"),
    ("upsert unknown category", {**OK, "upsert": {"shoes": {}}}, 400, "upsert.shoes"),
    ("upsert reserved attribute", {**OK, "upsert": {"profile": {"_ts": 1}}}, 400, "upsert.profile._ts"),
    ("orgId as text", {**OK, "orgId": "1234"}, 400, "orgId"),
    ("orgId of another org", {**OK, "orgId": 999}, 403, "orgId"),
    ("region not text", {**OK, "region": 5}, 400, "region"),
    ("region unknown", {**OK, "region": "MARS"}, 400, "region"),
    ("ids not an object", {**OK, "ids": ["crm_id"]}, 400, "ids"),
    ("ids unknown idType", {**OK, "ids": {"shoe_size": "42"}}, 400, "ids.shoe_size"),
    ("ids and ucid missing", _without("ids"), 400, "ids"),
    ("ucid not a UUID", {**OK, "ucid": "nope"}, 400, "ucid"),
    ("ucid a number", {**OK, "ucid": 5}, 400, "ucid"),
    ("unknown field", {**OK, "regions": ["EU"]}, 400, "regions"),
]


def test_a_bad_write_is_refused_alike_by_every_entry_point(
    client: TestClient, org: OrgFixture, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies = [body for _, body, _, _ in CASES]
    single = [client.post("/cdp/v1/users", json=body, headers=org.headers()) for body in bodies]
    explain = [client.post("/cdp/v1/users/_explain", json=body, headers=org.headers()) for body in bodies]
    bulk = client.post("/cdp/v1/users/_bulk", json=bodies, headers=org.headers())
    assert bulk.status_code == 200, bulk.text
    source = tmp_path / "writes.ndjson"
    source.write_text("".join(json.dumps(body) + "\n" for body in bodies))
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)
    imported = CliRunner().invoke(
        main,
        [
            "import",
            "cdp",
            str(source),
            "--org-id",
            "1234",
            "--region",
            "EU",
            "--max-rejects",
            "100",
            "--quiet",
        ],
    )
    assert imported.exit_code == 0, imported.output
    rejects = {
        r["line"]: r["error"]
        for r in map(json.loads, checkpoint.rejects_path(source).read_text().splitlines())
    }

    disagreements = []
    for n, (case, _, status, field) in enumerate(CASES):
        answers = {
            "single": single[n].json() if single[n].status_code == status else single[n].text,
            "explain": explain[n].json() if explain[n].status_code == status else explain[n].text,
            "bulk": bulk.json()[n].get("error") or bulk.json()[n],
            "import": rejects.get(n + 1, "written"),
        }
        for entry, answer in answers.items():
            if not (isinstance(answer, dict) and names_field(answer, status, field)):
                disagreements.append(f"{case} via {entry}: wanted {status} naming {field}, got {answer}")
    assert not disagreements, "\n".join(disagreements)
    # The import names the same field as the reason of each reject.
    summary = imported.output.replace("\n", " ")
    for field in {f for _, _, _, f in CASES}:
        assert f"first {field} reject:" in summary, (field, imported.output)
    assert len(rejects) == len(CASES)


def test_the_same_good_body_is_written_by_every_entry_point(
    client: TestClient, org: OrgFixture, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other side of the table: a body each entry point takes, with ``upsert: {}`` (ids only)."""
    bodies = [
        {**OK, "ids": {"crm_id": f"C-{n}"}, "upsert": upsert}
        for n, upsert in enumerate([{}, {"profile": {"a": 1}}, {"consent": None}])
    ]
    for body in bodies:
        r = client.post("/cdp/v1/users", json=body, headers=org.headers())
        assert r.status_code == 200, r.text
    bulk = client.post("/cdp/v1/users/_bulk", json=bodies, headers=org.headers())
    assert [item["status"] for item in bulk.json()] == [200, 200, 200], bulk.text
    source = tmp_path / "writes.ndjson"
    source.write_text("".join(json.dumps(body) + "\n" for body in bodies))
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)
    imported = CliRunner().invoke(main, ["import", "cdp", str(source), "--org-id", "1234", "--region", "EU"])
    assert imported.exit_code == 0 and "3 updated, 0 rejected" in imported.output, imported.output


def test_a_csv_row_without_upsert_cells_writes_its_ids(
    org: OrgFixture, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CSV cannot leave ``upsert`` out, so its rows carry one (empty when their cells are)."""
    source = tmp_path / "ids.csv"
    source.write_text("email,first_name\nann@x.com,Ann\nbob@x.com,\n")
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)
    imported = CliRunner().invoke(
        main,
        [
            *("import", "cdp", str(source), "--org-id", "1234", "--region", "EU"),
            *("--map", "email=ids.email", "--map", "first_name=upsert.profile.first_name"),
        ],
    )
    assert imported.exit_code == 0 and "2 created, 0 updated, 0 rejected" in imported.output, imported.output
