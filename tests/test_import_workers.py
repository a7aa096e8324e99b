"""The importer's processes when it is stopped: killed outright, or by Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from profilehub.orgs import create_org
from profilehub.store.database import Database
from tests.conftest import migrated_url

SCRIPT = textwrap.dedent(
    """
    import multiprocessing, sys, threading, time
    from pathlib import Path
    from profilehub.ingest.reader import read_ndjson
    from profilehub.ingest.runner import Importer

    def prepare(records):
        return len(records)

    class Stuck:
        # A staged sink whose writes never finish: the import hangs with its workers alive.
        def prepare_job(self, records):
            return prepare, (records,)
        def write(self, records, prepared):
            threading.Event().wait()
        def __call__(self, records):
            return self.write(records, None)

    if __name__ == "__main__":
        path = Path(sys.argv[1])
        def report():
            while not multiprocessing.active_children():
                time.sleep(0.05)
            time.sleep(0.5)
            print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
        threading.Thread(target=report, daemon=True).start()
        Importer(path, lambda o, l: read_ndjson(path, o, l), Stuck(), batch_size=1, workers=2).run()
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_killing_the_importer_ends_its_worker_processes(tmp_path: Path) -> None:
    records = tmp_path / "records.ndjson"
    records.write_text('{"upsert": {}, "ids": {"email": "a@x.com"}}\n' * 10)
    script = tmp_path / "stuck_import.py"
    script.write_text(SCRIPT)
    importer = subprocess.Popen(
        [sys.executable, str(script), str(records)], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        assert importer.stdout is not None
        workers = [int(p) for p in importer.stdout.readline().split()]
        assert workers and all(_alive(p) for p in workers)
    finally:
        importer.send_signal(signal.SIGKILL)
        importer.wait()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in workers if _alive(p)], "worker processes outlived the killed importer"


def _start_import_and_interrupt(
    database_url: str, tmp_path: Path, total: int, sigint: str, sigterm: str = ""
) -> tuple[subprocess.Popen[str], list[Any], dict[str, str], Path]:
    """Start ``profilehub import cdp`` of ``total`` new people with SIGINT at ``sigint`` ("default",
    as from a terminal, or "ignore", as a background job), in its own process group; once a batch
    is checkpointed, send SIGINT to the whole group, as a terminal's Ctrl-C does (or, ``sigterm``,
    SIGTERM: to the importer ("pid", as ``kill PID`` does) or to its whole group ("group", as
    systemd stops a service by default))."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PROFILEHUB_DATABASE_URL": database_url}
    db = Database(migrated_url(database_url))  # the org, made here: a process less to start
    try:
        db.write(lambda c: create_org(c, 7, "T", ["EU"]))
    finally:
        db.close()
    source = tmp_path / "people.ndjson"
    source.write_text(
        "".join(f'{{"upsert": {{}}, "ids": {{"email": "p{n}@example.com"}}}}\n' for n in range(total))
    )
    command: list[Any] = [bin_dir / "profilehub", "import", "cdp", source, "--org-id", "7", "--region", "EU"]
    # Set explicitly: this test run may itself have inherited SIGINT ignored (a background job).
    disposition = "SIG_DFL" if sigint == "default" else "SIG_IGN"
    launcher = f"import os, signal, sys; signal.signal(signal.SIGINT, signal.{disposition}); os.execv(sys.argv[1], sys.argv[1:])"
    importer = subprocess.Popen(
        [sys.executable, "-c", launcher, *command, "--batch-size", "100", "--workers", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    checkpoint = tmp_path / "people.ndjson.checkpoint.json"
    deadline = time.monotonic() + 60
    while not checkpoint.exists() and importer.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if sigterm == "pid":
        os.kill(importer.pid, signal.SIGTERM)
    elif sigterm == "group":
        os.killpg(importer.pid, signal.SIGTERM)
    else:
        os.killpg(importer.pid, signal.SIGINT)
    return importer, command, env, checkpoint


def _profiles(database_url: str) -> int:
    db = Database(database_url)
    try:
        with db.read() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM profiles").scalar_one())
    finally:
        db.close()


def test_ctrl_c_stops_after_the_batch_being_written_and_resume_goes_on_exactly(
    database_url: str, tmp_path: Path
) -> None:
    # A terminal's Ctrl-C goes to the importer and its workers at once. The import must stop with
    # its checkpoint at the last record written (not behind it, which would write batches twice),
    # with no traceback from a worker, and say how to go on. The checkpoint is saved after every
    # batch of 100 and SIGINT follows the first one within a poll (50 ms): 6,000 records leave the
    # import far from its end then (a few hundred records at most written meanwhile), and every
    # record more only lengthened the resume.
    total = 6_000
    importer, command, env, checkpoint = _start_import_and_interrupt(database_url, tmp_path, total, "default")
    output, _ = importer.communicate(timeout=60)
    assert importer.returncode == 130, output
    assert "Traceback" not in output
    assert "--resume" in output

    line = json.loads(checkpoint.read_text())["line"]
    assert 0 < line < total
    assert _profiles(database_url) == line  # one new person a record: written is what was checkpointed

    resumed = subprocess.run([*command, "--resume", "--quiet"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"{total:,} created, 0 updated" in resumed.stdout
    assert _profiles(database_url) == total
    assert not checkpoint.exists()


@pytest.mark.parametrize("to", ["pid", "group"])
def test_sigterm_stops_after_the_batch_being_written_and_resume_goes_on_exactly(
    database_url: str, tmp_path: Path, to: str
) -> None:
    # `kill PID` or a service manager stopping the job's group: as Ctrl-C, the batch being written
    # is committed and checkpointed first. The importer alone ended at once, its checkpoint behind
    # what was written, and --resume then wrote those records again (twice in the change log and
    # the events, and counted again); the group's worker died mid-batch with a traceback. Status 1,
    # as --bulk gives for SIGTERM.
    total = 6_000
    importer, command, env, checkpoint = _start_import_and_interrupt(
        database_url, tmp_path, total, "default", sigterm=to
    )
    output, _ = importer.communicate(timeout=60)
    assert importer.returncode == 1, output
    assert "Traceback" not in output and "--resume" in output
    line = json.loads(checkpoint.read_text())["line"]
    assert 0 < line < total
    assert _profiles(database_url) == line
    resumed = subprocess.run([*command, "--resume", "--quiet"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"{total:,} created, 0 updated" in resumed.stdout
    assert _profiles(database_url) == total


def test_an_import_started_with_sigint_ignored_keeps_ignoring_it(database_url: str, tmp_path: Path) -> None:
    # nohup or a background job: SIGINT was ignored on purpose, so the import runs to its end. As
    # above, SIGINT comes after the first batch of 100, long before the 4,000th record.
    total = 4_000
    importer, _, _, checkpoint = _start_import_and_interrupt(database_url, tmp_path, total, "ignore")
    output, _ = importer.communicate(timeout=120)
    assert importer.returncode == 0, output
    assert f"{total:,} records" in output
    assert _profiles(database_url) == total
    assert not checkpoint.exists()
