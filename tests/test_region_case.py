"""Region codes are case-insensitive on input everywhere, answers use the stored upper case (issue 17, item 9)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from profilehub.cli import main
from tests.conftest import OrgFixture


def test_the_api_takes_a_region_in_any_case_as_the_cli_does(client: TestClient, org: OrgFixture) -> None:
    headers = org.headers()
    body = {"orgId": org.org_id, "region": "eu", "upsert": {}, "ids": {"email": "ann@x.com"}}
    written = client.post("/cdp/v1/users", headers=headers, json=body)
    assert written.status_code == 200, written.text
    [profile] = written.json()
    assert profile["region"] == "EU"
    # The same person, named with another spelling of the region, is the same profile.
    again = client.post("/cdp/v1/users", headers=headers, json={**body, "region": " Eu "})
    assert again.status_code == 200 and again.json()[0]["ucid"] == profile["ucid"]
    bulk = client.post("/cdp/v1/users/_bulk", headers=headers, json=[{**body, "region": "uk"}])
    assert bulk.status_code == 200, bulk.text
    found = client.post(
        "/cdp/v1/users/_search",
        headers=headers,
        json={"orgId": org.org_id, "regions": ["eu"], "search": {"email": ["ann@x.com"]}},
    )
    assert found.status_code == 200 and [p["region"] for p in found.json()] == ["EU"]
    deleted = client.post(
        "/cdp/v1/users/_delete",
        headers=headers,
        json={"orgId": org.org_id, "region": "eu", "ids": {"email": ["ann@x.com"]}},
    )
    assert deleted.status_code == 200 and deleted.json()["deletedProfiles"] == 1
    unknown = client.post("/cdp/v1/users", headers=headers, json={**body, "region": "us"})
    assert unknown.status_code == 400 and "region" in unknown.json()["message"]


def test_an_import_record_may_name_its_region_in_any_case(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)
    runner = CliRunner()
    assert (
        runner.invoke(main, ["org", "create", "--org-id", "5", "--name", "A", "--region", "eu"]).exit_code
        == 0
    )
    path = tmp_path / "profiles.ndjson"
    path.write_text(json.dumps({"region": "eu", "upsert": {}, "ids": {"email": "a@x.com"}}) + "\n")
    result = runner.invoke(main, ["import", "cdp", str(path), "--org-id", "5", "--region", "Eu", "--quiet"])
    assert result.exit_code == 0 and "1 created" in result.output, result.output
