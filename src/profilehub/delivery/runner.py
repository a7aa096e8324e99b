"""The deliverer: takes the leases of endpoints (and of each org's stream) nobody works, and
works each in a task of its own, so a slow endpoint holds up only itself.

``profilehub deliver`` runs one in the foreground; ``profilehub serve`` runs one beside each
server process, in a process of its own by default (``delivery/process.py``) or in a thread
(``BackgroundDeliverer``, PROFILEHUB_SERVE_DELIVERS=thread), with its own event loop and HTTP
connections: the server's requests never wait on a webhook. A round reads once (the endpoint and
the events after its cursor) and writes once (what it delivered, in one statement when all went).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa

from profilehub.delivery import leases
from profilehub.delivery.sender import WebhookSender
from profilehub.delivery.settings import DeliverySettings
from profilehub.delivery.stream import (
    JetStreamPublisher,
    StreamRemade,
    StreamUnavailable,
    commit_batch,
    ensure_cursor,
    read_batch,
    restart_cursors,
)
from profilehub.delivery.webhooks import MORE, EndpointRounds, StaleRound
from profilehub.store.database import Database
from profilehub.store.tables import orgs, stream_cursors, webhook_endpoints

log = logging.getLogger(__name__)


def new_owner() -> str:
    """Who holds a lease: host and process, readable in the table, unique per run."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Deliverer:
    def __init__(
        self,
        db: Database,
        settings: DeliverySettings,
        *,
        nats_url: str | None = None,
        nats_stream: str | None = None,
        clock: Callable[[], float] = time.time,
        owner: str | None = None,
        webhooks: bool = True,
    ) -> None:
        self.db = db
        self.webhooks = webhooks
        self.settings = settings
        self.nats_url = nats_url
        self.nats_stream = nats_stream
        self.clock = clock
        self.owner = owner or new_owner()
        self._tasks: dict[tuple[str, int, str], asyncio.Task[None]] = {}
        self._stop = asyncio.Event()

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _until(self) -> int:
        return self._now_ms() + int(self.settings.lease_seconds * 1000)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; then hand every lease back."""
        self._stop = stop
        sender = WebhookSender(self.settings.timeout_seconds, self.settings.concurrency)
        publisher = None
        if self.nats_url:

            async def restart(name: str) -> None:
                await self.db.awrite(functools.partial(restart_cursors, name=name))

            publisher = await JetStreamPublisher.connect(
                self.nats_url, self.nats_stream or "PROFILEHUB", restart
            )
            if publisher.created:
                await restart(publisher.name)
        try:
            while not stop.is_set():
                try:
                    await self._claim(sender, publisher)
                except Exception:
                    # The database is down or restarting: try again at the next poll.
                    log.warning("delivery: cannot look for endpoints now", exc_info=True)
                await self._sleep(self.settings.poll_seconds)
        finally:
            # Rounds under way finish and record what they delivered (so a clean stop sends
            # nothing twice); past the grace, they are cancelled and resent by the next holder.
            running = list(self._tasks.values())
            if running:
                await asyncio.wait(running, timeout=self.settings.timeout_seconds + 5)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            self._tasks.clear()
            sender.close()
            if publisher is not None:
                await publisher.close()
            try:
                await self.db.awrite(self._release_all)
            except Exception:
                log.warning("delivery: could not hand the leases back; they run out by themselves")

    def _release_all(self, conn: sa.Connection) -> None:
        leases.release(conn, webhook_endpoints, self.owner)
        leases.release(conn, stream_cursors, self.owner)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _idle(self) -> None:
        """Wait for new events: the writer's bell in this process, else the poll interval."""
        bell = getattr(self.db, "event_bell", None)
        if bell is None:
            await self._sleep(self.settings.poll_seconds)
            return
        seen = bell.count
        waiter = asyncio.ensure_future(bell.wait(seen, self.settings.poll_seconds))
        stopper = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for fut in (waiter, stopper):
            fut.cancel()

    async def _claim(self, sender: WebhookSender, publisher: JetStreamPublisher | None) -> None:
        now = self._now_ms()
        for name, done in list(self._tasks.items()):
            if done.done():
                del self._tasks[name]

        def free() -> list[tuple[int, str]]:
            with self.db.read() as conn:
                rows = conn.execute(
                    sa.select(webhook_endpoints.c.org_id, webhook_endpoints.c.endpoint_id).where(
                        webhook_endpoints.c.disabled_ts.is_(None),
                        sa.or_(
                            webhook_endpoints.c.lease_owner.is_(None),
                            webhook_endpoints.c.lease_until < now,
                            webhook_endpoints.c.lease_owner == self.owner,
                        ),
                    )
                ).all()
                return [(r.org_id, r.endpoint_id) for r in rows]

        for org_id, endpoint_id in await asyncio.to_thread(free) if self.webhooks else []:
            key = ("webhook", org_id, endpoint_id)
            if key in self._tasks:
                continue
            lease = {"org_id": org_id, "endpoint_id": endpoint_id}
            if await self._take(webhook_endpoints, lease):
                rounds = EndpointRounds(
                    self.db, org_id, endpoint_id, self.owner, sender, self.settings, self.clock
                )
                self._tasks[key] = asyncio.create_task(self._work(webhook_endpoints, lease, rounds.round))
        if publisher is not None:
            await self._claim_streams(publisher)

    async def _claim_streams(self, publisher: JetStreamPublisher) -> None:
        now = self._now_ms()

        def claimable() -> list[tuple[int, bool]]:
            """Each org whose lease may be ours (no cursor row yet, free, run out, ours), and
            whether its row exists: a standby reads, and writes nothing while another holds them
            all (it wrote two transactions per org per poll, forever, that changed no row)."""
            with self.db.read() as conn:
                rows = conn.execute(
                    sa.select(orgs.c.org_id, stream_cursors.c.org_id.is_not(None).label("row"))
                    .select_from(
                        orgs.outerjoin(
                            stream_cursors,
                            sa.and_(
                                stream_cursors.c.org_id == orgs.c.org_id,
                                stream_cursors.c.stream == publisher.name,
                            ),
                        )
                    )
                    .where(
                        sa.or_(
                            stream_cursors.c.org_id.is_(None),
                            stream_cursors.c.lease_owner.is_(None),
                            stream_cursors.c.lease_until < now,
                            stream_cursors.c.lease_owner == self.owner,
                        )
                    )
                ).all()
                return [(r.org_id, bool(r.row)) for r in rows]

        for org_id, row in await asyncio.to_thread(claimable):
            key = ("stream", org_id, publisher.name)
            if key in self._tasks:
                continue
            lease = {"org_id": org_id, "stream": publisher.name}
            if not row:
                await self.db.awrite(functools.partial(ensure_cursor, org_id=org_id, name=publisher.name))
            if await self._take(stream_cursors, lease):
                work = self._publishing(publisher, org_id)
                self._tasks[key] = asyncio.create_task(self._work(stream_cursors, lease, work))

    async def _take(self, table: sa.Table, lease: dict[str, Any]) -> bool:
        return bool(
            await self.db.awrite(
                lambda c: leases.take(c, table, lease, self.owner, self._now_ms(), self._until())
            )
        )

    def _publishing(self, publisher: JetStreamPublisher, org_id: int) -> Callable[[], Awaitable[bool | None]]:
        async def round() -> bool | None:
            def read() -> tuple[int, list[tuple[int, str, bytes]]]:
                with self.db.read() as conn:
                    return read_batch(conn, org_id, publisher.name, self.settings.batch_size)

            generation = await publisher.ready()
            cursor, batch = await asyncio.to_thread(read)
            if not batch:
                return False
            await publisher.publish(org_id, batch, generation)
            publisher.check(generation)  # acknowledged by a stream deleted since: not to commit
            await self.db.awrite(
                lambda c: commit_batch(
                    c, org_id, publisher.name, self.owner, self._until(), cursor, batch[-1][0], len(batch)
                )
            )
            return True

        return round

    async def _work(
        self, table: sa.Table, lease: dict[str, Any], round: Callable[[], Awaitable[int | None]]
    ) -> None:
        """Run rounds while the lease is ours; idle, renew it a third of its time before it ends."""
        renewed = time.monotonic()
        while not self._stop.is_set():
            try:
                did = await round()
            except (leases.LeaseLost, StaleRound, StreamRemade) as exc:
                if isinstance(exc, leases.LeaseLost):
                    log.info("delivery: %s went to another deliverer", lease)
                    return
                continue
            except asyncio.CancelledError:
                raise
            except StreamUnavailable as exc:
                # The broker's own words say it all: one line, not a traceback per retry.
                log.warning("delivery: round of %s failed; trying again: %s", lease, exc)
                await self._sleep(self.settings.poll_seconds)
                continue
            except Exception:
                log.warning("delivery: round of %s failed; trying again", lease, exc_info=True)
                await self._sleep(self.settings.poll_seconds)
                continue
            if did is None:  # disabled or deleted: let it go
                await self.db.awrite(lambda c: self._let_go(c, table, lease))
                return
            if did:
                renewed = time.monotonic()
                if did != MORE:
                    # A pause before the next round lets writes gather: under a steady write load a
                    # round then takes dozens of events for its two round trips to the database,
                    # not the one or two of the last commit. Behind (a whole batch read), none.
                    await self._sleep(self.settings.linger_seconds)
                continue
            if time.monotonic() - renewed > self.settings.lease_seconds / 3:
                try:
                    await self.db.awrite(lambda c: leases.renew(c, table, lease, self.owner, self._until()))
                except leases.LeaseLost:
                    return
                renewed = time.monotonic()
            await self._idle()

    def _let_go(self, conn: sa.Connection, table: sa.Table, lease: dict[str, Any]) -> None:
        conn.execute(
            table.update()
            .where(*(table.c[k] == v for k, v in lease.items()), table.c.lease_owner == self.owner)
            .values(lease_owner=None, lease_until=None)
        )


class BackgroundDeliverer:
    """A ``Deliverer`` in a thread of its own, for ``profilehub serve``."""

    def __init__(self, deliverer: Deliverer) -> None:
        self.deliverer = deliverer
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="profilehub-deliver", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(timeout=10)

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await self.deliverer.run(self._stop)

        try:
            asyncio.run(main())
        except Exception:
            log.exception("delivery stopped")

    def stop(self, timeout: float = 15) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # its loop has ended already
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
