"""One benchmark run at a time, and the machine's load printed beside every figure."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from bench import __main__ as bench_main
from bench import ceiling, import_worker, ugly, writer_phases
from bench.machine import HELD_ENV, LOCK_ENV, BenchLocked, exclusive_run

ROOT = Path(__file__).resolve().parent.parent
LOAD = re.compile(
    r"machine load \d+\.\d\d / \d+\.\d\d / \d+\.\d\d \(1 / 5 / 15 min\), (\d+) CPUs, reference work (\d+) ms"
)


@pytest.fixture
def lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A lock file of this test's own, so the test never meets another checkout's real bench run."""
    path = tmp_path / "bench.lock"
    monkeypatch.setenv(LOCK_ENV, str(path))
    monkeypatch.delenv(HELD_ENV, raising=False)
    return path


@pytest.fixture
def first_run(lock: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock, as a first benchmark run does while it measures."""
    code = "import sys\nfrom bench.machine import exclusive_run\nwith exclusive_run('first run'):\n"
    code += "    print('held', flush=True)\n    sys.stdin.read()\n"
    holder = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        yield holder
    finally:
        holder.kill()
        holder.wait()


ENTRY_POINTS: dict[str, Callable[[], None]] = {
    "bench": lambda: bench_main.main(["--only", "import", "--backend", "sqlite", "--records", "10"]),
    "bench.ceiling": lambda: ceiling.main(["--records", "10", "--no-postgres"]),
    "bench.writer_phases": lambda: writer_phases.main(["--records", "10"]),
    "bench.import_worker": lambda: import_worker.main(["nothing.ndjson", "--url", "sqlite:///nothing.db"]),
    "bench.ugly": lambda: ugly.main(["--people", "10", "--backend", "sqlite"]),
}


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_a_second_run_refuses_while_the_first_holds_the_lock(
    name: str, first_run: subprocess.Popen[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # whatever it would write goes nowhere that matters
    with pytest.raises(BenchLocked) as refused:
        ENTRY_POINTS[name]()
    message = str(refused.value)
    assert f"pid {first_run.pid} " in message and "first run" in message
    assert not list(tmp_path.glob("*.db")), "the refused run must not have started"


def test_the_command_line_refuses_with_the_holders_pid_then_runs_once_it_is_gone(
    first_run: subprocess.Popen[str],
) -> None:
    command = [sys.executable, "-m", "bench.ceiling", "--records", "20", "--no-postgres"]
    refused = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode != 0 and refused.stdout == ""
    assert f"pid {first_run.pid} " in refused.stderr
    first_run.kill()
    first_run.wait()
    ran = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    assert "[ceiling] reproduce:" in ran.stdout


def test_processes_started_by_the_run_go_on_under_its_lock(lock: Path) -> None:
    with exclusive_run("parent run"):
        child = subprocess.run(
            [sys.executable, "-m", "bench.ceiling", "--records", "20", "--no-postgres"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert child.returncode == 0, child.stderr
        assert f"pid {os.getpid()} " in lock.read_text()
    # Released: the next run may start.
    with exclusive_run("next run"):
        pass


def test_every_ceiling_figure_carries_the_machine_load(
    lock: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ceiling.main(["--records", "30", "--batch", "10", "--no-postgres", "--compact"])
    lines = capsys.readouterr().out.splitlines()
    figures = [line for line in lines if "records/s" in line and line.startswith("[ceiling]")]
    assert len(figures) == 6
    for line in [lines[0], *figures]:
        assert LOAD.search(line), line
    found = [LOAD.search(line) for line in [lines[0], *figures]]
    assert int(found[0].group(1)) == len(os.sched_getaffinity(0))  # type: ignore[union-attr]
    # One reference time for the whole run, taken as it began: its figures compare with another
    # day's through it.
    assert len({m.group(2) for m in found if m}) == 1 and int(found[0].group(2)) > 0  # type: ignore[union-attr]
