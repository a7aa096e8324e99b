"""``profilehub serve --workers N``: N server processes, each listening on a socket of its own.

uvicorn's own supervisor hands its workers one shared listening socket, and whichever worker wakes
first accepts every connection waiting (asyncio and uvloop accept in a loop). Keep-alive clients
that connect at about the same time then land unevenly, and stay there: of 30 bursts of 64
connections to two workers, one went 64/0 and several 14/50 or worse, and a round whose
connections went 58/6 ran at ~1,500 requests a second against ~2,300 balanced
(bench/NOTES-crm.md, 2026-12-02). Here each worker binds its own socket with ``SO_REUSEPORT`` and
the kernel spreads new connections over the sockets by their addresses (25/39 at worst in 30
such bursts).

The parent process only watches. On SIGINT or SIGTERM it sends SIGTERM to each worker, which
finishes the requests it holds as a single server does (``profilehub.serving``), waits for them
all and exits with status 0. A worker that ends by itself is started again, unless it never came
up (uvicorn's start-up failure, exit status 3: the app or the socket is broken and would fail the
same way each time); then the other workers are stopped and ``serve`` exits with status 1. A
worker that hangs is not detected (uvicorn's supervisor pings its workers; a hung worker here
keeps its connections until it is killed). A worker whose parent is killed (SIGKILL, which
leaves it no chance to stop them) stops itself within a second. Connections still in a stopping worker's accept queue
are refused by the kernel, as any closed listening socket's are.

Where ``SO_REUSEPORT`` is not offered (it is on Linux), ``serve`` uses uvicorn's supervisor.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

from profilehub.config import Settings
from profilehub.request_log import configure_logging, logging_config

log = logging.getLogger("profilehub.workers")

# uvicorn kills a worker that does not answer its supervisor's ping within this many seconds,
# start-up included (a spawned worker imports everything anew). Its default of 5 killed and
# restarted both workers of `serve --workers 2` in a loop on a busy 2-CPU host, where a worker's
# start took longer than that, while clients saw reset connections.
WORKER_HEALTHCHECK_SECONDS = 60
# uvicorn's exit status for a server that could not start (``uvicorn.config.STARTUP_FAILURE``).
STARTUP_FAILURE = 3
# Seconds between two looks at the workers.
_WATCH_SECONDS = 0.5


def uvicorn_options(log_level: str, access_log: bool) -> dict[str, Any]:
    """What ``serve`` gives uvicorn besides the address and the workers, for ``uvicorn.run`` and
    ``uvicorn.Config`` alike."""
    return {
        "factory": True,
        "log_config": logging_config(log_level, access_log),
        # Read timeouts, and framing errors in the one error shape (see profilehub.serving).
        "http": "profilehub.serving:HttpProtocol",
        "access_log": False,
        "timeout_worker_healthcheck": WORKER_HEALTHCHECK_SECONDS,
        # ``serve`` has checked the settings before it gets here
        "timeout_keep_alive": Settings.from_env().keep_alive_seconds,
    }


APP = "profilehub.app:create_server_app"


def own_sockets_available() -> bool:
    """Whether workers can each listen on a socket of their own (``SO_REUSEPORT``, Linux)."""
    return hasattr(socket, "SO_REUSEPORT") and sys.platform.startswith("linux")


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` that shares the port with the other workers' (the same
    user's sockets only: Linux refuses another user's ``SO_REUSEPORT`` bind to a taken port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _stop_when_orphaned(parent: int) -> None:
    """In a worker: SIGTERM to itself (a graceful stop) once the supervisor is gone, killed
    without the chance to stop its workers; they would otherwise serve on, unsupervised."""
    while os.getppid() == parent:
        time.sleep(_WATCH_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)


def _worker(host: str, port: int, log_level: str, access_log: bool, parent: int) -> None:
    """One worker process: a uvicorn server on a socket of its own."""
    import uvicorn

    threading.Thread(
        target=_stop_when_orphaned, args=(parent,), name="profilehub-orphan", daemon=True
    ).start()

    config = uvicorn.Config(APP, host=host, port=port, **uvicorn_options(log_level, access_log))
    try:
        sock = listening_socket(host, port)
    except OSError as exc:
        logging.getLogger("uvicorn.error").error("cannot listen on %s:%d: %s", host, port, exc.strerror)
        sys.exit(STARTUP_FAILURE)
    uvicorn.Server(config).run(sockets=[sock])


def run_workers(count: int, host: str, port: int, log_level: str, access_log: bool) -> int:
    """Run ``count`` workers until SIGINT or SIGTERM; the exit status for ``serve``."""
    configure_logging(log_level, access_log)
    context = multiprocessing.get_context("spawn")
    stop = threading.Event()
    failed = False

    def start() -> multiprocessing.process.BaseProcess:
        process = context.Process(
            target=_worker, args=(host, port, log_level, access_log, os.getpid()), daemon=False
        )
        process.start()
        return process

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    workers: list[multiprocessing.process.BaseProcess] = []
    try:
        workers = [start() for _ in range(count)]
        log.info("started %d workers, each listening on %s:%d", count, host, port)
        while not stop.wait(_WATCH_SECONDS):
            for n, process in enumerate(workers):
                if process.exitcode is None:
                    continue
                if process.exitcode == STARTUP_FAILURE:
                    log.error("worker %d could not start; stopping the others", process.pid)
                    failed = True
                    stop.set()
                    break
                log.warning(
                    "worker %d ended (exit status %s); starting another", process.pid, process.exitcode
                )
                workers[n] = start()
    finally:
        for process in workers:
            if process.exitcode is None and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        for process in workers:
            process.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 1 if failed else 0
