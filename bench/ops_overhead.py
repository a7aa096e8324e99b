"""What ``GET /metrics`` costs writes: ``profilehub serve`` under the same write load with metrics
off (``PROFILEHUB_METRICS=off``) and on, in alternating rounds of one run, a fresh database each.

Every request is counted and timed when metrics are on (``profilehub.metrics``), and the writer
notes each batch; the goal is at least 0.95x of the writes/s with them off. The access log is off
in both modes, so only the metrics differ. After each "on" round the server is scraped once and
its request count checked against the requests the load generator sent.

On a busy shared machine the rate of one short round moves by more than 5% from round to round,
so the run also prints what is steadier: the server's CPU time per write in each mode
(``/proc/<pid>/stat``, one worker), and what the metrics calls themselves cost, timed in-process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.abuse import _cpu_seconds
from bench.backends import fresh_database
from bench.generate import dataset
from bench.machine import command_line, exclusive_run, load_note
from bench.run_http import free_port, load, new_store, server
from profilehub.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
PROFILEHUB = str(ROOT / ".venv/bin/profilehub")
OUT = Path(__file__).resolve().parent / "out"


def _writes_counted(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "profilehub_http_requests_total" and s.labels.get("route") == "/cdp/v1/users"
    )


def _round(args: argparse.Namespace, metrics: bool) -> dict[str, Any]:
    data = dataset(OUT, args.requests, seed=7)
    with fresh_database(args.backend, OUT) as url:
        apikey = new_store(url)
        port = free_port()
        serve = [PROFILEHUB, "serve", "--port", str(port), "--workers", str(args.workers), "--no-access-log"]
        os.environ["PROFILEHUB_METRICS"] = "on" if metrics else "off"
        try:
            with server(serve, url, port, OUT / "ops-overhead-server.log") as process:
                cpu = _cpu_seconds(process.pid)
                result = load(port, data, apikey, args.clients, args.requests, args.seconds)
                result["cpu_ms_per_write"] = (_cpu_seconds(process.pid) - cpu) * 1000 / result["requests"]
                if metrics:
                    counted = _writes_counted(port)
                    if counted != result["requests"]:
                        raise RuntimeError(
                            f"/metrics counted {counted} writes, the load sent {result['requests']}"
                        )
        finally:
            os.environ.pop("PROFILEHUB_METRICS", None)
    return result


def run(args: argparse.Namespace) -> None:
    OUT.mkdir(exist_ok=True)
    rates: dict[bool, list[float]] = {False: [], True: []}
    p99: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    for n in range(args.rounds):
        # Alternate which mode goes first, so a drift in the machine's load hits both alike.
        for metrics in (False, True) if n % 2 == 0 else (True, False):
            result = _round(args, metrics)
            rates[metrics].append(result["rate"])
            p99[metrics].append(result["latency_ms"]["p99"])
            cpu[metrics].append(result["cpu_ms_per_write"])
            label = "on " if metrics else "off"
            print(
                f"[ops-overhead {args.backend}] round {n + 1} metrics {label}: {result['requests']:,} writes, "
                f"{result['rate']:,.0f}/s, p99 {result['latency_ms']['p99']:.1f} ms, "
                f"server CPU {result['cpu_ms_per_write']:.3f} ms/write, statuses {result['statuses']}"
            )
            sys.stdout.flush()
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    print(
        f"[ops-overhead {args.backend}] {args.clients} clients, {args.workers} worker(s), {args.rounds} rounds: "
        f"metrics off {off:,.0f} writes/s (p99 {statistics.median(p99[False]):.1f} ms), "
        f"on {on:,.0f} writes/s (p99 {statistics.median(p99[True]):.1f} ms): on/off {on / off:.2f}x "
        f"(medians; goal >= 0.95x); {load_note()}"
    )
    cpu_off, cpu_on = statistics.median(cpu[False]), statistics.median(cpu[True])
    calls = _metrics_call_us()
    print(
        f"[ops-overhead {args.backend}] server CPU per write: off {cpu_off:.3f} ms, on {cpu_on:.3f} ms "
        f"(on/off {cpu_on / cpu_off:.2f}x); the metrics calls of one write (request counter and "
        f"histogram, batch note) timed in-process: {calls:.1f} us, {calls / 10 / cpu_off:.2f}% of its CPU"
    )
    print(f"[ops-overhead {args.backend}] reproduce: {args.reproduce}")


def _metrics_call_us(n: int = 100_000) -> float:
    metrics = Metrics()
    started = time.perf_counter()
    for _ in range(n):
        metrics.request("POST", "/cdp/v1/users", 200, 0.004)
        metrics.batch(1, 0)  # at worst one batch per write
        metrics.written(0, 0)
    return (time.perf_counter() - started) * 1e6 / n


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ops_overhead", description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--requests", type=int, default=4000, help="Writes per round (at most).")
    parser.add_argument("--seconds", type=float, default=60.0, help="Longest a round's load runs.")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="Rounds of each mode (alternating).")
    args = parser.parse_args(argv)
    args.reproduce = (
        f".venv/bin/python -m bench.ops_overhead {' '.join(sys.argv[1:] if argv is None else argv)}"
    )
    with exclusive_run(command_line()):
        run(args)


if __name__ == "__main__":
    main()
