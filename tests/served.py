"""Real sockets for the fault tests: the app served by uvicorn in a thread, and a TCP proxy to
PostgreSQL whose cut is, for the app, the database going away (connections dropped, new ones
refused) without touching the shared server."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI


class TcpProxy:
    """Forwards connections to ``target``; ``cut()`` drops them all and refuses new ones;
    ``black_hole()`` drops them all and then accepts new ones but never answers, as a database
    host behind a firewall that silently drops packets."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._cut = False
        self._black_hole = False
        # Polled: closing a socket does not interrupt an accept() blocked in another thread.
        self._listener.settimeout(0.05)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._cut:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            if self._black_hole:
                with self._lock:
                    self._sockets.append(client)  # held open, never read nor answered
                continue
            upstream = socket.create_connection(self._target)
            with self._lock:
                self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self._cut = True
        self._listener.close()
        self._drop_all()

    def black_hole(self) -> None:
        self._black_hole = True
        self._drop_all()

    def _drop_all(self) -> None:
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._sockets.clear()


@contextlib.contextmanager
def served(app: FastAPI) -> Iterator[int]:
    """Serve ``app`` with uvicorn on a free local port (in a thread) and yield the port."""
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
