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
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.abuse import _cpu_seconds
from bench.backends import fresh_database
from bench.figures import ratio
from bench.generate import ORG_ID, dataset
from bench.machine import command_line, exclusive_run, load_note
from bench.run_http import ROOT, free_port, load, new_store, server
from profilehub.ratelimit import (
    Counters,
    LocalCounters,
    RateLimit,
    RateLimiter,
    RedisCounters,
    set_rate_limit,
)
from profilehub.store.database import Database

OUT = Path(__file__).resolve().parent / "out"
FAR_ABOVE = (1_000_000, 1_000_000_000)


def one_run(backend: str, mode: str, redis_url: str, requests: int, clients: int) -> dict[str, Any]:
    data = dataset(OUT, max(requests, 1000), seed=11)
    with fresh_database(backend, OUT) as url:
        apikey = new_store(url)
        if mode != "off":
            db = Database(url)
            db.write(lambda c: set_rate_limit(c, ORG_ID, *FAR_ABOVE))
            db.close()
        port = free_port()
        serve = [str(ROOT / ".venv/bin/profilehub"), "serve", "--port", str(port), "--no-access-log"]
        saved = os.environ.get("PROFILEHUB_REDIS_URL")
        os.environ["PROFILEHUB_REDIS_URL"] = redis_url if mode == "redis" else ""
        os.environ["PROFILEHUB_REDIS_PREFIX"] = f"profilehub-bench-{os.getpid()}"
        try:
            with server(serve, url, port, OUT / f"limits-{mode}.log") as process:
                cpu = _cpu_seconds(process.pid)
                result = load(port, data, apikey, clients, requests, 300.0)
                result["cpu_ms_per_write"] = (_cpu_seconds(process.pid) - cpu) * 1000 / result["requests"]
        finally:
            os.environ.pop("PROFILEHUB_REDIS_PREFIX", None)
            if saved is None:
                os.environ.pop("PROFILEHUB_REDIS_URL", None)
            else:
                os.environ["PROFILEHUB_REDIS_URL"] = saved
    if set(result["statuses"]) != {"200"}:
        raise RuntimeError(f"{mode}: not every write succeeded: {result['statuses']}")
    return result


class _Fixed:
    """The limit cache, answering the far-above limit without a database."""

    def get(self, org_id: int) -> RateLimit:
        return RateLimit(*FAR_ABOVE)

    def any(self) -> bool:
        return True


def check_us(counters: Counters, n: int = 20_000) -> float:
    """What one ``RateLimiter.check`` costs in-process, in microseconds."""

    async def run() -> float:
        limiter = RateLimiter(_Fixed(), counters)  # type: ignore[arg-type]
        await limiter.check(ORG_ID)
        start = time.perf_counter()
        for _ in range(n):
            await limiter.check(ORG_ID)
        return (time.perf_counter() - start) * 1e6 / n

    return asyncio.run(run())


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
            cpu: dict[str, list[float]] = {mode: [] for mode in modes}
            for round_ in range(args.rounds):
                # Each round starts with another mode, so no mode always runs after the same one.
                for mode in modes[round_ % len(modes) :] + modes[: round_ % len(modes)]:
                    result = one_run(backend, mode, args.redis, args.requests, args.clients)
                    cpu[mode].append(result["cpu_ms_per_write"])
                    print(
                        f"[limits {backend}] {mode}: {result['rate']:,.0f} writes/s, server CPU "
                        f"{result['cpu_ms_per_write']:.3f} ms/write; {load_note()}",
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
            medians = {mode: statistics.median(values) for mode, values in cpu.items()}
            print(
                f"[limits {backend}] server CPU per write (median of {args.rounds}): "
                + ", ".join(
                    f"{mode} {ms:.3f} ms ({ms / medians['off']:.2f}x)" for mode, ms in medians.items()
                )
            )
            costs = [f"per-process counters {check_us(LocalCounters()):.1f} us"]
            if args.redis:
                redis_counters = RedisCounters(args.redis, f"profilehub-bench-{os.getpid()}")
                costs.append(f"Redis counters {check_us(redis_counters):.1f} us")
            print(f"[limits {backend}] one limit check, in-process: {', '.join(costs)}")
            print(
                f"[limits {backend}] reproduce: .venv/bin/python -m bench.limits {' '.join(argv or sys.argv[1:])}"
            )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
