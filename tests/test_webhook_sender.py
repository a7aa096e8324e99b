"""The webhook sender against receivers that answer in the ways HTTP/1.1 allows: connections kept
alive and reused, a receiver closing an idle one, chunked and interim answers, credentials in the
URL, and answers that are late or not HTTP. No database: these are the sender's own."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Callable
from email.utils import formatdate

from standardwebhooks.webhooks import Webhook

from profilehub.delivery.sender import Outcome, WebhookSender, retry_after_seconds

SIGNER = Webhook("whsec_" + base64.b64encode(b"k" * 32).decode())
NO_CONTENT = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n"
HOLD = b""  # an answer never sent


class Receiver:
    """A receiver on a thread (its own event loop): records each request's connection number,
    head and body, and sends what ``answer(request number)`` gives: (bytes, close afterwards)."""

    def __init__(self, answer: Callable[[int], tuple[bytes, bool]]) -> None:
        self.answer = answer
        self.requests: list[tuple[int, bytes, bytes]] = []
        self.connections = 0
        self.closed = threading.Event()  # set when it closes a connection after an answer
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def main() -> None:
            server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=main, daemon=True).start()
        ready.wait(10)

    def url(self, rest: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{rest}"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                self.requests.append((number, head, await reader.readexactly(length)))
                answer, close = self.answer(len(self.requests))
                if answer is HOLD:
                    await asyncio.Event().wait()
                writer.write(answer)
                await writer.drain()
                if close:
                    writer.close()
                    self.closed.set()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def headers(self, index: int) -> dict[str, str]:
        lines = self.requests[index][1].decode().split("\r\n")[1:]
        return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)


def test_requests_reuse_one_kept_alive_connection_and_carry_a_valid_signature() -> None:
    receiver = Receiver(lambda _: (NO_CONTENT, False))
    sender = WebhookSender(5)

    async def run() -> list[Outcome]:
        return [
            await sender.post(receiver.url("/hook?x=1"), SIGNER, str(n), "{}", time.time()) for n in range(5)
        ]

    assert asyncio.run(run()) == [Outcome(True)] * 5
    receiver.stop()
    assert receiver.connections == 1
    assert receiver.requests[0][1].startswith(b"POST /hook?x=1 HTTP/1.1\r\n")
    headers = receiver.headers(0)
    assert headers["host"] == f"127.0.0.1:{receiver.port}" and headers["webhook-id"] == "0"
    SIGNER.verify(receiver.requests[0][2], headers)  # raises unless the signature verifies


def test_an_idle_connection_the_receiver_closed_is_replaced_and_the_event_sent_once() -> None:
    # The first answer keeps the connection alive as far as the sender can tell; then the
    # receiver closes it (an idle timeout) before the sender's loop has noticed.
    receiver = Receiver(lambda n: (NO_CONTENT, n == 1))
    sender = WebhookSender(5)

    async def run() -> list[Outcome]:
        first = await sender.post(receiver.url(), SIGNER, "1", "{}", 1.7e9)
        assert receiver.closed.wait(10)  # blocks this loop: the close is not read before the next post
        return [first, await sender.post(receiver.url(), SIGNER, "2", "{}", 1.7e9)]

    assert asyncio.run(run()) == [Outcome(True), Outcome(True)]
    receiver.stop()
    assert [(c, receiver.headers(i)["webhook-id"]) for i, (c, _, _) in enumerate(receiver.requests)] == [
        (1, "1"),
        (2, "2"),
    ]


def test_interim_and_chunked_answers_are_read_whole_and_the_connection_kept() -> None:
    chunked = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5\r\nthank\r\n3;x=y\r\nyou\r\n0\r\ntrailer: 1\r\n\r\n"
    )
    receiver = Receiver(lambda _: (chunked, False))
    sender = WebhookSender(5)

    async def run() -> list[Outcome]:
        return [await sender.post(receiver.url(), SIGNER, str(n), "{}", 1.7e9) for n in range(3)]

    assert asyncio.run(run()) == [Outcome(True)] * 3
    receiver.stop()
    assert receiver.connections == 1


def test_answers_without_a_length_or_too_long_to_read_count_and_their_connection_is_not_reused() -> None:
    answers = {
        1: (b"HTTP/1.1 200 OK\r\n\r\nthanks", True),  # the body runs to the connection's end
        2: (b"HTTP/1.1 202 Accepted\r\ncontent-length: 200000\r\n\r\n" + b"x" * 200_000, False),
        3: (b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok", False),
        4: (NO_CONTENT, False),
    }
    receiver = Receiver(lambda n: answers[n])
    sender = WebhookSender(5)

    async def run() -> list[Outcome]:
        return [await sender.post(receiver.url(), SIGNER, str(n), "{}", 1.7e9) for n in range(4)]

    assert asyncio.run(run()) == [Outcome(True)] * 4
    receiver.stop()
    assert [c for c, _, _ in receiver.requests] == [1, 2, 3, 4]


def test_credentials_in_the_url_are_sent_as_basic_authentication() -> None:
    receiver = Receiver(lambda _: (NO_CONTENT, False))
    sender = WebhookSender(5)
    url = f"http://hook%40user:s%3Acret@127.0.0.1:{receiver.port}/in"

    async def run() -> Outcome:
        return await sender.post(url, SIGNER, "1", "{}", 1.7e9)

    assert asyncio.run(run()) == Outcome(True)
    receiver.stop()
    assert receiver.headers(0)["authorization"] == "Basic " + base64.b64encode(b"hook@user:s:cret").decode()


def test_failures_say_what_happened() -> None:
    answers = {
        1: (b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\noops", False),
        2: (b"hello\r\n\r\n", True),
        3: (HOLD, False),
    }
    receiver = Receiver(lambda n: answers[n])
    sender = WebhookSender(0.5)

    async def run() -> list[Outcome]:
        return [await sender.post(receiver.url(), SIGNER, str(n), "{}", 1.7e9) for n in (1, 2, 3)]

    http_500, not_http, late = asyncio.run(run())
    receiver.stop()
    assert http_500 == Outcome(False, "HTTP 500")
    assert not not_http.delivered and "not an HTTP/1.x answer" in (not_http.error or "")
    assert late == Outcome(False, "timed out")


def test_a_port_out_of_range_is_a_failed_attempt_not_an_error_of_the_round() -> None:
    """An endpoint stored with such a port (before URLs were checked for it) fails its attempts,
    so it is retried and disabled as documented, instead of raising out of every round."""
    sender = WebhookSender(5)

    async def run() -> Outcome:
        return await sender.post("http://127.0.0.1:99999/in", SIGNER, "1", "{}", 1.7e9)

    outcome = asyncio.run(run())
    assert not outcome.delivered and "port" in (outcome.error or "")


def test_retry_after_reads_seconds_and_dates_and_ignores_junk() -> None:
    now = 1_800_000_000.0
    assert retry_after_seconds("120", now) == 120
    assert retry_after_seconds(" 0 ", now) == 0
    assert retry_after_seconds(formatdate(now + 90, usegmt=True), now) == 90
    assert retry_after_seconds(formatdate(now - 90, usegmt=True), now) == 0  # a date past: at once
    for junk in (None, "", "-5", "1.5", "\u00b2", "soon", "Sun, 99 Foo 2026 00:00:00 GMT"):
        assert retry_after_seconds(junk, now) is None, junk
