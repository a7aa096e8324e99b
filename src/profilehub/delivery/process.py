"""The deliverer process ``profilehub serve`` starts beside each server process
(``PROFILEHUB_SERVE_DELIVERS=process``, the default).

Why a process and not a thread: a server process spends its interpreter on requests and its
single writer; a deliverer thread in it takes the same interpreter lock for every round and every
request it sends, and the writes slowed by a third (bench/NOTES-delivery.md). In a process of its
own it runs on another core.

The two are tied by a pipe, the child's stdin: the server writes a byte after each commit that
wrote events (its ``EventBell``), which wakes the deliverer at once as a thread would be woken;
when the server process ends, however it ends (``kill -9`` included), the pipe closes and the
deliverer stops (cleanly: rounds under way are recorded and its leases handed back). The child
reads every setting from the environment it inherits, as the server did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.config
import os
import signal
import subprocess
import sys
import threading

from profilehub.config import Settings, SettingsError
from profilehub.delivery.runner import Deliverer
from profilehub.store.database import Database
from profilehub.store.events import EventBell

# By name: the child runs this module as ``__main__`` (``python -m``), and its lines would name
# that logger in serve's JSON log instead of this one, the server's side's.
log = logging.getLogger("profilehub.delivery.process")


class DelivererProcess:
    """The server's side: starts the child, rings it after commits with events, starts another
    if it ends on its own (after ``RESTART_SECONDS``: a deliverer that cannot start is not
    retried in a loop), and stops it with the server."""

    RESTART_SECONDS = 5.0

    def __init__(self, bell: EventBell, grace_seconds: float) -> None:
        self.bell = bell
        self.grace_seconds = grace_seconds
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        # Held to write to the pipe and to replace or close it: a closed pipe's descriptor number
        # may be reused at once by another file, which a late wake-up must never write to.
        self._lock = threading.Lock()
        self._watcher = threading.Thread(target=self._watch, name="profilehub-deliverer", daemon=True)

    def start(self) -> None:
        with self._lock:
            self._spawn()
        self.bell.listen(self._ring)
        self._watcher.start()

    def _spawn(self) -> None:
        # The server's log level (from --log-level or the environment) for the child's lines too.
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "profilehub.delivery.process"],
            stdin=subprocess.PIPE,
            env={**os.environ, "PROFILEHUB_LOG_LEVEL": level},
            # A process group of its own: a terminal's Ctrl-C reaches the whole foreground group,
            # and a deliverer in it ended before its server did (or died mid-import, a traceback)
            # and was reported as one that failed. Its stop is the server's, through the pipe.
            process_group=0,
        )
        assert self.process.stdin is not None
        os.set_blocking(self.process.stdin.fileno(), False)
        log.info("delivery: deliverer process %d started", self.process.pid)

    def _ring(self) -> None:
        """In the writer's thread after a commit with events: never blocks. A full pipe already
        holds a wake-up the child has not read; a closed one is a child that has gone."""
        with self._lock:
            stdin = self.process.stdin if self.process is not None else None
            if stdin is None or stdin.closed:
                return
            with contextlib.suppress(OSError):  # full (BlockingIOError), or the child gone
                os.write(stdin.fileno(), b"\x01")

    def _watch(self) -> None:
        while True:
            process = self.process
            assert process is not None
            code = process.wait()
            if self._stopping.is_set():
                return
            log.error(
                "delivery: the deliverer process %d ended (exit status %s); another starts in %.0f s",
                process.pid,
                code,
                self.RESTART_SECONDS,
            )
            with self._lock:
                if process.stdin is not None:
                    with contextlib.suppress(OSError):
                        process.stdin.close()
            if self._stopping.wait(self.RESTART_SECONDS):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self._spawn()

    def stop(self) -> None:
        self._stopping.set()
        self.bell.unlisten(self._ring)
        with self._lock:
            process = self.process
            if process is None:
                return
            if process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()  # end of input: the child finishes its rounds and stops
        try:
            process.wait(self.grace_seconds)
        except subprocess.TimeoutExpired:
            log.warning("delivery: deliverer process %d did not stop; killed", process.pid)
            process.kill()
            process.wait()
        self._watcher.join(5)


async def _deliver(deliverer: Deliverer, bell: EventBell) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Sent to this process itself (it has a process group of its own, so a terminal's Ctrl-C goes
    # to the server, whose shutdown closes the pipe).
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    stdin = sys.stdin.fileno()
    os.set_blocking(stdin, False)

    def woken() -> None:
        try:
            data = os.read(stdin, 4096)
        except BlockingIOError:
            return
        if not data:  # the server process has gone
            loop.remove_reader(stdin)
            stop.set()
            return
        bell.ring()

    loop.add_reader(stdin, woken)
    await deliverer.run(stop)


def main() -> None:
    settings = Settings.from_env()
    from profilehub.request_log import logging_config

    logging.config.dictConfig(logging_config(os.environ.get("PROFILEHUB_LOG_LEVEL", "info"), False))
    db = Database(
        settings.database_url,
        connect_timeout=settings.db_connect_timeout_seconds,
        idle_in_transaction_timeout=settings.db_idle_in_transaction_timeout_seconds,
    )
    try:
        deliverer = Deliverer(db, settings.delivery)
        log.info("delivery: delivering webhooks as %s", deliverer.owner)
        asyncio.run(_deliver(deliverer, db.event_bell))
    finally:
        db.close()


if __name__ == "__main__":
    try:
        main()
    except SettingsError as exc:  # the server checked the same settings first; kept for safety
        print(f"profilehub deliverer: {exc}", file=sys.stderr)
        sys.exit(2)
