"""At most ``BULK_AT_ONCE`` ``_bulk`` requests of one server process are read, parsed and written
at a time; the others wait their turn with their bodies unread.

A 1,000-record body of small attributes (about 7 MB) becomes about 115 MB of Python objects while
it is parsed, resolved and answered (the records, the resolved profiles, the rendered answer), so
several at once took a server from 96 MB to 348 MB. They all go through the one writer thread
anyway, so taking turns costs them little time. A waiting request's body stays in the socket
(the server stops reading a request it has not started to handle), so waiting costs no memory.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send

from profilehub.memory import give_back

BULK_AT_ONCE = 1
BULK_PATHS = frozenset({"/cdp/v1/users/_bulk"})


class BulkTurns:
    def __init__(self, app: ASGIApp, at_once: int = BULK_AT_ONCE) -> None:
        self.app = app
        self.at_once = at_once
        self._turns: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        # One per event loop: a semaphore is bound to the loop it first waits in, and one app may
        # be served by several loops in turn (tests).
        loop = asyncio.get_running_loop()
        if self._turns is None or self._loop is not loop:
            self._turns, self._loop = asyncio.Semaphore(self.at_once), loop
        return self._turns

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in BULK_PATHS:
            await self.app(scope, receive, send)
            return
        async with self._semaphore():
            try:
                await self.app(scope, receive, send)
            finally:
                give_back()
