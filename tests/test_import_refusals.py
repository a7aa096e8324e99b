"""What a new user trips over in the CLI and the importer: an unknown org or region, a file whose
every record is rejected, a bad ``--map``, a broken CSV quote (issue 17, items 1, 2 and 8)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from profilehub.cli import main
from profilehub.config import DEFAULT_MAX_BODY_BYTES
from profilehub.ingest import checkpoint
from profilehub.store.database import Database
from tests.conftest import make_org, migrated_url

ROOT = Path(__file__).resolve().parent.parent
ORG = 1234
Invoke = Callable[..., Result]


@pytest.fixture
def cli(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """``profilehub`` on a database holding org 1234 (regions EU and UK)."""
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)
    db = Database(migrated_url(database_url))
    make_org(db, ORG)
    db.close()

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, list(args))

    return invoke


def _org_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            out += _org_commands(command, (*prefix, name))
        elif any(isinstance(p, click.Option) and "--org-id" in p.opts for p in command.params):
            out.append((*prefix, name))
    return out


def test_every_command_about_an_org_refuses_an_unknown_one_before_reading_its_file(
    cli: Invoke, tmp_path: Path
) -> None:
    people = tmp_path / "people.csv"
    people.write_text("Email\n" + "".join(f"p{n}@x.com\n" for n in range(300)))
    profiles = tmp_path / "profiles.ndjson"
    profiles.write_text(
        "".join(json.dumps({"upsert": {}, "ids": {"email": f"p{n}@x.com"}}) + "\n" for n in range(300))
    )
    extra = {
        ("org", "add-region"): ["--region", "US"],
        ("org", "keep-raw-ids"): ["on"],
        ("org", "rate-limit"): ["--per-second", "5"],
        ("org", "journal-retention"): ["--days", "30"],
        ("org", "consent-denials"): ["--value", "no"],
        ("org", "link-people"): [],
        ("webhook", "create"): ["--url", "https://hooks.example.com/x"],
        ("webhook", "list"): [],
        ("apikey", "create"): ["--scopes", "profile.read"],
        ("apikey", "list"): [],
        ("apikey", "revoke"): ["--prefix", "phk_9999_abcdef"],
        ("token", "create"): ["--scopes", "crm:read"],
        ("token", "list"): [],
        ("token", "revoke"): ["--prefix", "pht_9999_abcdef"],
        ("jwt", "allow"): ["--subject", "s", "--scopes", "profile.read", "--issuer", "https://i"],
        ("jwt", "list"): [],
        ("jwt", "revoke"): ["--prefix", "jwt:s"],
        ("idtype", "list"): [],
        ("idtype", "set"): ["--id-type", "x"],
        ("block", "add"): ["--value", "v"],
        ("block", "remove"): ["--value", "v"],
        ("block", "list"): [],
        ("changes",): [],
        ("receipt", "key"): [],
        ("import", "cdp"): [str(profiles), "--region", "EU"],
        ("import", "people"): [str(people), "--matching-attribute", "email", "--map", "Email=emails"],
    }
    commands = [c for c in _org_commands(main) if c != ("org", "create")]
    assert sorted(commands) == sorted(extra), "a command about an org is missing from this test"
    for command in commands:
        result = cli(*command, "--org-id", "9999", *extra[command])
        assert result.exit_code == 1, (command, result.output)
        assert "unknown org 9999" in result.output, (command, result.output)
    for source in (people, profiles):  # refused before reading: no rejects, no checkpoint
        assert not checkpoint.rejects_path(source).exists()
        assert not checkpoint.checkpoint_path(source).exists()


def test_an_import_into_a_region_the_org_lacks_is_refused_before_reading(cli: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "profiles.ndjson"
    path.write_text(json.dumps({"upsert": {}, "ids": {"email": "a@x.com"}}) + "\n")
    result = cli("import", "cdp", str(path), "--org-id", str(ORG), "--region", "US")
    assert result.exit_code == 1 and "no region 'US'" in result.output and "EU, UK" in result.output
    assert "records" not in result.output and not checkpoint.rejects_path(path).exists()
    # Any case names the same region.
    result = cli("import", "cdp", str(path), "--org-id", str(ORG), "--region", "eu", "--quiet")
    assert result.exit_code == 0 and "1 created" in result.output, result.output


@pytest.mark.parametrize("bulk", [False, True], ids=["online", "bulk"])
def test_a_compressed_file_is_refused_before_reading_saying_what_it_is(
    cli: Invoke, tmp_path: Path, bulk: bool
) -> None:
    # An export handed over gzipped was read as text: its bytes became "not valid JSON" rejects
    # (and a rejects file of binary), or a CSV header "not UTF-8".
    import gzip

    lines = "".join(json.dumps({"upsert": {}, "ids": {"email": f"p{n}@x.com"}}) + "\n" for n in range(500))
    for path, args in (
        (tmp_path / "profiles.ndjson.gz", ["cdp", "--region", "EU"]),
        (tmp_path / "people.csv.gz", ["people", "--matching-attribute", "email", "--format", "csv"]),
    ):
        path.write_bytes(gzip.compress(lines.encode()))
        kind, *options = args
        result = cli("import", kind, str(path), "--org-id", str(ORG), *options, *(["--bulk"] if bulk else []))
        assert result.exit_code == 1, result.output
        assert "the file is gzip-compressed" in result.output and f"gunzip -k {path}" in result.output
        assert "records" not in result.output and not checkpoint.rejects_path(path).exists()


@pytest.mark.parametrize("bulk", [False, True], ids=["online", "bulk"])
def test_a_file_in_a_folder_the_import_cannot_write_in_is_refused_before_reading(
    cli: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bulk: bool
) -> None:
    # The rejects file and checkpoint go beside the input: from a read-only folder (a mounted
    # export) the import failed with a traceback at the rejects file, and --bulk only after its
    # commit (everything written, then "OSError: Read-only file system", status 1).
    folder = tmp_path / "export"
    folder.mkdir()
    path = folder / "profiles.ndjson"
    path.write_text(json.dumps({"upsert": {}, "ids": {"email": "a@x.com"}}) + "\n")
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: access(p, mode) and Path(p) != folder)  # as for a user
    result = cli(
        "import", "cdp", str(path), "--org-id", str(ORG), "--region", "EU", *(["--bulk"] if bulk else [])
    )
    assert result.exit_code == 1, result.output
    assert f"{folder}: cannot write in this folder" in result.output and "Traceback" not in result.output
    assert "records" not in result.output


def test_an_import_whose_first_records_all_fail_alike_stops_early_and_fails(
    cli: Invoke, tmp_path: Path
) -> None:
    path = tmp_path / "profiles.ndjson"
    path.write_text(
        "".join(
            json.dumps({"region": "US", "upsert": {}, "ids": {"email": f"p{n}@x.com"}}) + "\n"
            for n in range(5000)
        )
    )
    result = cli(
        "import", "cdp", str(path), "--org-id", str(ORG), "--region", "EU", "--quiet", "--batch-size", "100"
    )
    assert result.exit_code == 1, result.output
    assert "the first 100 records were all rejected for the same reason (region" in result.output
    # It stopped after the batch in flight, long before the end of the file.
    assert "200 records" in result.output and "stopped after line 200" in result.output
    rejects = checkpoint.rejects_path(path).read_text().splitlines()
    assert len(rejects) == 200


def test_rejects_fail_the_import_unless_max_rejects_allows_them(cli: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    # 150 records, the first 100 rejected for two reasons: not one cause, so no early stop.
    rows = ["Email,First,Phone"]
    rows += [f"bad{n},B,+4915112345678" for n in range(50)]
    rows += [f"p{n}@x.com,P,12" for n in range(50)]
    rows += [f"ok{n}@x.com,O," for n in range(50)]
    path.write_text("\n".join(rows) + "\n")
    args = ["import", "people", str(path), "--org-id", str(ORG), "--matching-attribute", "email"]
    args += ["--map", "Email=emails", "--map", "First=firstName", "--map", "Phone=phoneNumber"]
    args += ["--quiet", "--batch-size", "20"]
    failed = cli(*args)
    assert failed.exit_code == 1, failed.output
    assert "150 records" in failed.output and "50 created, 0 updated, 100 rejected" in failed.output
    assert "100 records rejected, more than --max-rejects 0 allows" in failed.output
    # The first reject of each reason is shown, with its line.
    assert "line 2:" in failed.output and "line 52:" in failed.output
    accepted = cli(*args, "--max-rejects", "100")
    assert accepted.exit_code == 0, accepted.output
    assert "0 created, 50 updated, 100 rejected" in accepted.output


def test_people_import_speaks_crm_words_and_lists_the_real_columns(cli: Invoke, tmp_path: Path) -> None:
    helped = cli("import", "people", "--help")
    assert helped.exit_code == 0 and "ids." not in helped.output and "Email=emails" in helped.output
    path = tmp_path / "people.csv"
    path.write_text("E-mail,First name\nann@x.com,Ann\n")
    base = ["import", "people", str(path), "--org-id", str(ORG), "--matching-attribute", "email"]
    unmapped = cli(*base)
    assert unmapped.exit_code == 1 and "ids." not in unmapped.output and "Email=emails" in unmapped.output
    assert "E-mail, First name" in unmapped.output
    # An unknown --map column: the error lists the columns the file has, with no progress drawn first.
    wrong = cli(*base, "--map", "Email=emails")
    assert wrong.exit_code == 1
    assert "not in the CSV header: Email; the header's columns are: E-mail, First name" in wrong.output
    assert "━" not in wrong.output and "bytes" not in wrong.output
    malformed = cli(*base, "--map", "E-mail")
    assert malformed.exit_code == 1 and "COLUMN=FIELD, e.g. Email=emails" in malformed.output


def test_a_broken_csv_quote_is_a_csv_error_at_its_line(cli: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text('Email,First\nann@x.com,Ann\n"bob@x.com,Bob\ncy@x.com,Cy\n')
    args = ["import", "people", str(path), "--org-id", str(ORG), "--matching-attribute", "email"]
    result = cli(*args, "--map", "Email=emails", "--map", "First=firstName", "--quiet")
    assert result.exit_code == 1 and "1 created, 0 updated, 1 rejected" in result.output, result.output
    [reject] = [json.loads(x) for x in checkpoint.rejects_path(path).read_text().splitlines()]
    assert reject["line"] == 3
    message = reject["error"]["message"]
    assert message.startswith("line 3: CSV error: a quoted field opened on line 3 is never closed"), message
    assert "email" not in json.dumps(reject["error"]).lower().replace("bob@x.com", "")
    # A stray quote inside a quoted field is a CSV error too; the rows around it are imported.
    path.write_text('Email,First\n"dee@x.com"x,Dee\neve@x.com,Eve\n')
    result = cli(*args, "--map", "Email=emails", "--map", "First=firstName", "--quiet")
    assert "1 created, 0 updated, 1 rejected" in result.output, result.output
    [reject] = [json.loads(x) for x in checkpoint.rejects_path(path).read_text().splitlines()]
    assert reject["line"] == 2 and "CSV error" in reject["error"]["message"]


@pytest.mark.parametrize("bulk", [(), ("--bulk",)], ids=["online", "bulk"])
def test_a_csv_row_with_more_cells_than_the_header_is_rejected_at_its_line(
    cli: Invoke, tmp_path: Path, bulk: tuple[str, ...]
) -> None:
    """An unquoted comma shifts a row's values into the wrong columns: refused, not written with its
    extra cells dropped. A row with fewer cells is read (its missing cells empty)."""
    path = tmp_path / "people.csv"
    path.write_text("Email,First,Last\nann@x.com,Ann,Lee\nbob@x.com,Bob,Smith, Jr\ncy@x.com,Cy\n")
    args = ["import", "people", str(path), "--org-id", str(ORG), "--matching-attribute", "email", *bulk]
    result = cli(*args, "--map", "Email=emails", "--map", "First=firstName", "--quiet")
    assert "2 created, 0 updated, 1 rejected" in result.output, result.output
    [reject] = [json.loads(x) for x in checkpoint.rejects_path(path).read_text().splitlines()]
    assert reject["line"] == 3
    assert reject["error"]["message"].startswith("line 3: CSV error: 4 cells where the header has 3")


@pytest.mark.parametrize("bulk", [(), ("--bulk",)], ids=["online", "bulk"])
def test_a_csv_that_is_not_utf8_is_refused_where_it_is_not(
    cli: Invoke, tmp_path: Path, bulk: tuple[str, ...]
) -> None:
    path = tmp_path / "people.csv"
    args = ["import", "people", str(path), "--org-id", str(ORG), "--matching-attribute", "email", *bulk]
    args += ["--map", "Email=emails", "--map", "First=firstName", "--quiet"]
    # A header in Latin-1: one line naming the byte, not a traceback.
    path.write_bytes(b"Em\xe9il,First\nann@x.com,Ann\n")
    result = cli(*args[:-5], "--map", "Em\u00e9il=emails", "--quiet")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "the CSV header is not UTF-8 text (byte 0xe9 at column 3" in result.output, result.output
    # A row in Latin-1 among UTF-8 ones: that row rejected at its line, not written with U+FFFD.
    path.write_bytes(b"Email,First\nann@x.com,Ann\nbob@x.com,B\xe9a\ncy@x.com,Cy\n")
    result = cli(*args)
    assert result.exit_code == 1 and "2 created, 0 updated, 1 rejected" in result.output, result.output
    [reject] = [json.loads(x) for x in checkpoint.rejects_path(path).read_text().splitlines()]
    assert reject["line"] == 3 and reject["error"]["message"].startswith("line 3: not UTF-8 text (byte 0xe9")


def test_a_csv_column_named_twice_is_refused_when_it_would_be_read(cli: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "profiles.csv"
    path.write_text("email,email,note\na@x.com,b@x.com,n\n")
    args = ["import", "cdp", str(path), "--org-id", str(ORG), "--region", "EU", "--quiet"]
    result = cli(*args, "--map", "email=ids.email")
    assert result.exit_code == 1 and "column(s) email more than once" in result.output, result.output
    assert "created" not in result.output
    # A repeated column nobody reads is no ambiguity.
    path.write_text("email,note,note\na@x.com,n,m\n")
    result = cli(*args, "--map", "email=ids.email")
    assert result.exit_code == 0 and "1 created" in result.output, result.output


@pytest.mark.parametrize("bulk", [(), ("--bulk",)], ids=["online", "bulk"])
def test_an_ndjson_line_is_read_as_the_api_reads_its_body(
    cli: Invoke, tmp_path: Path, bulk: tuple[str, ...]
) -> None:
    """NaN, a lone surrogate and an integer beyond 64 bits: refused naming the field, as
    ``POST /cdp/v1/users`` refuses them (orjson alone called the first two unreadable and read the
    last as the float 1e+23, which was written); a long integer id taken as the API takes it."""
    path = tmp_path / "profiles.ndjson"
    lines = [
        b'{"ids":{"email":"ok@x.com"},"upsert":{"profile":{"n":18446744073709551615}}}',
        b'{"ids":{"email":"big@x.com"},"upsert":{"profile":{"n":99999999999999999999999}}}',
        b'{"ids":{"email":"nan@x.com"},"upsert":{"profile":{"n":NaN}}}',
        b'{"ids":{"email":"sur@x.com"},"upsert":{"profile":{"n":"\\ud800"}}}',
        b'{"ids":{"email":"id@x.com","AdId":99999999999999999999999},"upsert":{}}',
        b'{"ids":{"email":"broken@x.com"',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    args = ["import", "cdp", str(path), "--org-id", str(ORG), "--region", "EU", "--quiet", *bulk]
    result = cli(*args, "--max-rejects", "10")
    assert result.exit_code == 0 and "2 created, 0 updated, 4 rejected" in result.output, result.output
    rejects = {
        r["line"]: r["error"] for r in map(json.loads, checkpoint.rejects_path(path).read_text().splitlines())
    }
    assert list(rejects[2]["errors"]) == ["upsert.profile.n"], rejects[2]
    assert "beyond 64 bits" in rejects[2]["message"]
    assert list(rejects[3]["errors"]) == ["upsert.profile.n"] and "finite" in rejects[3]["message"]
    assert list(rejects[4]["errors"]) == ["upsert.profile.n"] and "surrogate" in rejects[4]["message"]
    assert 5 not in rejects  # the id's digits, as over HTTP (orjson's 1e+23 was refused as a float)
    assert rejects[6]["message"].startswith("line 6: not valid JSON"), rejects[6]


def test_bootstrap_says_it_is_installing_on_the_first_run(tmp_path: Path) -> None:
    # A checkout whose .venv exists but has not installed this pyproject.toml yet; its python
    # only records what it was asked to do, so nothing is really installed.
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "bootstrap").write_bytes((ROOT / "scripts" / "bootstrap").read_bytes())
    (tmp_path / "scripts" / "bootstrap").chmod(0o755)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "calls"}\n')
    python.chmod(0o755)
    env = {**os.environ, "PYTHON": sys.executable}
    first = subprocess.run(
        [tmp_path / "scripts" / "bootstrap"], env=env, capture_output=True, text=True, check=True
    )
    assert "installing dependencies into .venv (first run only" in first.stderr
    assert "pip install" in (tmp_path / "calls").read_text()
    again = subprocess.run(
        [tmp_path / "scripts" / "bootstrap"], env=env, capture_output=True, text=True, check=True
    )
    assert again.stderr == ""


@pytest.mark.parametrize("bulk", [(), ("--bulk",)], ids=["online", "bulk"])
@pytest.mark.parametrize(("separator", "name"), [(";", "semicolon"), ("\t", "tab")])
def test_a_csv_separated_by_semicolons_or_tabs_is_refused_before_reading(
    cli: Invoke, tmp_path: Path, bulk: tuple[str, ...], separator: str, name: str
) -> None:
    """Excel writes `email;first_name` where the decimal mark is a comma: read as comma-separated,
    that was one column, and every row a reject that did not say why (an unknown idType
    'email;upsert', or every person without a first or last name)."""
    for kind, header, options in (
        ("cdp", ["ids.email", "upsert.profile.first_name"], ["--region", "EU"]),
        ("people", ["emails", "firstName"], ["--matching-attribute", "email"]),
    ):
        path = tmp_path / f"{kind}.csv"
        path.write_text(separator.join(header) + "\nann@x.com" + separator + "Ann\n")
        result = cli("import", kind, str(path), "--org-id", str(ORG), *options, "--quiet", *bulk)
        assert result.exit_code == 1, result.output
        assert f"looks {name}-separated, and profilehub reads comma-separated CSV" in result.output
        assert "Traceback" not in result.output and "records" not in result.output
        assert not checkpoint.rejects_path(path).exists()
    # A separator inside a quoted column name is that name's.
    path = tmp_path / "quoted.csv"
    path.write_text(f'"ids.email{separator}x"\nann@x.com\n')
    result = cli("import", "cdp", str(path), "--org-id", str(ORG), "--region", "EU", "--quiet", *bulk)
    assert "looks" not in result.output and "1 records" in result.output, result.output


def _sized(record: dict[str, Any], size: int) -> bytes:
    """``record`` as one JSON line of exactly ``size`` bytes (spaces after its opening brace)."""
    text = json.dumps(record)
    return ("{" + " " * (size - len(text)) + text[1:]).encode()


def _rejects(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in checkpoint.rejects_path(path).read_text().splitlines()]


@pytest.mark.parametrize("bulk", [(), ("--bulk",)], ids=["online", "bulk"])
def test_a_record_larger_than_the_api_takes_is_rejected_at_its_line(
    cli: Invoke, tmp_path: Path, bulk: tuple[str, ...]
) -> None:
    """``POST /cdp/v1/users`` answers a body over 8 MiB with 413; the import wrote such a record
    (one of 20 MB too). Its rejects line keeps the record's start, not megabytes of it."""
    path = tmp_path / "profiles.ndjson"
    big = {"ids": {"email": "big@x.com"}, "upsert": {"profile": {"blob": "x" * DEFAULT_MAX_BODY_BYTES}}}
    ok = [json.dumps({"ids": {"email": f"{n}@x.com"}, "upsert": {}}).encode() for n in "ab"]
    path.write_bytes(b"\n".join([ok[0], json.dumps(big).encode(), ok[1]]) + b"\n")
    args = ["import", "cdp", str(path), "--org-id", str(ORG), "--region", "EU", "--quiet", "--workers", "0"]
    result = cli(*args, *bulk)
    assert result.exit_code == 1 and "2 created, 0 updated, 1 rejected" in result.output, result.output
    size = len(json.dumps(big))
    said = f"line 2: the record is {size:,} bytes, more than the 8,388,608 the API takes in a request body"
    assert said in result.output
    [reject] = _rejects(path)
    assert reject["line"] == 2 and reject["error"]["message"].startswith(said), reject["error"]
    assert reject["error"]["status"] == 400 and "PROFILEHUB_MAX_BODY_BYTES" in reject["error"]["message"]
    assert reject["record"].startswith('{"ids": {"email": "big@x.com"}') and len(reject["record"]) <= 2000


def test_the_record_limit_is_the_apis_setting_on_every_path_and_format(
    cli: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``PROFILEHUB_MAX_BODY_BYTES`` as the API reads it: a record of exactly that many bytes is
    taken, one more byte refused; NDJSON and CSV, CDP profiles and CRM people, online and --bulk
    alike (the same rejects file)."""
    monkeypatch.setenv("PROFILEHUB_MAX_BODY_BYTES", "4096")
    cdp = tmp_path / "profiles.ndjson"
    cdp.write_bytes(
        b"\n".join(
            _sized({"ids": {"email": f"p{size}@x.com"}, "upsert": {}}, size) for size in (4096, 4097, 100_000)
        )
        + b"\n"
    )
    people = tmp_path / "people.ndjson"
    people.write_bytes(
        b"\n".join(_sized({"emails": [f"p{size}@x.com"], "firstName": "P"}, size) for size in (4097, 4096))
        + b"\n"
    )
    csv_file = tmp_path / "profiles.csv"
    csv_file.write_text("email,note\na@x.com," + "x" * 3000 + "\nb@x.com," + "x" * 5000 + "\n")
    base = ["--org-id", str(ORG), "--quiet", "--workers", "0", "--max-rejects", "5"]
    runs: list[tuple[Path, list[str], int, str]] = [
        (cdp, ["cdp", "--region", "EU"], 2, "1 created, 0 updated, 2 rejected"),
        (people, ["people", "--matching-attribute", "email"], 1, "1 created, 0 updated, 1 rejected"),
        (
            csv_file,
            ["cdp", "--region", "EU", "--map", "email=ids.email", "--map", "note=upsert.profile.note"],
            3,
            "1 created, 0 updated, 1 rejected",
        ),
    ]
    for path, (kind, *options), line, counts in runs:
        seen = []
        for bulk in ((), ("--bulk",)):
            result = cli("import", kind, str(path), *base, *options, *bulk)
            assert result.exit_code == 0, result.output
            # the second run finds the first's profiles and people
            assert (
                counts if not bulk else counts.replace("1 created, 0 updated", "0 created, 1 updated")
            ) in result.output, result.output
            seen.append(_rejects(path))
        assert seen[0] == seen[1]
        assert seen[0][0]["line"] == line
        assert "more than the 4,096 the API takes" in seen[0][0]["error"]["message"]
