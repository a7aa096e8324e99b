"""One default database whatever the current folder, and commands that say which one they use
(issue 17, item 3)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from profilehub.cli import main
from profilehub.config import default_database_path
from profilehub.store.database import head_revision


def _cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return str(result.output)


def test_the_default_database_is_the_same_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROFILEHUB_DATABASE_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    monkeypatch.chdir(one)
    _cli("org", "create", "--org-id", "7", "--name", "Acme", "--region", "EU")
    monkeypatch.chdir(two)
    assert "Acme" in _cli("org", "list")
    expected = tmp_path / "data" / "profilehub" / "profilehub.db"
    assert expected.is_file()
    assert not list(one.iterdir()) and not list(two.iterdir())
    info = _cli("info")
    assert f"database: sqlite:///{expected} (the default location" in info
    assert f"schema revision: {head_revision()} (current)" in info


def test_without_xdg_data_home_the_default_is_under_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROFILEHUB_DATABASE_URL", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_database_path() == tmp_path / ".local" / "share" / "profilehub" / "profilehub.db"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/dir")  # not absolute: ignored, as the spec says
    assert default_database_path() == tmp_path / ".local" / "share" / "profilehub" / "profilehub.db"


def test_info_names_the_configured_database_and_hides_its_password(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)
    _cli("db", "upgrade")
    info = _cli("info")
    assert "(from PROFILEHUB_DATABASE_URL)" in info and f"{head_revision()} (current)" in info
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", "postgresql://ann:s3cret@127.0.0.1:1/none")
    down = CliRunner().invoke(main, ["info"])
    assert down.exit_code == 1 and "cannot open the database" in down.output
    assert "s3cret" not in down.output and "postgresql+psycopg://ann:***@127.0.0.1:1/none" in down.output


def test_serve_says_which_database_it_uses(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "PROFILEHUB_DATABASE_URL"}
    env["XDG_DATA_HOME"] = str(tmp_path)
    server = subprocess.Popen(
        [Path(sys.executable).parent / "profilehub", "serve", "--port", str(port)],
        env=env,
        cwd=tempfile.gettempdir(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        deadline = time.monotonic() + 30
        first = ""
        while "(database: " not in first and time.monotonic() < deadline:  # not a log line
            first = server.stdout.readline()
        assert f"database: sqlite:///{tmp_path / 'profilehub' / 'profilehub.db'}" in first
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_tests_never_use_the_real_default_location() -> None:
    assert "PROFILEHUB_DATABASE_URL" not in os.environ
    assert str(default_database_path()).startswith(tempfile.gettempdir())
    assert not str(default_database_path()).startswith(str(Path.home()))
