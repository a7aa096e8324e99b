"""A legitimate writer beside four clients sending 8 MB bodies without any credential.

``python -m bench.abuse [--seconds 10] [--backend sqlite|postgres] [--attackers 4]``
``python -m bench.abuse --bulk 8 [--clients 4] [--backend sqlite|postgres]``

A real ``profilehub serve`` process (one worker) on a fresh database. One client writes single
profiles (``POST /cdp/v1/users``, keep-alive, one request at a time) for ``--seconds`` alone, then
for as long again while ``--attackers`` processes each send, in a loop, an 8 MB ``_bulk`` body
(valid JSON, 1,000 records) with no credential. Printed: the writer's rate and p50 in both phases
and their ratio (goal: under attack >= 0.9x of alone), the server's resident memory before, at
its highest during the run (sampled every 0.1 s) and its peak (``VmHWM``; goal < 200 MB), what the
attackers got, the command to reproduce, and the machine's load.

With ``--bulk N``, no attack: ``--clients`` processes each send N *authenticated* ``_bulk``
bodies of the worst shape for memory (1,000 records of ``WIDE_ATTRIBUTES`` small attributes, just
under the default body limit), one after another. Printed: the server's RSS before, highest while
they are sent (sampled every 0.1 s), ``VmHWM``, and after (goal < 200 MB throughout), the bodies'
answers and time per body.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.backends import fresh_database
from bench.figures import latency_ms, ratio
from bench.machine import command_line, cpus, exclusive_run, load_note
from bench.run_http import free_port, server
from profilehub.auth import CredentialKind, create_credential
from profilehub.orgs import create_org
from profilehub.store.database import Database

OUT = Path(__file__).resolve().parent / "out"
ORG_ID = 4321
BODY_BYTES = 8 * 1024 * 1024 - 4096  # just under the default PROFILEHUB_MAX_BODY_BYTES


def attack_body() -> bytes:
    """1,000 write records padded to ~8 MB: what a bulk client may legitimately send, minus the key."""
    pad = "x" * ((BODY_BYTES - 200_000) // 1000)
    records = [
        {"orgId": ORG_ID, "region": "EU", "ids": {"crm_id": f"A-{i}"}, "upsert": {"profile": {"pad": pad}}}
        for i in range(1000)
    ]
    return orjson.dumps(records)


WIDE_ATTRIBUTES = 700


def wide_body(round_: int, client: int) -> bytes:
    """1,000 records of ``WIDE_ATTRIBUTES`` small attributes each (about 7 MB): the most Python
    objects a body under the limit can make the server build, within the per-record caps."""
    attrs = {f"a{j}": j for j in range(WIDE_ATTRIBUTES)}
    records = [
        {
            "orgId": ORG_ID,
            "region": "EU",
            "ids": {"crm_id": f"B-{client}-{round_}-{i}"},
            "upsert": {"profile": attrs},
        }
        for i in range(1000)
    ]
    return orjson.dumps(records)


def bulk_client(port: int, apikey: str, rounds: int, client: int, results: Any) -> None:
    """Send ``rounds`` authenticated wide bodies, one after another; count answers, time each."""
    headers = {"apikey": apikey, "scopes": "profile.write", "Content-Type": "application/json"}
    counts: dict[str, int] = {}
    seconds: list[float] = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as http:
        for round_ in range(rounds):
            body = wide_body(round_, client)
            started = time.perf_counter()
            response = http.post("/cdp/v1/users/_bulk", content=body, headers=headers)
            seconds.append(time.perf_counter() - started)
            outcome = str(response.status_code)
            if response.status_code == 200:
                written = sum(1 for item in response.json() if item["status"] == 200)
                outcome = f"200 ({written} written)"
            counts[outcome] = counts.get(outcome, 0) + 1
    results.put((counts, seconds, len(body)))


@contextmanager
def _served(backend: str) -> Iterator[tuple[int, str, subprocess.Popen[bytes]]]:
    """``profilehub serve`` (one worker, no access log) on a fresh database holding the bench's
    org: yields its port, a ``profile.write`` API key and the server process."""
    OUT.mkdir(exist_ok=True)
    with fresh_database(backend, OUT) as url:
        db = Database(url)
        db.write(lambda c: create_org(c, ORG_ID, "Abuse bench", ["EU"]))
        apikey = db.write(
            lambda c: create_credential(c, ORG_ID, CredentialKind.APIKEY, "profile.write")
        ).secret
        db.close()
        port = free_port()
        cmd = [
            str(Path(sys.executable).parent / "profilehub"),
            "serve",
            "--port",
            str(port),
            "--no-access-log",
        ]
        with server(cmd, url, port, OUT / "abuse-server.log") as process:
            yield port, apikey, process


def run_bulk(backend: str, rounds: int, clients: int) -> dict[str, Any]:
    with _served(backend) as (port, apikey, process):
        writer(port, apikey, 1.0, 0)  # warm: the first requests' imports and caches
        rss_before = _status_kb(process.pid, "VmRSS")
        sampler = RssSampler(process.pid)
        sampler.start()
        results: Any = multiprocessing.Queue()
        procs = [
            multiprocessing.Process(target=bulk_client, args=(port, apikey, rounds, c, results))
            for c in range(clients)
        ]
        started = time.monotonic()
        for p in procs:
            p.start()
        answers: dict[str, int] = {}
        per_body: list[float] = []
        body_bytes = 0
        for _ in procs:
            counts, seconds, body_bytes = results.get(timeout=3600)
            per_body += seconds
            for status, count in counts.items():
                answers[status] = answers.get(status, 0) + count
        for p in procs:
            p.join()
        wall = time.monotonic() - started
        time.sleep(1.0)
        sampler.running = False
        sampler.join()
        rss_after = _status_kb(process.pid, "VmRSS")
        peak = _status_kb(process.pid, "VmHWM")
    return {
        "backend": backend,
        "clients": clients,
        "bodies": clients * rounds,
        "body_bytes": body_bytes,
        "answers": answers,
        "wall_seconds": wall,
        "seconds_per_body": latency_ms(per_body),
        "rss_mb": {
            "before": rss_before / 1024,
            "highest": sampler.highest_kb / 1024,
            "peak": peak / 1024,
            "after": rss_after / 1024,
        },
    }


def bulk_main(args: argparse.Namespace) -> None:
    reproduce = (
        f"{Path(sys.executable).name} -m bench.abuse --bulk {args.bulk} --clients {args.clients} "
        f"--backend {args.backend}"
    )
    with exclusive_run(command_line()):
        load_before = load_note()
        result = run_bulk(args.backend, args.bulk, args.clients)
    rss, took = result["rss_mb"], result["seconds_per_body"]
    print(
        f"bulk memory bench ({args.backend}): {args.clients} clients x {args.bulk} authenticated bodies of "
        f"{result['body_bytes'] / 1e6:.1f} MB (1,000 records x {WIDE_ATTRIBUTES} attributes)"
    )
    print(
        f"  answers: {result['answers']}; {result['wall_seconds']:.1f} s in all, per body p50 "
        f"{took['p50'] / 1000:.1f} s, p99 {took['p99'] / 1000:.1f} s (queueing included)"
    )
    print(
        f"  server RSS: {rss['before']:.0f} MB before, highest {rss['highest']:.0f} MB while sending, "
        f"peak {rss['peak']:.0f} MB (VmHWM), {rss['after']:.0f} MB 1 s after (goal < 200 MB)"
    )
    print(f"  {load_before} before; {load_note()} after")
    print(f"  reproduce: {reproduce}")
    print(orjson.dumps(result).decode())


def attacker(port: int, stop_at: float, results: Any) -> None:
    """Send the body without a credential, over and over; count the answers by status."""
    body = attack_body()
    head = (
        "POST /cdp/v1/users/_bulk HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    counts: dict[str, int] = {}
    while time.monotonic() < stop_at:
        outcome = "reset"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(head + body)
                answer = sock.recv(64)
                outcome = answer[9:12].decode() if answer.startswith(b"HTTP/1.1 ") else "closed"
        except OSError:
            pass  # refused before the whole body was sent: the server closed on us
        counts[outcome] = counts.get(outcome, 0) + 1
    cpu = os.times()
    results.put((counts, cpu.user + cpu.system))


def writer(port: int, apikey: str, seconds: float, first: int) -> dict[str, Any]:
    latencies: list[float] = []
    headers = {"apikey": apikey, "scopes": "profile.write", "Content-Type": "application/json"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        stop_at = time.monotonic() + seconds
        n = first
        while time.monotonic() < stop_at:
            body = {
                "orgId": ORG_ID,
                "region": "EU",
                "ids": {"crm_id": f"W-{n}"},
                "upsert": {"profile": {"n": n}},
            }
            started = time.perf_counter()
            response = client.post("/cdp/v1/users", content=orjson.dumps(body), headers=headers)
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"the legitimate write failed: {response.status_code} {response.text}")
            n += 1
    return {"writes": len(latencies), "per_second": len(latencies) / seconds, **latency_ms(latencies)}


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.highest_kb = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            self.highest_kb = max(self.highest_kb, _status_kb(self.pid, "VmRSS"))
            time.sleep(0.1)


def run(backend: str, seconds: float, attackers: int) -> dict[str, Any]:
    with _served(backend) as (port, apikey, process):
        alone = writer(port, apikey, seconds, 0)
        rss_before = _status_kb(process.pid, "VmRSS")
        server_cpu = _cpu_seconds(process.pid)
        sampler = RssSampler(process.pid)
        sampler.start()
        results: Any = multiprocessing.Queue()
        stop_at = time.monotonic() + seconds
        procs = [
            multiprocessing.Process(target=attacker, args=(port, stop_at, results)) for _ in range(attackers)
        ]
        for p in procs:
            p.start()
        time.sleep(0.5)  # the attackers are sending before the writer is timed
        attacked = writer(port, apikey, seconds - 0.5, 1_000_000)
        server_cpu = _cpu_seconds(process.pid) - server_cpu
        answers: dict[str, int] = {}
        attackers_cpu = 0.0
        for _ in procs:
            counts, cpu = results.get(timeout=120)
            attackers_cpu += cpu
            for status, count in counts.items():
                answers[status] = answers.get(status, 0) + count
        for p in procs:
            p.join()
        sampler.running = False
        sampler.join()
        peak = _status_kb(process.pid, "VmHWM")
    return {
        "backend": backend,
        "alone": alone,
        "attacked": attacked,
        "attackers": attackers,
        "attack_answers": answers,
        # CPU seconds during the attack phase: where the machine's time went.
        "cpu_seconds": {"server": server_cpu, "attackers": attackers_cpu, "available": seconds * cpus()},
        "rss_mb": {"before": rss_before / 1024, "highest": sampler.highest_kb / 1024, "peak": peak / 1024},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.abuse", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="Length of each phase.")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--attackers", type=int, default=4)
    parser.add_argument(
        "--bulk",
        type=int,
        default=0,
        metavar="N",
        help="Instead: each client sends N authenticated wide bodies.",
    )
    parser.add_argument("--clients", type=int, default=4, help="With --bulk: clients sending at once.")
    args = parser.parse_args(argv)
    if args.bulk:
        bulk_main(args)
        return
    reproduce = f"{Path(sys.executable).name} -m bench.abuse --seconds {args.seconds:g} --backend {args.backend} --attackers {args.attackers}"
    with exclusive_run(command_line()):
        load_before = load_note()
        result = run(args.backend, args.seconds, args.attackers)
    alone, attacked, rss = result["alone"], result["attacked"], result["rss_mb"]
    print(f"abuse bench ({args.backend}, {args.seconds:g} s per phase)")
    print(
        f"  writer alone:        {alone['per_second']:.0f} writes/s, p50 {alone['p50']:.1f} ms, p99 {alone['p99']:.1f} ms"
    )
    print(
        f"  with {args.attackers} attackers:    {attacked['per_second']:.0f} writes/s, p50 {attacked['p50']:.1f} ms, "
        f"p99 {attacked['p99']:.1f} ms -> {ratio(attacked['per_second'], alone['per_second'])} of alone (goal >= 0.9x)"
    )
    print(f"  attackers' 8 MB bodies, by answer: {result['attack_answers']}")
    cpu = result["cpu_seconds"]
    print(
        f"  CPU during the attack: server {cpu['server']:.1f} s, attackers {cpu['attackers']:.1f} s, "
        f"of {cpu['available']:.0f} CPU-seconds on this machine (the attackers run here too)"
    )
    print(
        f"  server RSS: {rss['before']:.0f} MB before the attack, highest {rss['highest']:.0f} MB during it, "
        f"peak {rss['peak']:.0f} MB (goal < 200 MB)"
    )
    print(f"  {load_before} before; {load_note()} after")
    print(f"  reproduce: {reproduce}")
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
