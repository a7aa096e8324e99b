"""What a standby ``deliver --nats`` costs the store: two deliverers, a few orgs, the first holding
every org's stream lease; how many write transactions, UPDATE statements and rows the second
sends per minute while it waits.

``python -m bench.standby_leases [--backend sqlite|postgres] [--orgs 5] [--seconds 60]``

The holder is a ``profilehub deliver --nats`` process; the standby runs in this process, its
writer's statements counted (``after_cursor_execute``, ``commit``). A ``nats-server -js`` of the
bench's own on a free port (its store in a temporary folder) takes the events. On PostgreSQL the
table's own counters (``pg_stat_user_tables``: rows updated, both deliverers) are printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.backends import fresh_database
from bench.machine import command_line, exclusive_run, load_note
from profilehub.config import DeliverySettings
from profilehub.delivery.runner import Deliverer
from profilehub.orgs import create_org
from profilehub.profiles import ProfileService, ProfileWrite
from profilehub.store.database import Database
from profilehub.store.tables import stream_cursors

OUT = Path(__file__).resolve().parent / "out"
VENV_BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(what: str, check: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def _held(db: Database, orgs: int) -> bool:
    with db.read() as conn:
        owners = conn.execute(sa.select(stream_cursors.c.lease_owner)).scalars().all()
    return len(owners) == orgs and all(owners)


class Counts:
    def __init__(self, engine: sa.Engine) -> None:
        self.commits = self.updates = self.inserts = self.rows = 0
        self.on = False
        sa.event.listen(engine, "after_cursor_execute", self._statement)
        sa.event.listen(engine, "commit", self._commit)

    def _statement(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if not self.on:
            return
        verb = statement.lstrip().split(None, 1)[0].upper()
        if verb in ("UPDATE", "INSERT", "DELETE"):
            self.updates += verb == "UPDATE"
            self.inserts += verb == "INSERT"
            self.rows += max(cursor.rowcount, 0)

    def _commit(self, conn: Any) -> None:
        if self.on:
            self.commits += 1


def _pg_updated(db: Database) -> int | None:
    if db.engine.dialect.name != "postgresql":
        return None
    with db.read() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT n_tup_upd + n_tup_ins FROM pg_stat_user_tables WHERE relname = 'stream_cursors'"
                )
            ).scalar_one()
        )


def measure(backend: str, orgs: int, seconds: float) -> None:
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as store, fresh_database(backend, OUT) as url:
        port = _free_port()
        broker = subprocess.Popen(
            ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", store],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        nats_url = f"nats://127.0.0.1:{port}"
        db = Database(url)
        holder = None
        try:
            service = ProfileService(db)
            for org_id in range(1, orgs + 1):
                db.write(lambda c, o=org_id: create_org(c, o, f"Org {o}", ["EU"]))
                service.write_batch([ProfileWrite(org_id, "EU", {"crm_id": "P1"}, {"n": 1})], "bench")
            env = {**os.environ, "PROFILEHUB_DATABASE_URL": url}
            holder = subprocess.Popen(
                [str(VENV_BIN / "profilehub"), "deliver", "--nats", nats_url, "--no-webhooks"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            _wait("the holder to take every org's lease", lambda: _held(db, orgs))
            counts = Counts(db._writer_engine)  # the writer's: every write goes through it
            standby = Deliverer(db, DeliverySettings.from_env(), nats_url=nats_url, webhooks=False)
            stop = asyncio.Event()
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_until_complete, args=(standby.run(stop),))
            thread.start()
            time.sleep(2)  # connected, a few polls in
            before = _pg_updated(db)
            counts.on = True
            time.sleep(seconds)
            counts.on = False
            after = _pg_updated(db)
            loop.call_soon_threadsafe(stop.set)
            thread.join(30)
            per_minute = 60 / seconds
            print(
                f"{backend}, {orgs} orgs, {seconds:.0f} s, poll {DeliverySettings.from_env().poll_seconds} s: "
                f"standby per minute: {counts.commits * per_minute:.0f} write transactions, "
                f"{counts.updates * per_minute:.0f} UPDATEs, {counts.inserts * per_minute:.0f} INSERTs, "
                f"{counts.rows * per_minute:.0f} rows changed"
                + (
                    f"; stream_cursors rows updated per minute (both): {(after - before) * per_minute:.0f}"
                    if before is not None and after is not None
                    else ""
                )
            )
        finally:
            if holder is not None:
                holder.send_signal(signal.SIGTERM)
                holder.wait(30)
            db.close()
            broker.kill()
            broker.wait(10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.standby_leases", description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], action="append")
    parser.add_argument("--orgs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args(argv)
    with exclusive_run(command_line()):
        print(load_note())
        for backend in args.backend or ["sqlite", "postgres"]:
            measure(backend, args.orgs, args.seconds)


if __name__ == "__main__":
    main()
