"""``profilehub db backup FILE``: a consistent copy of the store, taken while it serves.

SQLite: the library's online backup of the file (the WAL's committed pages included), made in one
step under a read transaction, which in WAL mode does not hold writers back. PostgreSQL:
``pg_dump --format=custom`` (a snapshot of one transaction), restored with ``pg_restore``. Either
way the copy is written beside the target under a temporary name and renamed into place when
complete, so a failed or interrupted backup leaves no file that looks like a backup.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import sqlalchemy as sa

from profilehub.errors import BadRequest, ServiceUnavailable


def backup(url: str, target: Path) -> int:
    """Copy the store at ``url`` to ``target`` (which must not exist); the copy's size in bytes."""
    if target.exists():
        raise BadRequest(f"{target} exists: give a new file name (a backup never overwrites)", field="FILE")
    if not target.parent.is_dir():
        raise BadRequest(f"{target.parent} is not a folder", field="FILE")
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    parsed = sa.engine.make_url(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            _sqlite(Path(parsed.database or ""), partial)
        else:
            _postgres(parsed, partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target.stat().st_size


def _sqlite(path: Path, partial: Path) -> None:
    if not path.is_file():
        raise BadRequest(f"no SQLite database at {path}", field="PROFILEHUB_DATABASE_URL")
    source = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    copy = sqlite3.connect(partial)
    try:
        source.backup(copy)  # all pages in one step: one snapshot, whatever writers do meanwhile
        copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
    finally:
        copy.close()
        source.close()


def _postgres(parsed: sa.engine.URL, partial: Path) -> None:
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise ServiceUnavailable(
            "pg_dump is not installed: install PostgreSQL's client tools (Debian: postgresql-client) "
            "of the server's major version or newer"
        )
    # libpq's own URL (no SQLAlchemy driver name); the password, if any, goes by environment.
    libpq = parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    env = {**os.environ, **({"PGPASSWORD": parsed.password} if parsed.password else {})}
    command = [pg_dump, "--format=custom", "--no-owner", f"--file={partial}", f"--dbname={libpq}"]
    # A store kept in a schema of its own (``?options=-csearch_path=…`` in the URL): that schema.
    options = parsed.query.get("options")
    for text in [options] if isinstance(options, str) else list(options or ()):
        if found := re.search(r"-c\s*search_path=([^\s,]+)", text):
            command.append(f"--schema={found.group(1)}")
    done = subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        # Its whole message, on one line: the cause is on the first line (connection refused, at
        # which host and port) and the last only hinted ("Is the server running on that host…").
        reason = " ".join(line.strip() for line in done.stderr.splitlines() if line.strip())
        raise ServiceUnavailable(f"pg_dump failed: {reason or f'exit status {done.returncode}'}")
