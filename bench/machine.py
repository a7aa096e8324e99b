"""One benchmark run at a time on this machine, and the machine's load beside every figure.

Figures once labelled "quiet machine" came from runs that overlapped each other. So every bench
entry point (``python -m bench``, ``bench.ceiling``, ``bench.writer_phases``, ``bench.ugly``, …)
takes an exclusive lock first, ``fcntl.flock`` on one file for the whole machine (not per
checkout: another checkout's run loads the same CPUs): ``$PROFILEHUB_BENCH_LOCK``, by default
``profilehub-bench.lock`` in the system's temp directory (``/tmp``). A second run refuses to start
and names the holder's pid and command. The processes a run starts itself (import workers, the
load generator, the servers) inherit ``PROFILEHUB_BENCH_LOCK_HELD`` and go on under their parent's
lock. The kernel drops the lock when its holder exits, however it exits, so no stale lock remains.

``load_note()`` is the machine's load average and CPU count, printed beside every figure so that a
reader can tell a figure taken under other load from a quiet one, and the time this machine took
for a fixed piece of work (``reference_ms``) when the run began: the same machine has measured
twice as slow on one day as on another, with nothing else running, so figures of different days
compare only through it.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

LOCK_ENV = "PROFILEHUB_BENCH_LOCK"
HELD_ENV = "PROFILEHUB_BENCH_LOCK_HELD"
REFERENCE_ENV = "PROFILEHUB_BENCH_REFERENCE_MS"  # the run's reference time, for its children


class BenchLocked(SystemExit):
    """Another benchmark run holds the lock (a SystemExit: the command ends with the message)."""


def lock_path() -> Path:
    return Path(os.environ.get(LOCK_ENV) or Path(tempfile.gettempdir()) / "profilehub-bench.lock")


def cpus() -> int:
    """The CPUs this process may run on (a container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def reference_ms() -> float:
    """Milliseconds this machine takes for a fixed piece of single-threaded work of the kind
    profilehub's CPU goes to (dicts, strings, SHA-256 of short values), the best of five: the
    run's own figure when a parent run measured it (``REFERENCE_ENV``), else measured now."""
    given = os.environ.get(REFERENCE_ENV)
    if given:
        return float(given)
    best = float("inf")
    for _ in range(5):
        began = time.perf_counter()
        seen: dict[str, int] = {}
        for i in range(40_000):
            value = f"person{i % 5_000}@example.com".upper().lower()
            seen[hashlib.sha256(value.encode()).hexdigest()[:16]] = i
        best = min(best, time.perf_counter() - began)
    return best * 1000


def load_note() -> str:
    one, five, fifteen = os.getloadavg()
    return (
        f"machine load {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min), {cpus()} CPUs, "
        f"reference work {reference_ms():.0f} ms"
    )


def _holder(f: IO[str]) -> str:
    f.seek(0)
    return f.read().strip() or "unknown (no pid written yet)"


@contextmanager
def exclusive_run(command: str) -> Iterator[None]:
    """Hold the machine's benchmark lock for the block, or raise ``BenchLocked`` naming its holder.

    Inside a run (``HELD_ENV`` names the lock's current holder) it is a no-op, so a bench command
    may start another bench entry point as a child process."""
    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(f)
            inherited = os.environ.get(HELD_ENV)
            if inherited and holder.startswith(f"pid {inherited} "):
                yield  # a child of the run that holds the lock
                return
            raise BenchLocked(
                f"another benchmark run holds {path}: {holder}. Refusing to start, so that the "
                "two runs' figures do not disturb each other; wait for it to finish."
            ) from None
        previous = os.environ.get(HELD_ENV)
        previous_reference = os.environ.get(REFERENCE_ENV)
        try:
            # Measured before the run loads the machine, and given to every figure it prints.
            os.environ[REFERENCE_ENV] = f"{reference_ms():.1f}"
            started = datetime.datetime.now(datetime.UTC)
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} since {started:%Y-%m-%d %H:%M:%S} UTC: {command}\n")
            f.flush()
            os.environ[HELD_ENV] = str(os.getpid())
            yield
        finally:
            for name, value in ((HELD_ENV, previous), (REFERENCE_ENV, previous_reference)):
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            fcntl.flock(f, fcntl.LOCK_UN)


def command_line() -> str:
    """This process's command, for the lock file."""
    return " ".join([Path(sys.executable).name, *sys.argv])
