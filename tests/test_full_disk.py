"""A full disk: the server answers 503 naming it (writes and /readyz), fails each write at once,
recovers by itself once space is freed; the importer stops with one line, exit 1, and a checkpoint
that --resume finishes from; a --bulk import, whether the store's disk or its temporary folder's
fills up, stops with one line naming which, once, with nothing written.

The disk is real: a 16 MB tmpfs holding the SQLite file (room for its WAL, which the importer
checkpoints at 4 MB and the server every quarter second), filled up by other files. Mounting
needs root; without it the tests skip loudly (and fail under CI=true as root, where they can
mount).
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from profilehub.app import create_app
from profilehub.bulk.load import CHANGE_COLUMNS, Numbering, encode_copy, load_scratch
from profilehub.bulk.resolve import Spools
from profilehub.config import Settings
from profilehub.ingest import checkpoint
from profilehub.store.backfill_journal import ROLLBACK, written_once
from profilehub.store.changes import ChangeIdBlock
from profilehub.store.database import Database
from tests.conftest import make_org, running_in_ci

ORG = 1234


class TinyDisk:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.fillers: list[Path] = []

    @property
    def url(self) -> str:
        return f"sqlite:///{self.root / 'profilehub.db'}"

    def fill(self, leave: int = 0) -> None:
        """Take every free byte with 64 KB files, then give ``leave`` bytes of them back."""
        chunk = b"\0" * 65536
        while True:
            path = self.root / f"filler-{uuid.uuid4().hex}"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT)
            try:
                written = os.write(fd, chunk)
            except OSError:
                written = 0
            os.close(fd)
            self.fillers.append(path)
            if written < len(chunk):
                break
        while leave > 0 and self.fillers:
            self.fillers.pop().unlink()
            leave -= len(chunk)

    def free(self) -> None:
        for path in self.fillers:
            path.unlink()
        self.fillers.clear()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[TinyDisk]:
    root = tmp_path / "disk"
    root.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(root)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        reason = f"TINY FILESYSTEM UNAVAILABLE, full-disk test not run: mount: {mounted.stderr.strip()}"
        if running_in_ci() and os.geteuid() == 0:
            pytest.fail(f"CI=true as root and {reason}")
        pytest.skip(reason)
    try:
        yield TinyDisk(root)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def _no_wal_left(url: str) -> None:
    # Writes then have to grow the WAL file, so the next one meets the full disk at once.
    db = Database(url)
    with db.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def test_server_names_the_full_disk_fails_fast_and_recovers(tiny_disk: TinyDisk) -> None:
    app = create_app(Settings(database_url=tiny_disk.url))
    db = app.state.db
    org = make_org(db, ORG)
    _no_wal_left(tiny_disk.url)
    transactions: list[object] = []
    sa.event.listen(db._writer_engine, "begin", transactions.append)
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
        tiny_disk.fill()
        body = {"orgId": ORG, "region": "EU", "upsert": {}, "ids": {"email": "ann@example.com"}}
        for attempt in range(3):
            transactions.clear()
            answer = client.post("/cdp/v1/users", json=body, headers=org.headers())
            assert answer.status_code == 503, answer.text
            assert "disk full" in answer.json()["message"], answer.text
            assert answer.headers["Retry-After"]
            # One attempt, not a retry loop that meets the same full disk five more times.
            assert len(transactions) == 1, f"write {attempt} took {len(transactions)} transactions"
        person = client.post(
            "/v2/crm/people", json={"emails": ["bob@example.com"], "firstName": "Bob"}, headers=org.bearer
        )
        assert person.status_code == 503 and "disk full" in person.json()["message"], person.text
        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert "disk full" in ready.json()["message"], ready.text
        assert client.get("/healthz").status_code == 200  # alive: a restart frees no space
        # Space back: /readyz sees it without any client write in between.
        tiny_disk.free()
        assert client.get("/readyz").status_code == 200
        assert client.post("/cdp/v1/users", json=body, headers=org.headers()).status_code == 200


def test_import_on_a_full_disk_stops_with_one_line_and_resumes(tiny_disk: TinyDisk, tmp_path: Path) -> None:
    db = Database(tiny_disk.url)
    make_org(db, ORG)
    db.close()
    _no_wal_left(tiny_disk.url)
    source = tmp_path / "users.ndjson"
    records = 1500
    source.write_text(
        "".join(
            json.dumps({"ids": {"email": f"user{i}@example.com"}, "upsert": {"profile": {"note": "x" * 50}}})
            + "\n"
            for i in range(records)
        )
    )
    tiny_disk.fill(leave=1024 * 1024)  # room for a few batches, not for all of them
    command = [str(Path(sys.executable).parent / "profilehub"), "import", "cdp", str(source)]
    command += ["--org-id", str(ORG), "--region", "EU", "--batch-size", "100", "--workers", "0", "--quiet"]
    env = {**os.environ, "PROFILEHUB_DATABASE_URL": tiny_disk.url}
    stopped = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    output = (stopped.stdout + stopped.stderr).strip().splitlines()
    assert stopped.returncode == 1, output
    assert len(output) == 1 and "disk full" in output[0] and "--resume" in output[0], output
    saved = checkpoint.load(source)
    assert saved is not None and 0 < saved.line < records, output
    assert f"line {saved.line:,}" in output[0]
    tiny_disk.free()
    db = Database(tiny_disk.url)
    with db.read() as conn:
        # The checkpoint says exactly what was written: one profile per line up to it.
        assert conn.exec_driver_sql("SELECT count(*) FROM profiles").scalar() == saved.line
    db.close()
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, env=env, timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    db = Database(tiny_disk.url)
    with db.read() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM profiles").scalar() == records
    db.close()


def test_bulk_import_on_a_full_disk_stops_with_one_line_and_leaves_the_store_as_it_was(
    tiny_disk: TinyDisk, tmp_path: Path
) -> None:
    """The bulk path writes its one transaction through SQLite's rollback journal; a full disk
    mid-write ends that transaction inside SQLite. The import says so in one line, once (not a
    traceback, nor a second run of the whole transaction), and the store is as before: no
    profiles, back in WAL mode for the server."""
    db = Database(tiny_disk.url)
    make_org(db, ORG)
    db.close()
    _no_wal_left(tiny_disk.url)
    source = _users(tmp_path / "users.ndjson", 3000)
    tiny_disk.fill(leave=1024 * 1024)
    command = [str(Path(sys.executable).parent / "profilehub"), "import", "cdp", str(source)]
    command += ["--org-id", str(ORG), "--region", "EU", "--bulk", "--workers", "0", "--quiet"]
    env = {**os.environ, "PROFILEHUB_DATABASE_URL": tiny_disk.url}
    stopped = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    output = (stopped.stdout + stopped.stderr).strip().splitlines()
    assert stopped.returncode == 1, output
    assert len(output) == 1 and "disk full" in output[0] and "nothing was written" in output[0], output
    tiny_disk.free()
    db = Database(tiny_disk.url)
    with db.read() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM profiles").scalar() == 0
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    db.close()


def _users(path: Path, count: int) -> Path:
    path.write_text(
        "".join(
            json.dumps({"ids": {"email": f"user{i}@example.com"}, "upsert": {"profile": {"note": "x" * 50}}})
            + "\n"
            for i in range(count)
        )
    )
    return path


def test_bulk_import_with_its_work_folder_full_stops_with_one_line_naming_it(
    tiny_disk: TinyDisk, tmp_path: Path
) -> None:
    """The temporary files of a --bulk import (TMPDIR) on a disk that fills up: one line saying
    where and what to do, not a traceback; nothing written, the store back in WAL mode, and no
    folder of the import left on that disk."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    db = Database(url)
    make_org(db, ORG)
    db.close()
    source = _users(tmp_path / "users.ndjson", 20_000)  # ~70 MB of temporary files
    command = [str(Path(sys.executable).parent / "profilehub"), "import", "cdp", str(source)]
    command += ["--org-id", str(ORG), "--region", "EU", "--bulk", "--quiet"]
    env = {**os.environ, "PROFILEHUB_DATABASE_URL": url, "TMPDIR": str(tiny_disk.root)}
    stopped = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    output = (stopped.stdout + stopped.stderr).strip().splitlines()
    assert stopped.returncode == 1, output
    assert len(output) == 1, output
    assert f"temporary files in {tiny_disk.root}" in output[0] and "nothing was written" in output[0]
    assert "TMPDIR" in output[0], output
    assert not list(tiny_disk.root.iterdir())
    db = Database(url)
    with db.read() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM profiles").scalar() == 0
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    db.close()


def _change_log_spools(folder: Path, count: int) -> Spools:
    """A group's spools holding ``count`` change log rows of ~400 bytes, closed (ready for the write)."""
    spools = Spools.open(folder, "group")
    spools.changes.extend(
        [(k, ORG, 1, "import", "profile", f"u{k}", "create", "x" * 400) for k in range(count)]
    )
    for spool in spools.all():
        spool.close()
    return spools


def test_a_scratch_file_on_a_full_disk_is_no_space_left(tiny_disk: TinyDisk, tmp_path: Path) -> None:
    """The worker loading a log table into its scratch file (``bulk.load``) meets the work
    folder's full disk as SQLite's "database or disk is full": said as every other file of the
    import says it (ENOSPC, naming the file), which ``workdir.work_folder`` turns into its message,
    and not as the store's own full disk."""
    store = Database(f"sqlite:///{tmp_path / 'store.db'}")
    with store.read() as conn:
        create = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'changes'").scalar_one()
    store.close()
    spools = _change_log_spools(tmp_path, 5000)
    tiny_disk.fill()
    scratch = tiny_disk.root / "scratch.sqlite"
    with pytest.raises(OSError) as refused:
        load_scratch(scratch, "changes", create, [spools], Numbering(ORG, ChangeIdBlock(5000), 0))
    assert refused.value.errno == errno.ENOSPC
    assert refused.value.filename == str(scratch)


def test_the_copy_encoder_on_a_full_disk_is_no_space_left(tiny_disk: TinyDisk, tmp_path: Path) -> None:
    """The worker encoding a table's rows for PostgreSQL (``load.encode_copy``) into a work folder
    whose disk fills up fails with "no space left on device" itself, which the importer receives
    and ``workdir.work_folder`` turns into its one-line message."""
    spools = _change_log_spools(tmp_path, 50_000)
    tiny_disk.fill()
    with pytest.raises(OSError) as refused:
        encode_copy(
            tiny_disk.root / "copy_changes",
            "changes",
            CHANGE_COLUMNS,
            [spools],
            Numbering(ORG, ChangeIdBlock(50_000), 0),
        )
    assert refused.value.errno == errno.ENOSPC


def test_a_first_backfill_leaves_the_store_in_wal_mode_with_its_full_work_disk_attached(
    tiny_disk: TinyDisk, tmp_path: Path
) -> None:
    """A first backfill's writer connection has the import's scratch files attached when its
    transaction ends (``bulk.load``); switching the store back to WAL mode touches the store alone,
    so a work folder whose disk filled up (what stopped the import) does not fail the switch."""
    store = tmp_path / "store.db"
    db = Database(f"sqlite:///{store}")
    make_org(db, ORG)
    scratch = tiny_disk.root / "scratch.sqlite"
    with closing(sqlite3.connect(scratch)) as conn:
        conn.execute("CREATE TABLE t (x)")
    with written_once(db) as journal:
        assert journal == ROLLBACK
        db.write(lambda conn: conn.exec_driver_sql("ATTACH DATABASE ? AS scratch", (str(scratch),)))
        tiny_disk.fill()
    db.close()
    with closing(sqlite3.connect(store)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
