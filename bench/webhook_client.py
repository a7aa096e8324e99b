"""CPU per webhook request of the HTTP clients the deliverer could send with, in one run.

Each client sends ``--requests`` signed POSTs (Standard Webhooks headers, a 600-byte event body)
to a local receiver in a process of its own (a minimal asyncio HTTP/1.1 server answering 204),
``--concurrency`` at a time on kept-alive connections, as the deliverer does. The figure is the
sending process's CPU (``time.process_time``) per request, signing included: what a deliverer
takes from the machine's cores per event, beside the server's writes. The clients take turns
(the order rotates each round) so that a drift of the shared machine's load hits all alike;
each client's figure is the median of its rounds.

Clients: ``httptools`` (``profilehub.delivery.sender.WebhookSender``: the answers parsed by
httptools over asyncio connections), ``aiohttp`` (tuned: one session, ``TCPConnector`` with a
per-host limit and keep-alive, ``DummyCookieJar``, no decompression, no automatic headers, status
only), ``h11`` (h11's client state machine over the same asyncio connections) and ``httpx``
(``AsyncClient``). A client whose library is not installed is named and left out. ``--loop
uvloop`` runs them on uvloop's event loop instead of asyncio's own.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from standardwebhooks.webhooks import Webhook

from bench.machine import command_line, exclusive_run, load_note
from bench.run_http import free_port
from profilehub.delivery.sender import WebhookSender, address, signed_headers

SIGNER = Webhook("whsec_" + base64.b64encode(b"k" * 32).decode())
BODY = (
    '{"type":"profile.updated","data":{"traits":{"email":"someone@example.com"}},"pad":"' + "x" * 520 + '"}'
)
ANSWER = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n"

Post = Callable[[str, str], Awaitable[int]]  # (url, event id) -> status


async def _receive(port: int) -> None:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                writer.write(ANSWER)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(client, "127.0.0.1", port, backlog=256)
    async with server:
        await server.serve_forever()


# Each client: an async context giving a post function.


class _Httptools:
    async def __aenter__(self) -> Post:
        self.sender = WebhookSender(10, 32)

        async def post(url: str, event_id: str) -> int:
            outcome = await self.sender.post(url, SIGNER, event_id, BODY, time.time())
            return 204 if outcome.delivered else 0

        return post

    async def __aexit__(self, *exc: object) -> None:
        self.sender.close()


class _Aiohttp:
    async def __aenter__(self) -> Post:
        import aiohttp

        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=32, keepalive_timeout=30),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            raise_for_status=False,
            timeout=aiohttp.ClientTimeout(total=10),
        )

        async def post(url: str, event_id: str) -> int:
            headers = signed_headers(SIGNER, event_id, BODY, time.time())
            async with self.session.post(url, data=BODY.encode(), headers=headers) as answer:
                await answer.read()
                return answer.status

        return post

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()


class _H11:
    """h11's client state machine (sans-IO: it builds the request and parses the answer) over an
    asyncio protocol, one connection per concurrent chain, kept alive."""

    async def __aenter__(self) -> Post:
        import h11

        loop = asyncio.get_running_loop()
        idle: list[Any] = []

        class Conn(asyncio.Protocol):
            def __init__(self) -> None:
                self.h11 = h11.Connection(h11.CLIENT)
                self.waiter: asyncio.Future[int] | None = None

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def data_received(self, data: bytes) -> None:
                self.h11.receive_data(data)
                status = 0
                while True:
                    event = self.h11.next_event()
                    if event is h11.NEED_DATA:
                        return
                    if isinstance(event, h11.Response):
                        status = event.status_code
                        self.status = status
                    elif isinstance(event, h11.EndOfMessage):
                        assert self.waiter is not None
                        self.waiter.set_result(self.status)
                        return

        async def post(url: str, event_id: str) -> int:
            where = address(url)
            conn = idle.pop() if idle else None
            if conn is None:
                _, conn = await loop.create_connection(Conn, where.host, where.port)
            payload = BODY.encode()
            headers = [("host", where.host_header)]
            headers += list(signed_headers(SIGNER, event_id, BODY, time.time()).items())
            headers.append(("content-length", str(len(payload))))
            conn.waiter = loop.create_future()
            conn.transport.write(
                conn.h11.send(h11.Request(method="POST", target=where.target, headers=headers))
                + conn.h11.send(h11.Data(data=payload))
                + conn.h11.send(h11.EndOfMessage())
            )
            status = int(await conn.waiter)
            conn.h11.start_next_cycle()
            idle.append(conn)
            return status

        self.idle = idle
        return post

    async def __aexit__(self, *exc: object) -> None:
        for conn in self.idle:
            conn.transport.close()


class _Httpx:
    async def __aenter__(self) -> Post:
        import httpx

        self.client = httpx.AsyncClient(
            timeout=10, limits=httpx.Limits(max_connections=32, max_keepalive_connections=32)
        )

        async def post(url: str, event_id: str) -> int:
            headers = signed_headers(SIGNER, event_id, BODY, time.time())
            return (await self.client.post(url, content=BODY.encode(), headers=headers)).status_code

        return post

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()


CLIENTS: dict[str, tuple[str, type[Any]]] = {
    "httptools": ("httptools", _Httptools),
    "aiohttp": ("aiohttp", _Aiohttp),
    "h11": ("h11", _H11),
    "httpx": ("httpx", _Httpx),
}


async def _one(name: str, url: str, requests: int, concurrency: int) -> tuple[float, float]:
    """CPU ms and wall ms per request of ``requests`` POSTs, ``concurrency`` chains at once."""
    async with CLIENTS[name][1]() as post:
        await asyncio.gather(*(post(url, f"warm{n}") for n in range(concurrency)))  # connections open
        queue = iter(range(requests))
        statuses: list[int] = []

        async def chain() -> None:
            for n in queue:
                statuses.append(await post(url, str(n)))

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(chain() for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if statuses.count(204) != requests:
        raise RuntimeError(f"{name}: {requests - statuses.count(204)} of {requests} requests failed")
    return cpu * 1000 / requests, wall * 1000 / requests


def run(args: argparse.Namespace) -> None:
    names = [n for n in args.client or list(CLIENTS) if importlib.util.find_spec(CLIENTS[n][0])]
    missing = [n for n in args.client or list(CLIENTS) if n not in names]
    if missing:
        print(f"[webhook client] not installed, left out: {', '.join(missing)}")
    port = free_port()
    receiver = subprocess.Popen([sys.executable, "-m", "bench.webhook_client", "--receive", str(port)])
    url = f"http://127.0.0.1:{port}/hook"
    runner: Callable[[Awaitable[tuple[float, float]]], tuple[float, float]] = asyncio.run
    if args.loop == "uvloop":
        import uvloop

        runner = uvloop.run
    try:
        deadline = time.monotonic() + 10
        while True:  # the receiver listening
            try:
                runner(asyncio.open_connection("127.0.0.1", port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        figures: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                figures[name].append(runner(_one(name, url, args.requests, args.concurrency)))
                cpu, wall = figures[name][-1]
                print(
                    f"[webhook client] round {r + 1} {name}: CPU {cpu:.3f} ms, wall {wall:.3f} ms per request"
                )
        for name in names:
            cpu = statistics.median(f[0] for f in figures[name])
            wall = statistics.median(f[1] for f in figures[name])
            print(
                f"[webhook client] {name} on {args.loop}: CPU {cpu:.3f} ms per request (median of "
                f"{args.rounds} rounds of {args.requests:,}, {args.concurrency} at a time), wall {wall:.3f} ms; "
                f"{load_note()}"
            )
    finally:
        receiver.terminate()
        receiver.wait()
    print(f"[webhook client] reproduce: {args.reproduce}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook_client", description=__doc__)
    parser.add_argument("--client", choices=list(CLIENTS), action="append", help="Repeat; default: all.")
    parser.add_argument("--requests", type=int, default=2000, help="POSTs per client per round.")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--receive", type=int, help=argparse.SUPPRESS)  # the receiver's process
    args = parser.parse_args(argv)
    if args.receive:
        asyncio.run(_receive(args.receive))
        return
    args.reproduce = (
        f".venv/bin/python -m bench.webhook_client {' '.join(sys.argv[1:] if argv is None else argv)}"
    )
    with exclusive_run(command_line()):
        run(args)


if __name__ == "__main__":
    main()
