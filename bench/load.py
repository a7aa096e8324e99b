"""An HTTP/1.1 load generator for 127.0.0.1 only: N keep-alive clients, bounded in count and time.

``python -m bench.load --port P --file records.ndjson --apikey K --clients 64 --requests 20000``
sends each record as a ``POST /cdp/v1/users`` body (or, with ``--method PUT --path
/v2/crm/people?matchingAttribute=email --bearer T``, as a CRM person upsert) and prints one JSON line: throughput, latency
percentiles, statuses. Hand-rolled on asyncio streams (no client library), so the generator spends
little of the machine's two cores that the server needs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from pathlib import Path

import orjson

from bench.figures import latency_ms
from bench.machine import command_line, exclusive_run


def _request(path: str, body: bytes, headers: dict[str, str], method: str = "POST") -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{head}\r\n"
    ).encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def run(
    port: int,
    path: str,
    bodies: list[bytes],
    headers: dict[str, str],
    clients: int,
    deadline: float,
    method: str = "POST",
) -> dict[str, object]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    next_index = 0

    async def client() -> None:
        nonlocal next_index
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while next_index < len(bodies) and time.monotonic() < deadline:
                body = bodies[next_index]
                next_index += 1
                started = time.perf_counter()
                writer.write(_request(path, body, headers, method))
                status = await _read_response(reader)
                latencies.append(time.perf_counter() - started)
                statuses[status] += 1
        finally:
            writer.close()

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client() for _ in range(clients)))
    seconds = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "seconds": seconds,
        # The generator's own CPU while it sent (its start-up left out): it shares the CPUs.
        "cpu_seconds": time.process_time() - cpu,
        "rate": len(latencies) / seconds,
        "latency_ms": latency_ms(latencies),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--file", type=Path, required=True)
    parser.add_argument("--apikey", help="A CDP API key (scope profile.write); or --bearer.")
    parser.add_argument("--bearer", help="A CRM token, sent as Authorization: Bearer (instead of --apikey).")
    parser.add_argument("--method", default="POST", choices=["POST", "PUT"])
    parser.add_argument("--path", default="/cdp/v1/users")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="Stop after this long whatever the count."
    )
    args = parser.parse_args(argv)
    with exclusive_run(command_line()):
        run_load(args)


def run_load(args: argparse.Namespace) -> None:
    bodies: list[bytes] = []
    with args.file.open("rb") as f:
        for line in f:
            if len(bodies) >= args.requests:
                break
            bodies.append(line.rstrip(b"\n"))
    if (args.apikey is None) == (args.bearer is None):
        raise SystemExit("give one of --apikey and --bearer")
    headers = (
        {"apikey": args.apikey, "scopes": "profile.write"}
        if args.apikey
        else {"Authorization": f"Bearer {args.bearer}"}
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # the plain loop works too, a little slower
        pass
    deadline = time.monotonic() + args.seconds
    result = asyncio.run(run(args.port, args.path, bodies, headers, args.clients, deadline, args.method))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
