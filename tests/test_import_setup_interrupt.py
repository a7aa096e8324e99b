"""Ctrl-C in a command's first seconds: while its modules load, and for an import, until the
importer takes Ctrl-C over (opening the database, checking the org and the file, loading the
--bulk modules). Said as a later Ctrl-C is, with status 130, not as Python's traceback of the
module loading, nor click's bare "Aborted!" and status 1. And an import's Ctrl-C after its run (as
it closes the database) does not say that nothing was written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from profilehub.ingest import checkpoint
from profilehub.store.database import Database
from tests.conftest import make_org, migrated_url
from tests.serve_process import free_port

ORG = 1234
ROOT = Path(__file__).resolve().parent.parent

# The command, as its entry point runs it, stopped at ``moment`` until a signal comes: a marker
# file says it got there. "cli": while the CLI's modules load, before click runs; "checks": while
# the command checks the file (every import); "modules": while the --bulk modules load (the
# slowest of an import's set-up); "closing": after the import ran, as the database is closed;
# "module:NAME": while a command loads module NAME. A module is paused at by an import hook.
_CHILD = """
import importlib.abc, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as from a terminal (pytest may ignore it)
marker, moment = sys.argv.pop(1), sys.argv.pop(1)

def wait():
    open(marker, "w").close()
    signal.pause()  # until the test's SIGINT, raised here as KeyboardInterrupt

class Pause(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == {"cli": "profilehub.store.database", "modules": "profilehub.bulk.engine"}.get(
            moment, moment.removeprefix("module:")
        ):
            wait()
        return None

sys.meta_path.insert(0, Pause())
if moment == "checks":
    from profilehub.ingest import reader
    check = reader.refuse_compressed
    reader.refuse_compressed = lambda path: (wait(), check(path))
if moment == "closing":  # the import ran; the command closes its database (its last ANALYZE)
    from profilehub.store.database import Database
    close = Database.close
    Database.close = lambda self: (wait(), close(self))
from profilehub.launch import main
sys.argv[0] = "profilehub"
main()
"""


def _interrupted(tmp_path: Path, url: str, moment: str, args: list[str]) -> tuple[int, str]:
    """``profilehub ARGS`` sent SIGINT at ``moment``: its status and output."""
    marker = tmp_path / "at-the-moment"
    command = [sys.executable, "-c", _CHILD, str(marker), moment, *args]
    env = {**os.environ, "PROFILEHUB_DATABASE_URL": url}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting for the moment, not timing it: the assertions follow the signal
        assert marker.exists(), f"the command ended ({proc.returncode}) before the moment was reached"
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, output


def _counts(url: str) -> tuple[int, int]:
    db = Database(url)
    try:
        with db.read() as conn:
            profiles = conn.exec_driver_sql("SELECT count(*) FROM profiles").scalar_one()
            people = conn.exec_driver_sql("SELECT count(*) FROM crm_records").scalar_one()
            return int(profiles), int(people)
    finally:
        db.close()


def _fifty_records(database_url: str, tmp_path: Path, kind: str) -> tuple[str, Path, list[str]]:
    """A migrated database with the org, a file of 50 new people of ``kind`` and the import's
    options for it: (url, file, args)."""
    url = migrated_url(database_url)
    db = Database(url)
    make_org(db, ORG)
    db.close()
    path = tmp_path / "records.ndjson"
    if kind == "cdp":
        records = [{"ids": {"email": f"p{n}@x.com"}, "upsert": {}} for n in range(50)]
        options = ["--region", "EU"]
    else:
        records = [{"emails": [f"p{n}@x.com"], "firstName": "P"} for n in range(50)]
        options = ["--matching-attribute", "email"]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return url, path, ["import", kind, str(path), "--org-id", str(ORG), *options, "--quiet", "--workers", "0"]


@pytest.mark.parametrize(
    ("kind", "bulk", "moment"),
    [
        ("people", True, "cli"),
        ("people", True, "modules"),
        ("people", True, "checks"),
        ("people", False, "checks"),
        ("cdp", True, "modules"),
        ("cdp", False, "checks"),
    ],
)
def test_ctrl_c_while_an_import_sets_up_says_interrupted_and_exits_130(
    database_url: str, tmp_path: Path, kind: str, bulk: bool, moment: str
) -> None:
    url, path, args = _fifty_records(database_url, tmp_path, kind)
    before = _counts(url)
    status, output = _interrupted(tmp_path, url, moment, [*args, *(["--bulk"] if bulk else [])])
    assert status == 130, output
    assert "Error: interrupted before the import began: nothing was written; run it again" in output
    assert "Aborted!" not in output and "Traceback" not in output, output
    assert _counts(url) == before
    assert not checkpoint.rejects_path(path).exists() and checkpoint.load(path) is None


@pytest.mark.parametrize(("kind", "bulk"), [("cdp", False), ("cdp", True), ("people", False)])
def test_ctrl_c_after_an_import_ran_does_not_say_nothing_was_written(
    database_url: str, tmp_path: Path, kind: str, bulk: bool
) -> None:
    """A Ctrl-C once the summary is printed (the command closing its database, waiting for its
    last ANALYZE) said "interrupted before the import began: nothing was written; run it again"
    under the summary of the records it had just committed."""
    url, _, args = _fifty_records(database_url, tmp_path, kind)
    profiles, people = _counts(url)
    status, output = _interrupted(tmp_path, url, "closing", [*args, *(["--bulk"] if bulk else [])])
    assert "50 records in" in output and "50 created" in output, output
    assert status == 130, output
    assert "nothing was written" not in output and "run it again" not in output, output
    assert "Error: interrupted after the import ran: what it wrote stays written" in output, output
    assert "Aborted!" not in output and "Traceback" not in output, output
    assert _counts(url) == ((profiles + 50, people) if kind == "cdp" else (profiles + 50, people + 50))


def test_ctrl_c_while_any_command_loads_is_one_line_and_130_not_a_traceback(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'profilehub.db'}"
    status, output = _interrupted(tmp_path, url, "cli", ["org", "list"])
    assert status == 130 and output == "Error: interrupted while starting: nothing was done\n", output


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("profilehub.crm.people", ["org", "link-people", "--org-id", str(ORG)]),
        ("profilehub.store.journal_store", ["org", "journal-retention", "--org-id", str(ORG)]),
        (
            "profilehub.store.receipt_store",
            ["org", "create", "--org-id", "77", "--name", "N", "--region", "EU"],
        ),
        ("profilehub.receipts", ["receipt", "key", "--org-id", str(ORG)]),
        ("profilehub.receipts", ["receipt", "verify", "{receipt}"]),
        ("profilehub.delivery.runner", ["deliver"]),
        ("profilehub.metrics", ["serve", "--port", "{port}"]),
    ],
)
def test_ctrl_c_while_a_command_loads_its_own_modules_is_said_as_while_starting(
    tmp_path: Path, module: str, args: list[str]
) -> None:
    """Each command loads the core it runs when it runs (profilehub.cli): a Ctrl-C then was click's
    bare "Aborted!" and status 1, where it was this line and 130 while the CLI loaded them all."""
    url = f"sqlite:///{tmp_path / 'profilehub.db'}"
    db = Database(url)
    make_org(db, ORG)
    db.close()
    receipt = tmp_path / "receipt.json"
    receipt.write_text("{}")
    args = [arg.format(receipt=receipt, port=free_port()) for arg in args]
    status, output = _interrupted(tmp_path, url, f"module:{module}", args)
    assert status == 130 and output == "Error: interrupted while starting: nothing was done\n", output
    db = Database(url)
    try:
        with db.read() as conn:  # org create did not create the org
            assert [row[0] for row in conn.exec_driver_sql("SELECT org_id FROM orgs")] == [ORG]
    finally:
        db.close()


def test_the_command_is_installed_through_the_entry_point_that_says_so() -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        assert tomllib.load(f)["project"]["scripts"]["profilehub"] == "profilehub.launch:main"
