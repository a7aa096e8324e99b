"""What the outbox of change events costs CDP writes: ``profilehub serve`` of this tree (every write
also records its event, docs/events.md) against the same server of the build just before the
outbox, under the same write load, in alternating rounds of one run, a fresh database each.

The build before is the tree of the parent of the commit that added the events migration
(``--baseline REF`` picks another), unpacked with ``git archive`` into bench/out and run from this
venv with its ``src`` first on ``PYTHONPATH``. The issue's bar for delivery on is at least 0.9x.
The server's CPU per write is printed too: it moves less than the rate on a busy machine.
``--import`` times ``profilehub import cdp``'s importer on the same records instead (p99 is then
of a batch, and the CPU that of the importer's process).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path
from typing import Any

import orjson

from bench.abuse import _cpu_seconds
from bench.backends import fresh_database
from bench.generate import dataset
from bench.machine import command_line, exclusive_run, load_note
from bench.run_http import free_port, load, server

ROOT = Path(__file__).resolve().parent.parent
PROFILEHUB = str(ROOT / ".venv/bin/profilehub")
OUT = Path(__file__).resolve().parent / "out"
EVENTS_MIGRATION = "src/profilehub/store/migrations/versions/0007_events.py"


def _git(*args: str) -> bytes:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, check=True).stdout


def baseline_tree(ref: str | None) -> tuple[str, Path]:
    """The commit before the outbox (or ``ref``), unpacked; its id and its ``src`` directory."""
    if ref is None:
        added = _git("log", "--diff-filter=A", "--format=%H", "--", EVENTS_MIGRATION).decode().split()
        if not added:
            raise SystemExit(f"no commit adds {EVENTS_MIGRATION}: pass --baseline REF")
        ref = f"{added[-1]}^"
    commit = _git("rev-parse", "--short", ref).decode().strip()
    target = OUT / f"outbox-baseline-{commit}"
    if not (target / "src").is_dir():
        shutil.rmtree(target, ignore_errors=True)
        with tarfile.open(fileobj=BytesIO(_git("archive", "--format=tar", commit, "src"))) as tar:
            tar.extractall(target, filter="data")
    return commit, target / "src"


def _setup(url: str, src: Path | None) -> str:
    """The bench's org and key, made by the build that will serve the database (each build
    migrates it to its own schema)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*([str(src)] if src else []), str(ROOT)])}
    code = "import sys; from bench.run_http import new_store; print(new_store(sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-c", code, url], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip().splitlines()[-1]


def _import_round(args: argparse.Namespace, src: Path | None) -> dict[str, Any]:
    """``profilehub import cdp``'s importer (``bench.import_worker``) on the records, timed."""
    data = dataset(OUT, args.requests, seed=7)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*([str(src)] if src else []), str(ROOT)])}
    with fresh_database(args.backend, OUT) as url:
        _setup(url, src)
        cmd = [sys.executable, "-m", "bench.import_worker", str(data.records), "--url", url]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
    result["requests"] = result["records"]
    result["latency_ms"] = result["batch_ms"]
    result["cpu_ms_per_write"] = result["cpu_seconds"] * 1000 / result["records"]
    result["statuses"] = {"rejected": result["rejected"]}
    return result


def _round(args: argparse.Namespace, src: Path | None) -> dict[str, Any]:
    if args.imports:
        return _import_round(args, src)
    data = dataset(OUT, args.requests, seed=7)
    with fresh_database(args.backend, OUT) as url:
        apikey = _setup(url, src)
        port = free_port()
        serve = [PROFILEHUB, "serve", "--port", str(port), "--workers", str(args.workers), "--no-access-log"]
        before = os.environ.get("PYTHONPATH")
        if src is not None:
            os.environ["PYTHONPATH"] = str(src)
        try:
            with server(serve, url, port, OUT / "outbox-server.log") as process:
                cpu = _cpu_seconds(process.pid)
                result = load(port, data, apikey, args.clients, args.requests, args.seconds)
                result["cpu_ms_per_write"] = (_cpu_seconds(process.pid) - cpu) * 1000 / result["requests"]
        finally:
            if before is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = before
    return result


def run(args: argparse.Namespace) -> None:
    OUT.mkdir(exist_ok=True)
    commit, src = baseline_tree(args.baseline)
    modes: dict[str, Path | None] = {"without": src, "with": None}
    rates: dict[str, list[float]] = {m: [] for m in modes}
    p99: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    what = f"{args.backend}{' import' if args.imports else ''}"
    for n in range(args.rounds):
        # Alternate which build goes first, so a drift in the machine's load hits both alike.
        for mode in ("without", "with") if n % 2 == 0 else ("with", "without"):
            result = _round(args, modes[mode])
            rates[mode].append(result["rate"])
            p99[mode].append(result["latency_ms"]["p99"])
            cpu[mode].append(result["cpu_ms_per_write"])
            print(
                f"[outbox {what}] round {n + 1} {mode:7} outbox: {result['requests']:,} writes, "
                f"{result['rate']:,.0f}/s, p99 {result['latency_ms']['p99']:.1f} ms, "
                f"server CPU {result['cpu_ms_per_write']:.3f} ms/write, statuses {result['statuses']}; "
                f"{load_note()}"
            )
            sys.stdout.flush()
    off, on = statistics.median(rates["without"]), statistics.median(rates["with"])
    cpu_off, cpu_on = statistics.median(cpu["without"]), statistics.median(cpu["with"])
    print(
        f"[outbox {what}] {'import cdp' if args.imports else f'{args.clients} clients, {args.workers} worker(s)'}, "
        f"{args.rounds} rounds: "
        f"without the outbox ({commit}) {off:,.0f} writes/s (p99 {statistics.median(p99['without']):.1f} ms), "
        f"with it {on:,.0f} writes/s (p99 {statistics.median(p99['with']):.1f} ms): {on / off:.2f}x "
        f"(medians; bar >= 0.9x); server CPU per write {cpu_off:.3f} -> {cpu_on:.3f} ms "
        f"({cpu_on / cpu_off:.2f}x); {load_note()}"
    )
    print(f"[outbox {what}] reproduce: {args.reproduce}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.outbox", description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--requests", type=int, default=4000, help="Writes per round (at most).")
    parser.add_argument("--seconds", type=float, default=60.0, help="Longest a round's load runs.")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="Rounds of each build (alternating).")
    parser.add_argument("--baseline", default=None, help="Git ref of the build without the outbox.")
    parser.add_argument(
        "--import",
        dest="imports",
        action="store_true",
        help="Time profilehub import cdp of the records (one process, CPU per record) instead of HTTP writes.",
    )
    args = parser.parse_args(argv)
    args.reproduce = f".venv/bin/python -m bench.outbox {' '.join(sys.argv[1:] if argv is None else argv)}"
    with exclusive_run(command_line()):
        run(args)


if __name__ == "__main__":
    main()
