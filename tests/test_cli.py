"""The `profilehub` command: org, key, token, strategy and block administration."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import uvicorn
from click.testing import CliRunner
from fastapi.testclient import TestClient

from profilehub.app import create_app
from profilehub.cli import main
from profilehub.config import Settings
from tests.serve_process import free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def run(database_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True) -> str:
        result = runner.invoke(main, list(args))
        if ok:
            assert result.exit_code == 0, result.output
        else:
            assert result.exit_code != 0, result.output
        return str(result.output)

    return invoke


def test_org_and_apikey_from_the_cli_work_over_http(run, database_url: str) -> None:  # type: ignore[no-untyped-def]
    assert "created org 1234" in run(
        "org", "create", "--org-id", "1234", "--name", "Acme", "--region", "EU", "--region", "uk"
    )
    assert "already exists" in run(
        "org", "create", "--org-id", "1234", "--name", "Acme", "--region", "EU", ok=False
    )
    assert "EU, UK" in run("org", "list")
    key = (
        run("apikey", "create", "--org-id", "1234", "--scopes", "profile.read,profile.write")
        .strip()
        .splitlines()[-1]
    )
    assert key.startswith("phk_1234_")
    token = run("token", "create", "--org-id", "1234", "--scopes", "crm:read").strip().splitlines()[-1]
    assert token.startswith("pht_1234_")
    app = create_app(Settings(database_url=database_url))
    with TestClient(app) as client:
        r = client.post(
            "/cdp/v1/users",
            headers={"apikey": key, "scopes": "profile.write"},
            json={"orgId": 1234, "region": "UK", "upsert": {}, "ids": {"crm_id": "1"}},
        )
        assert r.status_code == 200
        r = client.post(
            "/cdp/v1/users",
            headers={"apikey": token, "scopes": "profile.write"},
            json={"orgId": 1234, "region": "UK", "upsert": {}, "ids": {"crm_id": "1"}},
        )
        assert r.status_code == 401
    app.state.db.close()
    prefix = run("apikey", "list", "--org-id", "1234").split("phk_1234_")[1][:6]
    assert "revoked" in run("apikey", "revoke", "--org-id", "1234", "--prefix", f"phk_1234_{prefix}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("apikey", "create", "--org-id", "1234", "--scopes", "crm:read"), "unknown scope"),
        (("token", "create", "--org-id", "1234", "--scopes", "profile.read"), "unknown scope"),
        (("apikey", "create", "--org-id", "999", "--scopes", "profile.read"), "unknown org 999"),
        (("org", "create", "--org-id", "5", "--name", "X", "--region", "E U"), "region"),
        (("idtype", "set", "--org-id", "1234", "--id-type", "x", "--priority", "0"), "priority"),
        (("block", "add", "--org-id", "1234", "--value", "x", "--id-type", "nope"), "unknown idType"),
        (("block", "remove", "--org-id", "1234", "--value", "never-blocked"), "was not blocked"),
    ],
)
def test_cli_errors_are_clear(run, args: tuple[str, ...], message: str) -> None:  # type: ignore[no-untyped-def]
    run("org", "create", "--org-id", "1234", "--name", "Acme", "--region", "EU")
    assert message in run(*args, ok=False)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ("idtype", "set", "--org-id", "1234", "--id-type", "x", "--limit", "0"),
            "Error: --limit: must be 1 or more",
        ),
        (
            ("idtype", "set", "--org-id", "1234", "--id-type", "x", "--priority", "0"),
            "Error: --priority: must be 1 or more (1 is the highest)",
        ),
        (
            ("idtype", "set", "--org-id", "1234", "--id-type", "bad type"),
            "Error: --id-type: 'bad type': a letter, then up to 99 letters, digits, '_', '.' or '-'",
        ),
        (
            ("block", "add", "--org-id", "1234", "--value", "x", "--id-type", "nope"),
            "Error: --id-type: unknown idType 'nope'",
        ),
        (
            ("org", "create", "--org-id", "5", "--name", " ", "--region", "EU"),
            "Error: --name: must not be empty",
        ),
    ],
)
def test_cli_errors_name_the_option_as_typed_once(run, args: tuple[str, ...], line: str) -> None:  # type: ignore[no-untyped-def]
    run("org", "create", "--org-id", "1234", "--name", "Acme", "--region", "EU")
    out = run(*args, ok=False)
    assert out.splitlines()[0].startswith(line), out


def test_identity_strategy_from_the_cli(run) -> None:  # type: ignore[no-untyped-def]
    run("org", "create", "--org-id", "1234", "--name", "Acme", "--region", "EU")
    out = run(
        "idtype",
        "set",
        "--org-id",
        "1234",
        "--id-type",
        "icoms_account_uid",
        "--class",
        "primary",
        "--priority",
        "7",
        "--limit",
        "1",
    )
    assert "icoms_account_uid: namespace icoms_account_uid, primary, priority 7, limit 1" in out
    run("idtype", "set", "--org-id", "1234", "--id-type", "AdId", "--limit", "3", "--class", "secondary")
    listing = run("idtype", "list", "--org-id", "1234")
    assert "icoms_account_uid" in listing and "AdId" in listing
    run("block", "add", "--org-id", "1234", "--value", "Test@Test.com")
    assert "test@test.com" in run("block", "list", "--org-id", "1234")
    run("block", "remove", "--org-id", "1234", "--value", "test@test.com")
    assert "test@test.com" not in run("block", "list", "--org-id", "1234")


def _commands(group: click.Group, prefix: str = "profilehub") -> list[str]:
    out = []
    for name, cmd in group.commands.items():
        full = f"{prefix} {name}"
        out += _commands(cmd, full) if isinstance(cmd, click.Group) else [full]
    return out


def test_every_cli_command_has_help_and_is_documented() -> None:
    docs = (ROOT / "README.md").read_text() + "".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    runner = CliRunner()
    for command in _commands(main):
        result = runner.invoke(main, [*command.split()[1:], "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, command
        assert command in docs, f"{command} is not in README.md or docs/"


def test_an_unreachable_database_is_a_clear_cli_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    result = CliRunner().invoke(main, ["org", "list"])
    assert result.exit_code == 1
    assert "PROFILEHUB_DATABASE_URL: cannot open the database" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("org", "create", "--org-id", "9223372036854775808", "--name", "X", "--region", "EU"), "--org-id"),
        (("apikey", "create", "--org-id", "99999999999999999999", "--scopes", "profile.read"), "--org-id"),
        (("changes", "--org-id", "0"), "--org-id"),
        (("serve", "--port", "99999"), "--port"),
        (("idtype", "set", "--org-id", "1234", "--id-type", "ucid"), "reserved"),
        (("idtype", "set", "--org-id", "1234", "--id-type", "linkedUcid"), "reserved"),
        (("idtype", "set", "--org-id", "1234", "--id-type", "bad type"), "--id-type"),
        (("idtype", "set", "--org-id", "1234", "--id-type", "x", "--namespace", "linkedUcid"), "reserved"),
    ],
)
def test_cli_refuses_out_of_range_and_reserved_values(run, args: tuple[str, ...], message: str) -> None:  # type: ignore[no-untyped-def]
    run("org", "create", "--org-id", "1234", "--name", "Acme", "--region", "EU")
    out = run(*args, ok=False)
    assert message in out and "Traceback" not in out


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql+psycopg://ops:s3cret-pw@db.example:54x2/hub", "its port is not a number"),
        ("postgres://ops:s3cret-pw@[::1/hub", "its port is not a number"),
        ("sqlite:profilehub.db", "cannot be parsed"),
        ("sqlite://profilehub.db", "three slashes"),
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        # info said "none yet (created on first use)", every other command "unable to open database file"
        ("sqlite:////nonexistent-folder-5521/x.db", "the folder '/nonexistent-folder-5521' does not exist"),
    ],
)
def test_a_database_url_the_engine_cannot_use_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, url: str, reason: str
) -> None:
    """These were tracebacks (a URL parser's ValueError, the SQLite dialect's ArgumentError, an
    in-memory database's TypeError), and an in-memory database would have kept nothing."""
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", url)
    for command in (["info"], ["org", "list"], ["db", "upgrade"], ["serve", "--port", "1"]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
        assert result.output.startswith("Error: PROFILEHUB_DATABASE_URL: "), result.output
        assert reason in result.output and "s3cret-pw" not in result.output, result.output


@pytest.mark.parametrize(
    "name", ["PROFILEHUB_DB_CONNECT_TIMEOUT_SECONDS", "PROFILEHUB_DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS"]
)
def test_a_timeout_postgresql_cannot_take_is_refused_naming_its_variable(
    run, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """Its milliseconds overflowed libpq's or the server's 32-bit setting, and the refusal blamed
    PROFILEHUB_DATABASE_URL ("cannot open the database: invalid integer value ...")."""
    monkeypatch.setenv(name, "3000000")
    out = run("org", "list", ok=False)
    assert out == f"Error: {name}: must be at most 2147483, got 3000000\n"
    monkeypatch.setenv(name, "2147483")
    run("org", "list")


def test_info_about_a_file_that_is_not_a_database_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was sqlite3's DatabaseError as a traceback; every other command said it in one line."""
    not_a_database = tmp_path / "notes.txt"
    not_a_database.write_text("these are not the tables you are looking for\n" * 100)
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", f"sqlite:///{not_a_database}")
    for command in (["info"], ["org", "list"]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
        assert "Error: PROFILEHUB_DATABASE_URL: cannot open the database: file is not a database" in (
            result.output
        )


@pytest.mark.parametrize("url", ["redis://:s3cret-pw@redis.example:63x9/0", "redis://[::1/0"])
def test_a_redis_url_that_cannot_be_parsed_stops_serve_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str
) -> None:
    """It was taken at start-up, and every request of a limited org then went unlimited, with a
    warning in the log every 10 s."""
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", f"sqlite:///{tmp_path / 'never.db'}")
    monkeypatch.setenv("PROFILEHUB_REDIS_URL", url)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)  # were it not refused: no server
    result = CliRunner().invoke(main, ["serve", "--port", str(free_port())])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert result.output.startswith("Error: PROFILEHUB_REDIS_URL: not a Redis URL (")
    assert "s3cret-pw" not in result.output and not (tmp_path / "never.db").exists()
