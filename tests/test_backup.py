"""``profilehub db backup FILE`` while the store serves: a copy that opens as the same store (SQLite)
or restores with ``pg_restore`` (PostgreSQL); an existing FILE is refused, never overwritten."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from profilehub.cli import main
from profilehub.profiles import ProfileService, ProfileWrite
from profilehub.store.database import Database
from tests.conftest import PG_ADMIN, make_org, migrated_url


def _profiles(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM profiles").scalar_one())
    finally:
        engine.dispose()


def test_a_backup_holds_the_store_as_it_was(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = migrated_url(database_url)
    db = Database(url)
    try:
        make_org(db)
        ProfileService(db).write_batch(
            [ProfileWrite(1234, "EU", {"crm_id": f"C{n}"}, {"profile": {"n": n}}) for n in range(25)], "test"
        )
        monkeypatch.setenv("PROFILEHUB_DATABASE_URL", url)
        target = tmp_path / "store.backup"
        result = CliRunner().invoke(main, ["db", "backup", str(target)])
        assert result.exit_code == 0 and f"to {target}" in result.output, result.output
        # Refused, not overwritten, the second time; no partial file left either time.
        again = CliRunner().invoke(main, ["db", "backup", str(target)])
        assert again.exit_code == 1 and "exists: give a new file name" in again.output, again.output
        assert sorted(p.name for p in tmp_path.iterdir() if "backup" in p.name) == ["store.backup"]
    finally:
        db.close()
    if url.startswith("sqlite"):
        assert _profiles(f"sqlite:///{target}") == 25
        return
    restored = f"profilehub_test_restore_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{restored}"')
    try:
        base = PG_ADMIN.rsplit("/", 1)[0]
        subprocess.run(["pg_restore", "--no-owner", f"--dbname={base}/{restored}", str(target)], check=True)
        schema = sa.engine.make_url(url).query.get("options")
        query = f"?options={schema}" if isinstance(schema, str) else ""
        assert _profiles(f"{base.replace('postgresql://', 'postgresql+psycopg://')}/{restored}{query}") == 25
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{restored}" WITH (FORCE)')


def test_a_backup_of_a_stopped_postgresql_says_why_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The message was pg_dump's last line alone ("Is the server running on that host and
    accepting TCP/IP connections?"), without the host, the port or the refusal."""
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/profilehub")
    target = tmp_path / "down.dump"
    result = CliRunner().invoke(main, ["db", "backup", str(target)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    [line] = result.output.splitlines()
    assert line.startswith("Error: pg_dump failed: ") and "port 1 failed: Connection refused" in line, line
    assert list(tmp_path.iterdir()) == []
