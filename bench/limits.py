"""Rate limits' cost: HTTP writes/s with no limit beside a limit far above the load.

``python -m bench.limits [--backend sqlite] [--requests 2000] [--clients 32] [--rounds 2] [--redis URL]``

Each mode runs ``profilehub serve`` (one worker, no access log) on a fresh database under the
same ``bench.load`` writes as ``python -m bench --only http``; modes alternate round by round
(each round starting with another mode) so a change in the machine's load falls on all, and
the best round of each is compared. The limit is 1,000,000/s and 1,000,000,000/min, never reached: what is
measured is the limiter's own work on every request (credential, cached limit, counters; with
``--redis``, one Redis round trip). Prints figures, the machine's load and the command.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from bench.backends import fresh_database
from bench.figures import ratio
from bench.generate import ORG_ID, dataset
from bench.machine import command_line, exclusive_run, load_note
from bench.run_http import ROOT, free_port, load, server
from bench.run_import import setup_org
from profilehub.auth import CredentialKind, create_credential
from profilehub.ratelimit import set_rate_limit
from profilehub.store.database import Database

OUT = Path(__file__).resolve().parent / "out"
FAR_ABOVE = (1_000_000, 1_000_000_000)


def one_run(backend: str, mode: str, redis_url: str, requests: int, clients: int) -> dict[str, Any]:
    data = dataset(OUT, max(requests, 1000), seed=11)
    with fresh_database(backend, OUT) as url:
        setup_org(url)
        db = Database(url)
        apikey = db.write(
            lambda c: create_credential(c, ORG_ID, CredentialKind.APIKEY, "profile.read,profile.write")
        ).secret
        if mode != "off":
            db.write(lambda c: set_rate_limit(c, ORG_ID, *FAR_ABOVE))
        db.close()
        port = free_port()
        serve = [str(ROOT / ".venv/bin/profilehub"), "serve", "--port", str(port), "--no-access-log"]
        saved = os.environ.get("PROFILEHUB_REDIS_URL")
        os.environ["PROFILEHUB_REDIS_URL"] = redis_url if mode == "redis" else ""
        os.environ["PROFILEHUB_REDIS_PREFIX"] = f"profilehub-bench-{os.getpid()}"
        try:
            with server(serve, url, port, OUT / f"limits-{mode}.log"):
                result = load(port, data, apikey, clients, requests, 300.0)
        finally:
            os.environ.pop("PROFILEHUB_REDIS_PREFIX", None)
            if saved is None:
                os.environ.pop("PROFILEHUB_REDIS_URL", None)
            else:
                os.environ["PROFILEHUB_REDIS_URL"] = saved
    if set(result["statuses"]) != {"200"}:
        raise RuntimeError(f"{mode}: not every write succeeded: {result['statuses']}")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.limits", description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--redis", default="", metavar="URL", help="Also measure counters in this Redis.")
    args = parser.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    with exclusive_run(command_line()):
        modes = ["off", "local"] + (["redis"] if args.redis else [])
        for backend in args.backend or ["sqlite"]:
            best: dict[str, dict[str, Any]] = {}
            for round_ in range(args.rounds):
                # Each round starts with another mode, so no mode always runs after the same one.
                for mode in modes[round_ % len(modes) :] + modes[: round_ % len(modes)]:
                    result = one_run(backend, mode, args.redis, args.requests, args.clients)
                    print(
                        f"[limits {backend}] {mode}: {result['rate']:,.0f} writes/s; {load_note()}",
                        flush=True,
                    )
                    if mode not in best or result["rate"] > best[mode]["rate"]:
                        best[mode] = result
            off = best["off"]
            for mode in modes[1:]:
                run = best[mode]
                lat = run["latency_ms"]
                label = "per-process counters" if mode == "local" else "Redis counters"
                print(
                    f"[limits {backend}] limit far above the load ({label}): {run['rate']:,.0f} writes/s "
                    f"(p99 {lat['p99']:.1f} ms) vs no limit {off['rate']:,.0f} writes/s "
                    f"(p99 {off['latency_ms']['p99']:.1f} ms): {ratio(run['rate'], off['rate'])}; "
                    f"{args.requests:,} POST /cdp/v1/users, {args.clients} clients, best of {args.rounds}; "
                    f"{load_note()}"
                )
            print(
                f"[limits {backend}] reproduce: .venv/bin/python -m bench.limits {' '.join(argv or sys.argv[1:])}"
            )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
