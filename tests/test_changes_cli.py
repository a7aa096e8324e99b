"""``profilehub changes``: pages that say there is more, options checked, strategy changes logged,
CRM people followed (issue 17, item 5)."""

from __future__ import annotations

import hashlib
import json
import shlex
from typing import Any

import pytest
from click.testing import CliRunner, Result

from profilehub.cli import main
from profilehub.crm.people import upsert_people_batch
from profilehub.store.database import Database
from tests.conftest import migrated_url

ORG = "1234"


@pytest.fixture
def cli(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", migrated_url(database_url))

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, list(args))

    assert invoke("org", "create", "--org-id", ORG, "--name", "Acme", "--region", "EU").exit_code == 0
    return invoke


def _entries(result: Result) -> list[dict[str, Any]]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_strategy_changes_are_in_the_change_log(cli: Any) -> None:
    assert cli("idtype", "set", "--org-id", ORG, "--id-type", "loyalty_id", "--limit", "2").exit_code == 0
    assert cli("idtype", "set", "--org-id", ORG, "--id-type", "loyalty_id", "--priority", "3").exit_code == 0
    assert cli("block", "add", "--org-id", ORG, "--value", "Test@Example.com").exit_code == 0
    assert cli("block", "remove", "--org-id", ORG, "--value", "test@example.com").exit_code == 0
    entries = _entries(cli("changes", "--org-id", ORG))
    seen = [(e["entity"], e["entityId"], e["action"]) for e in entries]
    assert seen == [
        ("org", ORG, "create"),
        ("id_type", "loyalty_id", "create"),
        ("id_type", "loyalty_id", "update"),
        ("blocked_value", "*", "add"),
        ("blocked_value", "*", "remove"),
    ]
    assert entries[2]["detail"]["priority"] == 3 and entries[2]["detail"]["limit"] == 2
    # No id values in the log (it outlives erasures): the blocked value's digest only.
    digest = hashlib.sha256(b"test@example.com").hexdigest()
    assert entries[3]["detail"] == {"valueSha256": digest} and entries[3]["actor"] == "cli"
    assert "test@example.com" not in json.dumps(entries)


def test_a_page_says_when_more_follow_and_how_to_get_them(cli: Any) -> None:
    for n in range(4):
        assert cli("block", "add", "--org-id", ORG, "--value", f"v{n}").exit_code == 0
    first = cli("changes", "--org-id", ORG, "--limit", "3")
    assert len(_entries(first)) == 3
    assert "more entries follow" in first.stderr
    command = shlex.split(first.stderr.split("next page: ", 1)[1])
    assert command[:2] == ["profilehub", "changes"]
    rest = cli(*command[1:])
    assert [e["entity"] for e in _entries(rest)] == ["blocked_value", "blocked_value"]
    assert rest.stderr == ""
    everything = _entries(cli("changes", "--org-id", ORG))
    assert [e["changeId"] for e in _entries(first) + _entries(rest)] == [e["changeId"] for e in everything]


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("--after", "not-a-change-id"), "--after"),
        (("--ucid", "nope"), "--ucid"),
        (("--person", "12"), "--person"),
        (("--limit", "0"), "--limit"),
        (("--limit", "-5"), "--limit"),
    ],
)
def test_bad_values_are_errors_naming_the_option(cli: Any, args: tuple[str, ...], option: str) -> None:
    result = cli("changes", "--org-id", ORG, *args)
    assert result.exit_code == 2, result.output
    assert option in result.output and result.stdout == ""


def test_a_crm_person_can_be_followed(cli: Any, database_url: str) -> None:
    db = Database(database_url)
    try:
        [ann] = upsert_people_batch(
            db, int(ORG), [{"emails": ["ann@x.com"], "firstName": "Ann"}], "email", "t"
        )
        [bob] = upsert_people_batch(
            db, int(ORG), [{"emails": ["bob@x.com"], "firstName": "Bob"}], "email", "t"
        )
        upsert_people_batch(db, int(ORG), [{"emails": ["ann@x.com"], "lastName": "Lee"}], "email", "t")
    finally:
        db.close()
    assert not isinstance(ann, Exception) and not isinstance(bob, Exception)
    person = str(ann.person["id"])
    entries = _entries(cli("changes", "--org-id", ORG, "--person", person.upper()))
    assert [(e["entityId"], e["action"]) for e in entries] == [(person, "create"), (person, "update")]
    both = cli("changes", "--org-id", ORG, "--person", person, "--ucid", person)
    assert both.exit_code == 2 and "not both" in both.output
