"""CRM person upserts beside CDP writes: ``python -m bench.crm`` (both databases, ~2 minutes).

One ``profilehub serve`` per database (per ``--workers`` count given: ``--workers 1 --workers 2``
runs both servers side by side, each on its own fresh database, their rounds alternating) takes, from N keep-alive clients (default 64), CDP writes
(``POST /cdp/v1/users`` by email) and CRM upserts (``PUT /v2/crm/people?matchingAttribute=email``)
in alternating rounds (CRM, CDP, CDP, CRM, CRM, CDP) after an untimed warm-up of each, each stream
1 in 4 a returning person, the people of the two streams apart. It prints each round, both streams' mean rates and latencies side
by side, the CRM/CDP ratio, the machine's load, and the reproduce command.
The CDP stream is the same-run baseline: the goal is CRM at >= 0.8x its writes/s, with p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg

from bench.backends import fresh_database
from bench.figures import ratio
from bench.generate import ORG_ID, REGION
from bench.machine import command_line, cpus, exclusive_run, load_note
from bench.run_http import ROOT, free_port, group_cpu, server, settle
from bench.run_import import setup_org
from profilehub.auth import CredentialKind, create_credential
from profilehub.store.database import Database

OUT = Path(__file__).resolve().parent / "out"
CRM_PATH = "/v2/crm/people?matchingAttribute=email"


def bodies(kind: str, count: int, seed: int = 11, people_of: str = "person") -> list[dict[str, Any]]:
    """``count`` write bodies; each 4th names a person written before (a returning person).
    ``people_of``: whose people (the warm-up's are apart from the measured ones)."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    people = 0
    for n in range(count):
        if n % 4 == 3:
            who = rng.randrange(people)
        else:
            who, people = people, people + 1
        email = f"{kind}.{people_of}.{who}@bench.example"
        if kind == "cdp":
            out.append(
                {
                    "orgId": ORG_ID,
                    "region": REGION,
                    "ids": {"email": email},
                    "upsert": {"profile": {"first_name": f"P{who}", "visits": n}},
                }
            )
        else:
            out.append({"firstName": f"P{who}", "lastName": "Bench", "emails": [email], "jobTitle": f"t{n}"})
    return out


def _load(
    port: int, file: Path, auth: list[str], method: str, path: str, clients: int, count: int
) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "bench.load", "--port", str(port), "--file", str(file), *auth,
        "--method", method, "--path", path, "--clients", str(clients), "--requests", str(count),
        "--seconds", "300",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=420, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
    return result


def _credentials(url: str) -> tuple[str, str]:
    setup_org(url)
    db = Database(url)
    try:
        key = db.write(lambda c: create_credential(c, ORG_ID, CredentialKind.APIKEY, "profile.write")).secret
        token = db.write(lambda c: create_credential(c, ORG_ID, CredentialKind.TOKEN, "crm:write")).secret
    finally:
        db.close()
    return key, token


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _database_cpu(url: str) -> float:
    """PostgreSQL: CPU time the server processes of ``url``'s database have used so far (the
    server runs on this machine; its shared background processes left out); SQLite: 0 (its work
    is the server process's own)."""
    if not url.startswith("postgresql"):
        return 0.0
    total = 0.0
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        pids = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    for (pid,) in pids:
        try:
            total += _cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue  # a connection closed meanwhile
    return total


def _stream(
    process: subprocess.Popen[bytes], expected: set[str], run: Callable[[], dict[str, Any]], url: str = ""
) -> dict[str, Any]:
    """One stream of requests, with the server's (all its processes'), the database's and the load
    generator's CPU time per request; refuses a run that another process answered (the server
    died, or lost its port to another program) or that was refused."""
    cpu, db_cpu = group_cpu(process.pid), _database_cpu(url)
    result = run()
    per = 1000 / max(result["requests"], 1)
    result["cpu_ms"] = (group_cpu(process.pid) - cpu) * per
    result["db_cpu_ms"] = (_database_cpu(url) - db_cpu) * per
    result["load_cpu_ms"] = result["cpu_seconds"] * per
    if process.poll() is not None:
        raise RuntimeError(f"the server exited with {process.returncode} during the run")
    if not set(result["statuses"]) <= expected:
        raise RuntimeError(f"unexpected answers {result['statuses']} (expected {sorted(expected)})")
    return result


def _line(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    return (
        f"{r['requests']:,} in {r['seconds']:.1f} s: {r['rate']:,.0f}/s, "
        f"p50/p99 {lat['p50']:.1f}/{lat['p99']:.1f} ms, server CPU {r['cpu_ms']:.2f} ms/request, "
        + (f"database CPU {r['db_cpu_ms']:.2f} ms/request, " if r["db_cpu_ms"] else "")
        + f"load generator CPU {r['load_cpu_ms']:.2f} ms/request, statuses {r['statuses']}"
    )


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """A stream's rounds as one: the mean rate and CPU per request, the worst p99 of a round."""
    return {
        "rate": statistics.mean(r["rate"] for r in rounds),
        "cpu_ms": statistics.mean(r["cpu_ms"] for r in rounds),
        "db_cpu_ms": statistics.mean(r["db_cpu_ms"] for r in rounds),
        "load_cpu_ms": statistics.mean(r["load_cpu_ms"] for r in rounds),
        "p50": statistics.mean(r["latency_ms"]["p50"] for r in rounds),
        "p99": max(r["latency_ms"]["p99"] for r in rounds),
        "requests": sum(r["requests"] for r in rounds),
        "rounds": rounds,
    }


def _rates(s: dict[str, Any]) -> str:
    return ", ".join(f"{r['rate']:,.0f}" for r in s["rounds"])


def _warm_up(port: int, key: str, token: str, clients: int, warmup: int) -> None:
    """Untimed: the first requests of a new server and database (connections, caches, the
    planner's first statistics) are slow, and would fall on the first round's stream."""
    for kind in ("crm", "cdp"):
        file = OUT / f"crm-bench-{kind}-warm.ndjson"
        file.write_bytes(b"".join(orjson.dumps(b) + b"\n" for b in bodies(kind, warmup, 5, "warm")))
        auth = ["--apikey", key] if kind == "cdp" else ["--bearer", token]
        method, path = ("POST", "/cdp/v1/users") if kind == "cdp" else ("PUT", CRM_PATH)
        _load(port, file, auth, method, path, clients, warmup)


def _order(workers: list[int], rounds: int) -> list[tuple[int, str]]:
    """The rounds' order: round 0 each server's CRM then CDP stream, round 1 the same backwards,
    ... (ABBA), so that drift over the run falls on every server and stream alike."""
    first = [(w, kind) for w in workers for kind in ("crm", "cdp")]
    return [unit for n in range(rounds) for unit in (first if n % 2 == 0 else first[::-1])]


def bench_crm(
    backend: str,
    requests: int,
    clients: int,
    reproduce: str,
    rounds: int = 3,
    warmup: int = 500,
    workers: list[int] | None = None,
) -> dict[str, Any]:
    """``requests`` of each stream, in ``rounds`` rounds a stream, CRM and CDP rounds alternating
    (CRM, CDP, CDP, CRM, CRM, CDP, ...): whatever drifts over a run (the server warming up, the
    shared machine's load) falls on both streams alike, where one stream after the other gave the
    first one the cold server (0.71x and 1.26x in two runs of the same build an hour apart).
    ``workers``: one server per count (``serve --workers N``), each on its own fresh database,
    all running for the whole run and taking their rounds in turn."""
    workers = workers or [1]
    OUT.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[Path]] = {}
    for kind in ("cdp", "crm"):
        # Each round continues the stream: its returning people include earlier rounds' people.
        lines = [orjson.dumps(b) + b"\n" for b in bodies(kind, requests)]
        per = -(-len(lines) // rounds)
        files[kind] = []
        for n in range(rounds):
            path = OUT / f"crm-bench-{kind}-{n}.ndjson"
            path.write_bytes(b"".join(lines[n * per : (n + 1) * per]))
            files[kind].append(path)
    done: dict[tuple[int, str], list[dict[str, Any]]] = {(w, k): [] for w in workers for k in ("cdp", "crm")}
    with contextlib.ExitStack() as stack:
        servers: dict[int, tuple[str, str, str, int, subprocess.Popen[bytes]]] = {}
        for w in workers:
            url = stack.enter_context(fresh_database(backend, OUT))
            key, token = _credentials(url)
            port = free_port()
            serve = [str(ROOT / ".venv/bin/profilehub"), "serve", "--port", str(port), "--no-access-log"]
            process = stack.enter_context(
                server([*serve, "--workers", str(w)], url, port, OUT / f"crm-bench-server-{w}.log")
            )
            servers[w] = (url, key, token, port, process)
        for _url, key, token, port, _ in servers.values():
            _warm_up(port, key, token, clients, warmup)
        for *_, process in servers.values():
            settle(process.pid)
        load_before = load_note()
        for w, kind in _order(workers, rounds):
            url, key, token, port, process = servers[w]
            file = files[kind][len(done[w, kind])]
            count = sum(1 for _ in file.open("rb"))
            auth = ["--apikey", key] if kind == "cdp" else ["--bearer", token]
            method, path = ("POST", "/cdp/v1/users") if kind == "cdp" else ("PUT", CRM_PATH)
            result = _stream(
                process,
                {"200"} if kind == "cdp" else {"200", "201"},
                lambda file=file, count=count, auth=auth, method=method, path=path, port=port: _load(
                    port, file, auth, method, path, clients, count
                ),
                url,
            )
            done[w, kind].append(result)
            print(
                f"[crm {backend}]   round {sum(map(len, done.values()))}, {w} worker(s), {kind.upper()}: "
                f"{_line(result)}"
            )
            sys.stdout.flush()
        load_after = load_note()
    out: dict[str, Any] = {"backend": backend, "workers": {}}
    print(
        f"[crm {backend}] {clients} keep-alive clients, 1 in 4 a returning person, "
        f"{rounds} alternating rounds a stream and server; before: {load_before}; after: {load_after}"
    )
    for w in workers:
        cdp, crm = _summary(done[w, "cdp"]), _summary(done[w, "crm"])
        out["workers"][w] = {"cdp": cdp, "crm": crm}
        head = f"[crm {backend}] serve --workers {w}:"
        print(head)
        for name, s in (
            ("CDP POST /cdp/v1/users (baseline)", cdp),
            ("CRM PUT /v2/crm/people by email  ", crm),
        ):
            print(
                f"[crm {backend}]   {name}: {s['requests']:,} requests, {s['rate']:,.0f}/s (rounds {_rates(s)}), "
                f"p50 {s['p50']:.1f} ms, worst round's p99 {s['p99']:.1f} ms, server CPU {s['cpu_ms']:.2f} ms/request"
                + (f", database CPU {s['db_cpu_ms']:.2f} ms/request" if s["db_cpu_ms"] else "")
                + f", load generator CPU {s['load_cpu_ms']:.2f} ms/request"
            )
            # Closed loop: each client waits for its answer, so the mean latency is clients / rate
            # (Little's law); the rate cannot pass the CPUs over all processes' CPU a request.
            every = s["cpu_ms"] + s["db_cpu_ms"] + s["load_cpu_ms"]
            print(
                f"[crm {backend}]     {clients} clients at {s['rate']:,.0f}/s wait "
                f"{clients * 1000 / s['rate']:.0f} ms on average (Little's law); CPU of every process "
                f"{every:.2f} ms/request: {cpus()} CPUs answer at most {cpus() * 1000 / every:,.0f}/s"
            )
        met = "met" if max(crm["p99"], cdp["p99"]) < 50 else "not met"
        print(
            f"[crm {backend}]   CRM/CDP writes/s {ratio(crm['rate'], cdp['rate'])} (goal >= 0.8x), "
            f"server CPU a request {ratio(crm['cpu_ms'], cdp['cpu_ms'])}, "
            + (f"database CPU {ratio(crm['db_cpu_ms'], cdp['db_cpu_ms'])}, " if cdp["db_cpu_ms"] else "")
            + f"p99 CRM {crm['p99']:.1f} / CDP {cdp['p99']:.1f} ms: goal p99 < 50 ms {met} with --workers {w}"
        )
    print(f"[crm {backend}] reproduce: {reproduce}")
    sys.stdout.flush()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.crm", description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append", help="Repeatable.")
    parser.add_argument("--requests", type=int, default=6000, help="Requests of each stream.")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="Rounds of each stream, alternating.")
    parser.add_argument("--warmup", type=int, default=500, help="Untimed requests of each stream first.")
    parser.add_argument(
        "--workers",
        type=int,
        action="append",
        help="Server processes (serve --workers N); repeatable: one server per count, side by side (default 1).",
    )
    args = parser.parse_args(argv)
    workers = args.workers or [1]
    with exclusive_run(command_line()):
        for backend in args.backend or ["sqlite", "postgres"]:
            reproduce = (
                f".venv/bin/python -m bench.crm --backend {backend} --requests {args.requests} "
                f"--clients {args.clients} --rounds {args.rounds} --warmup {args.warmup}"
                + "".join(f" --workers {w}" for w in workers)
            )
            bench_crm(backend, args.requests, args.clients, reproduce, args.rounds, args.warmup, workers)


if __name__ == "__main__":
    main()
