"""The importer's worker processes end with it, even when it is killed outright."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

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
    records.write_text('{"ids": {"email": "a@x.com"}}\n' * 10)
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
