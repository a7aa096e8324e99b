"""One reading of a CRM person body wherever it is sent (issue 11): the same bad body is refused with
the same status and field by ``PUT /v2/crm/people``, by ``PUT /v2/crm/people/_bulk`` (at its
index) and by ``profilehub import people`` (as a reject whose reason is that field)."""

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


def _person(n: int, **fields: Any) -> dict[str, Any]:
    return {"firstName": f"P{n}", "emails": [f"p{n}@acme.com"], **fields}


# (case, body, status, the field named: in `errors`, first in the message, the import's reason).
# Shape errors (a field of the wrong JSON type) are 422, the core's rules 400, as docs/crm.md says.
CASES: list[tuple[str, dict[str, Any], int, str]] = [
    ("firstName a number", _person(1, firstName=5), 422, "firstName"),
    ("emails as text", _person(2, emails="p2@acme.com"), 422, "emails"),
    ("an email a number", _person(3, emails=[5]), 422, "emails.0"),
    ("unknown social", _person(4, socials={"myspace": "x"}), 422, "socials.myspace"),
    ("customAttributes not an object", _person(5, customAttributes=5), 422, "customAttributes"),
    ("phoneNumber a number", _person(6, phoneNumber=12345), 422, "phoneNumber"),
    ("unknown field", _person(7, shoeSize=42), 400, "shoeSize"),
    ("no name", {"emails": ["p8@acme.com"]}, 400, "firstName"),
    ("bad email", _person(9, emails=["not an address"]), 400, "emails.0"),
    ("companyId not an id", _person(10, companyId="nope"), 400, "companyId"),
]


def test_a_bad_person_is_refused_alike_by_every_entry_point(
    client: TestClient, org: OrgFixture, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies = [body for _, body, _, _ in CASES]
    put = "/v2/crm/people?matchingAttribute=email"
    single = [client.put(put, json=body, headers=org.bearer) for body in bodies]
    bulk = client.put(
        "/v2/crm/people/_bulk?matchingAttribute=email", json={"people": bodies}, headers=org.bearer
    )
    assert bulk.status_code == 200, bulk.text
    source = tmp_path / "people.ndjson"
    source.write_text("".join(json.dumps(body) + "\n" for body in bodies))
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)
    imported = CliRunner().invoke(
        main,
        [
            *("import", "people", str(source), "--org-id", str(org.org_id)),
            *("--matching-attribute", "email", "--max-rejects", "100", "--quiet"),
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
            "single": single[n].json(),
            "bulk": bulk.json()["results"][n],
            "import": rejects.get(n + 1, "written"),
        }
        for entry, answer in answers.items():
            if not (isinstance(answer, dict) and names_field(answer, status, field)):
                disagreements.append(f"{case} via {entry}: wanted {status} naming {field}, got {answer}")
    assert not disagreements, "\n".join(disagreements)
    assert len(rejects) == len(CASES)
    assert client.get("/v2/crm/people", headers=org.bearer).json()["pagination"]["total"] == 0


def test_a_csv_column_of_emails_holds_one_address(
    client: TestClient, org: OrgFixture, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CSV cell is text, so a column mapped to ``emails`` is read as a list of that one address;
    an NDJSON record must send the array, as the endpoint wants."""
    source = tmp_path / "people.csv"
    source.write_text("Email,First\nann@acme.com,Ann\n")
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)
    imported = CliRunner().invoke(
        main,
        [
            *("import", "people", str(source), "--org-id", str(org.org_id), "--matching-attribute", "email"),
            *("--map", "Email=emails", "--map", "First=firstName"),
        ],
    )
    assert imported.exit_code == 0 and "1 created" in imported.output, imported.output
    [ann] = client.get("/v2/crm/people", headers=org.bearer).json()["collection"]
    assert ann["emails"] == ["ann@acme.com"] and ann["firstName"] == "Ann"
