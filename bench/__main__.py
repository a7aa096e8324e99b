"""Run the benchmarks: ``python -m bench`` (small, about a minute) or ``python -m bench --full``.

``python -m bench --only latency --latency-profiles 10000000``: latency at 10,000 and at 10 million
profiles, in a store made by ``bench.fill`` (bulk rows of the import's shapes) instead of imports.

Each benchmark makes its own fresh database (a SQLite file under bench/out, or a new PostgreSQL
database at 127.0.0.1:5432 dropped afterwards), prints its figures beside a baseline measured in the
same run on the same database, the machine's load, and the command that reproduces it. Only one
benchmark runs at a time on the machine (``bench/machine.py``: a second one refuses to start).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
from pathlib import Path

import orjson

from bench.generate import dataset
from bench.machine import command_line, exclusive_run, load_note
from bench.run_http import bench_http
from bench.run_import import bench_import
from bench.run_latency import bench_latency, bench_latency_filled

OUT = Path(__file__).resolve().parent / "out"
SIZES = {
    # records to import, HTTP requests, latency: small store -> large store
    "small": {"import": 10_000, "http": 3_000, "latency": (1_000, 10_000)},
    "full": {"import": 1_000_000, "http": 60_000, "latency": (10_000, 200_000)},
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--full", action="store_true", help="Full size: 1,000,000 records, 60,000 requests.")
    parser.add_argument("--only", choices=["import", "http", "latency"], action="append", help="Repeatable.")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append", help="Repeatable.")
    parser.add_argument("--records", type=int, help="Records to import (overrides the size).")
    parser.add_argument("--requests", type=int, help="HTTP requests (overrides the size).")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="Server processes for the HTTP benchmark.")
    parser.add_argument(
        "--latency-profiles",
        type=int,
        action="append",
        metavar="N",
        help="Latency at N profiles of a filled store (bench/fill.py), not an imported one; repeatable "
        "(one store grown through each N).",
    )
    parser.add_argument(
        "--latency-small", type=int, default=10_000, help="The filled store's small size (default 10,000)."
    )
    args = parser.parse_args(argv)
    with exclusive_run(command_line()):
        run(args)


def run(args: argparse.Namespace) -> None:
    size = SIZES["full" if args.full else "small"]
    only = args.only or ["import", "http", "latency"]
    backends = args.backend or ["sqlite", "postgres"]
    records = args.records or int(size["import"])  # type: ignore[call-overload]
    requests = args.requests or int(size["http"])  # type: ignore[call-overload]
    small, large = size["latency"]  # type: ignore[misc]

    def command(kind: str, backend: str) -> str:
        parts = [".venv/bin/python -m bench", f"--only {kind}", f"--backend {backend}"]
        if args.full:
            parts.append("--full")
        if kind == "import" and args.records:
            parts.append(f"--records {records}")
        if kind == "http":
            parts += [f"--requests {requests}", f"--clients {args.clients}", f"--workers {args.workers}"]
        if kind == "latency" and args.latency_profiles:
            parts += [f"--latency-profiles {n}" for n in args.latency_profiles]
            if args.latency_small != 10_000:
                parts.append(f"--latency-small {args.latency_small}")
        return " ".join(parts)

    started = datetime.datetime.now(datetime.UTC)
    print(
        f"# profilehub benchmarks, {started:%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"python {platform.python_version()}; {load_note()}"
    )
    OUT.mkdir(exist_ok=True)
    results = []
    for kind in only:
        for backend in backends:
            if kind == "import":
                results.append(
                    bench_import(dataset(OUT, records), backend, OUT, command(kind, backend), 3600)
                )
            elif kind == "http":
                data = dataset(OUT, max(requests, 1000), seed=11)
                results.append(
                    bench_http(
                        data, backend, OUT, command(kind, backend), args.clients, requests, args.workers
                    )
                )
            elif args.latency_profiles:
                results.append(
                    bench_latency_filled(
                        args.latency_small, args.latency_profiles, backend, OUT, command(kind, backend)
                    )
                )
            else:
                results.append(
                    bench_latency(dataset(OUT, large), small, backend, OUT, command(kind, backend))
                )
            results[-1]["machine"] = load_note()  # the load the figure was taken under
    (OUT / f"results-{started:%Y%m%dT%H%M%S}.json").write_bytes(orjson.dumps(results))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
