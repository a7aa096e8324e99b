"""An importer beside the server on one SQLite file: the server's writes alone and during an import.

``python -m bench.shared_writer`` starts a real ``profilehub serve`` on a fresh SQLite file, loads
it with N keep-alive clients writing ``POST /cdp/v1/users`` (``bench.load``) for a while alone,
then again while ``profilehub import cdp`` writes a file into the same database (the import starts
with the second phase and goes on after it), and then runs the same import alone on a fresh file.
It prints the server's writes/s and p50/p99 in both phases, the import's rate beside the server
and alone, the command that reproduces the run, and the machine's load.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.generate import ORG_ID, REGION, dataset
from bench.machine import command_line, exclusive_run, load_note
from bench.run_http import free_port, load, new_store, server

ROOT = Path(__file__).resolve().parent.parent
PROFILEHUB = str(ROOT / ".venv/bin/profilehub")
OUT = Path(__file__).resolve().parent / "out"


def _import(url: str, source: Path) -> subprocess.Popen[str]:
    cmd = [PROFILEHUB, "import", "cdp", str(source), "--org-id", str(ORG_ID), "--region", REGION, "--quiet"]
    env = {**os.environ, "PROFILEHUB_DATABASE_URL": url}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen[str], started: float) -> float:
    output, _ = process.communicate(timeout=3600)
    if process.returncode != 0:
        raise RuntimeError(f"the import failed ({process.returncode}):\n{output[-3000:]}")
    return time.monotonic() - started


def _line(label: str, result: dict[str, Any]) -> str:
    lat = result["latency_ms"]
    return (
        f"{label}: {result['requests']:,} writes in {result['seconds']:.1f}s, {result['rate']:,.0f}/s, "
        f"p50/p99 {lat['p50']:.1f}/{lat['p99']:.1f} ms, statuses {result['statuses']}"
    )


def run(args: argparse.Namespace) -> None:
    OUT.mkdir(exist_ok=True)
    server_data = dataset(OUT, args.requests, seed=7)
    import_data = dataset(OUT, args.records, seed=11)
    with tempfile.TemporaryDirectory(prefix="shared-writer-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'shared.db'}"
        apikey = new_store(url)
        port = free_port()
        serve = [PROFILEHUB, "serve", "--port", str(port), "--no-access-log"]
        with server(serve, url, port, OUT / "shared-writer-server.log"):
            alone = load(port, server_data, apikey, args.clients, args.requests, args.seconds)
            started = time.monotonic()
            importer = _import(url, import_data.records)
            beside = load(port, server_data, apikey, args.clients, args.requests, args.seconds)
            import_beside = _finish(importer, started)
        url = f"sqlite:///{Path(tmp) / 'import-alone.db'}"
        new_store(url)
        started = time.monotonic()
        import_alone = _finish(_import(url, import_data.records), started)
    print(f"[shared-writer sqlite] server, {args.clients} clients: " + _line("alone", alone))
    print(f"[shared-writer sqlite] server, {args.clients} clients: " + _line("while importing", beside))
    print(
        f"[shared-writer sqlite] server during the import: {beside['rate'] / alone['rate']:.2f}x its rate "
        f"alone, p99 {beside['latency_ms']['p99'] / alone['latency_ms']['p99']:.1f}x"
    )
    print(
        f"[shared-writer sqlite] import of {args.records:,} records: {args.records / import_beside:,.0f}/s "
        f"beside the loaded server (the load stops after {args.seconds:.0f}s), "
        f"{args.records / import_alone:,.0f}/s alone; {load_note()}"
    )
    print(f"[shared-writer sqlite] reproduce: {args.reproduce}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.shared_writer", description=__doc__)
    parser.add_argument("--records", type=int, default=100_000, help="Records the import writes.")
    parser.add_argument(
        "--requests", type=int, default=100_000, help="At most this many server writes a phase."
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="Length of each server load phase.")
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args(argv)
    args.reproduce = (
        f".venv/bin/python -m bench.shared_writer {' '.join(sys.argv[1:] if argv is None else argv)}"
    )
    with exclusive_run(command_line()):
        run(args)


if __name__ == "__main__":
    main()
