"""The bulk path against the online importer, side by side in one run, and the equivalence of both.

``python -m bench.bulk_path --records 1000000 [--backend sqlite|postgres] [--prefill 10000000]
[--skip-online]`` generates the benchmark's records (``bench.generate``: raw emails and phones,
ad ids, GA client ids, first-party ids, the dummy email and the zero ad id), then imports the file
twice with one ``--at``: with ``profilehub import cdp`` (the online importer, the baseline) into
one fresh database and with ``profilehub import cdp --bulk`` into another. Each import is its own
process, run as a user runs it; for each the bench prints records/s, wall time, the peak RSS of the
importer (``wait4``: its own or its largest child's, whichever is larger) and of its process tree
summed (importer and worker processes, sampled from /proc every 0.2 s), then whether the two
databases hold the same profiles, ids, ``linkedUcid``, change log, journal and events
(``bench.bulk_equivalence.digest``, ucids mapped by content), the load average and the command
that reproduces the figures.

``--prefill N`` first puts N profiles into both stores (``bench.fill``, the same N in each), so
the import goes into a store that already holds them; ``--skip-online`` measures the bulk path
alone (10 million records through the online importer take hours here), without the equivalence.

Goals (issue 20), printed against the figures: 1,000,000 records in < 60 s with peak RSS < 1 GB;
10,000,000 in < 10 minutes with peak RSS < 2 GB.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.backends import fresh_database
from bench.bulk_equivalence import COUNTS, Digest, Watermark, digest, verdict
from bench.fill import fill
from bench.generate import ORG_ID, REGION, dataset
from bench.machine import command_line, exclusive_run, load_note
from bench.run_import import setup_org
from profilehub.store.database import Database

OUT = Path(__file__).resolve().parent / "out"
AT = 1_780_000_000_000
MB = 1024 * 1024
# (records at most, seconds, peak RSS bytes): the goals of issue 20
GOALS = ((1_000_000, 60.0, 1024 * MB), (10_000_000, 600.0, 2048 * MB))
_IMPORT = "import sys; from profilehub.cli import main; sys.argv[0] = 'profilehub'; main()"


class ImportFailed(RuntimeError):
    """The import process ended without its summary (an error, a crash)."""


@dataclass
class Run:
    path: str  # "online" or "bulk"
    records: int
    seconds: float
    peak_rss: int  # bytes: the largest single process of the import
    peak_tree_rss: int  # bytes: the import's process tree, summed, sampled
    summary: str  # "C created, U updated, R rejected"
    digest: Digest | None = None
    prefill_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        return (
            f"{self.path:>6}: {self.records:,} records in {self.seconds:.1f} s = {self.rate:,.0f} records/s; "
            f"peak RSS {self.peak_rss / MB:,.0f} MB (process tree {self.peak_tree_rss / MB:,.0f} MB); "
            f"{self.summary}"
        )


def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and its descendants, now (0 for what already ended)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # the command may hold spaces and parentheses: the fields after its last ")" are fixed
        fields = stat[stat.rfind(b")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            continue
    return total


def run_import(
    url: str,
    path: Path,
    bulk: bool,
    records: int,
    timeout: float = float("inf"),
    dialect: Sequence[str] = ("cdp", "--region", REGION),
) -> Run:
    """One ``profilehub import <dialect> FILE <dialect options>`` in a process of its own, timed
    and measured (``dialect``: the import's kind, then its own options)."""
    cmd = [sys.executable, "-c", _IMPORT, "import", dialect[0], str(path), "--org-id", str(ORG_ID)]
    cmd += [*dialect[1:], "--at", str(AT), "--quiet", "--max-rejects", str(records)]
    cmd += ["--bulk"] if bulk else []
    env = {**os.environ, "PROFILEHUB_DATABASE_URL": url}
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak_tree = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_tree
        while not done.wait(0.2):
            peak_tree = max(peak_tree, _tree_rss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = b""
    assert proc.stdout is not None
    try:
        output = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        done.set()
        if proc.poll() is None and proc.returncode is None:
            proc.kill()
    seconds = time.monotonic() - started
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = output.decode(errors="replace")
    found = COUNTS.search(text)
    # 1 with a summary: more rejects than --max-rejects (not expected here); without one: failed
    if proc.returncode not in (0, 1) or found is None:
        raise ImportFailed(
            f"{' '.join(cmd)} failed ({proc.returncode}) after {seconds:.0f} s:\n{text[-3000:]}"
        )
    summary = found.group(0).split(": ", 1)[1]
    if phases := re.search(r"^phases: .*$", text, re.M):  # the bulk path's time by phase
        summary += f"; {phases.group(0)}"
    if grown := re.search(r"\(by the end of [^)]*\)", text):  # and its importer's peak RSS by phase
        summary += f"; peak RSS MB {grown.group(0)[1:-1]}"
    if seconds > timeout:
        raise RuntimeError(f"{' '.join(cmd)} took {seconds:.0f} s, more than --timeout {timeout:.0f}")
    return Run("bulk" if bulk else "online", records, seconds, usage.ru_maxrss * 1024, peak_tree, summary)


def one_path(
    backend: str, path: Path, records: int, bulk: bool, prefill: int, timeout: float, check: bool
) -> Run:
    with fresh_database(backend, OUT) as url:
        setup_org(url)
        prefilled = 0.0
        if prefill:
            prefilled = fill(url, prefill).seconds
        db = Database(url)
        mark = Watermark.read(db, ORG_ID)
        db.close()
        run = run_import(url, path, bulk, records, timeout)
        run.prefill_seconds = prefilled
        if check:
            db = Database(url)
            try:
                run.digest = digest(db, ORG_ID, mark)
            finally:
                db.close()
    return run


def goal_line(run: Run) -> str:
    for size, seconds, rss in GOALS:
        if run.records == size:
            met = run.seconds < seconds and run.peak_tree_rss < rss
            return (
                f"goal for {size:,} records: < {seconds:.0f} s and peak RSS < {rss / MB:,.0f} MB: "
                f"{'MET' if met else 'NOT MET'} ({run.seconds:.1f} s, {run.peak_tree_rss / MB:,.0f} MB)"
            )
    size, seconds, _ = GOALS[0]
    return (
        f"the goals are for {', '.join(f'{g[0]:,}' for g in GOALS)} records; at this run's pace "
        f"{size:,} would take ~{size / run.rate:.0f} s (a linear guess; the goal is < {seconds:.0f} s)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bulk_path", description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append", help="Repeatable.")
    parser.add_argument("--prefill", type=int, default=0, help="Profiles in each store before the import.")
    parser.add_argument("--skip-online", action="store_true", help="Only the bulk path (no equivalence).")
    parser.add_argument("--no-check", action="store_true", help="Skip the equivalence check.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=6 * 3600)
    args = parser.parse_args(argv)
    backends = args.backend or ["sqlite"]
    reproduce = f".venv/bin/python -m bench.bulk_path --records {args.records}" + "".join(
        f" --backend {b}" for b in backends
    )
    reproduce += f" --prefill {args.prefill}" if args.prefill else ""
    reproduce += " --skip-online" if args.skip_online else ""
    reproduce += " --no-check" if args.no_check else ""
    with exclusive_run(command_line()):
        OUT.mkdir(parents=True, exist_ok=True)
        data = dataset(OUT, args.records, args.seed)
        for backend in backends:
            tag = f"[bulk_path {backend}]"
            check = not args.no_check and not args.skip_online
            runs: list[Run] = []
            paths = [True] if args.skip_online else [False, True]
            failed = False
            for bulk in paths:
                try:
                    runs.append(
                        one_path(backend, data.records, args.records, bulk, args.prefill, args.timeout, check)
                    )
                except ImportFailed as exc:
                    print(
                        f"{tag} {'bulk' if bulk else 'online'} import FAILED: {exc}; {load_note()}",
                        flush=True,
                    )
                    failed = True
                    break
                print(f"{tag} {runs[-1].line()}; {load_note()}", flush=True)
            if failed:
                print(f"{tag} reproduce: {reproduce}", flush=True)
                continue
            into = f"into a store of {args.prefill:,} profiles" if args.prefill else "into an empty store"
            bulk_run = runs[-1]
            print(f"{tag} {into}, at {AT}; {data.people:,} people in the file", flush=True)
            if len(runs) == 2:
                online = runs[0]
                print(
                    f"{tag} bulk / online: {bulk_run.rate / online.rate:.2f}x records/s, "
                    f"{bulk_run.peak_tree_rss / max(online.peak_tree_rss, 1):.2f}x peak RSS",
                    flush=True,
                )
            print(f"{tag} {goal_line(bulk_run)}", flush=True)
            if check and runs[0].digest is not None and bulk_run.digest is not None:
                print(f"{tag} {verdict(runs[0].digest, bulk_run.digest)}", flush=True)
            print(f"{tag} reproduce: {reproduce}", flush=True)


if __name__ == "__main__":
    main()
