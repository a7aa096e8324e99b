"""A bulk import's temporary folder (35 GB at ten million records) never outlives it: SIGTERM
stops the import as Ctrl-C does (rolled back, folder removed), and the folder of an import killed
outright (SIGKILL, out of memory) is removed by the next bulk import. Real processes, real signals.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from profilehub.store.database import Database
from tests.test_bulk_import import BULK, bulk_run, counts, orgs  # noqa: F401 (a fixture)
from tests.test_import import people, write_ndjson

_CLI = "import sys; from profilehub.cli import main; sys.argv[0] = 'profilehub'; main()"


def _start(db: Database, path: Path, tmp: Path) -> subprocess.Popen[bytes]:
    """``profilehub import cdp PATH --bulk`` in a process of its own, its temporary folders in ``tmp``
    (SIGINT as a terminal leaves it: this test run may itself ignore it, as a background job)."""
    cmd = [
        sys.executable,
        "-c",
        "import signal; signal.signal(signal.SIGINT, signal.SIG_DFL); " + _CLI,
        "import",
        "cdp",
        str(path),
        "--org-id",
        str(BULK),
        "--region",
        "EU",
    ]
    cmd += ["--bulk", "--quiet", "--workers", "0"]
    env = {**os.environ, "PROFILEHUB_DATABASE_URL": db.url, "TMPDIR": str(tmp)}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _owned_folder(proc: subprocess.Popen[bytes], tmp: Path) -> Path:
    """The import's folder once it holds its owner file (its import is preparing then)."""
    while True:
        found = [p for p in tmp.glob("profilehub-bulk-*") if (p / "owner").exists()]
        if found:
            return found[0]
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise AssertionError(f"the import ended ({proc.returncode}) before its folder was seen:\n{out}")


@pytest.fixture
def big(tmp_path: Path) -> Path:
    # Seconds of preparing: the signals below arrive while it reads the file.
    return write_ndjson(tmp_path / "big.ndjson", people(60_000))


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 1), (signal.SIGINT, 130)])
def test_sigterm_or_ctrl_c_rolls_the_import_back_and_removes_its_folder(
    orgs: Database,  # noqa: F811
    tmp_path: Path,
    big: Path,
    signum: int,
    status: int,
) -> None:
    # As documented (and as the online import does): 1 after SIGTERM, 130 after Ctrl-C.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    before = counts(orgs, BULK)
    proc = _start(orgs, big, tmp)
    folder = _owned_folder(proc, tmp)
    assert f"pid {proc.pid}" in (folder / "owner").read_text()  # who made it, for a person looking
    proc.send_signal(signum)
    out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == status, out
    assert "interrupted: the --bulk import was rolled back, nothing of it was written" in out
    assert "Traceback" not in out
    assert list(tmp.iterdir()) == []
    assert counts(orgs, BULK) == before


def test_the_next_bulk_import_removes_the_folder_of_a_killed_one(
    orgs: Database,  # noqa: F811
    tmp_path: Path,
    big: Path,
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    before = counts(orgs, BULK)
    proc = _start(orgs, big, tmp)
    killed = _owned_folder(proc, tmp)
    proc.send_signal(signal.SIGKILL)  # no handler runs: the folder stays behind
    proc.communicate(timeout=60)
    assert killed.exists() and any(killed.iterdir())
    assert counts(orgs, BULK) == before
    # A folder of a running import (its owner file locked, here by this process) and one without
    # an owner file (an older version's, or one still being made) are not touched.
    running = tmp / "profilehub-bulk-running"
    running.mkdir()
    (running / "owner").write_text("pid 1\n")
    unknown = tmp / "profilehub-bulk-unknown"
    unknown.mkdir()
    with (running / "owner").open("rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        summary = bulk_run(orgs, write_ndjson(tmp_path / "small.ndjson", people(30)), spool_dir=tmp)
    assert summary.created > 0
    assert sorted(p.name for p in tmp.iterdir()) == ["profilehub-bulk-running", "profilehub-bulk-unknown"]
