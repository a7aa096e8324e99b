"""A profilehub process that stalls in the middle of a write transaction (frozen, paused, cut off
from the network while PostgreSQL still holds its session) must not stop every other process's
writes of that org for good: PostgreSQL ends a transaction left idle for
PROFILEHUB_DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS, its locks go with it (and nothing of it is
committed), and the others' writes go through.

The stalled process is a ``Database`` in this test whose writer job takes the org's write lock and
then waits, as a process frozen at that point would; a real ``profilehub serve`` writes the same
org meanwhile. The client waits far longer than the timeout (no assertion on speed).
"""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Connection

from profilehub.store.database import Database, lock_scope
from tests.conftest import make_org
from tests.serve_process import serve
from tests.write_load import write_body

TIMEOUT = "2"


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_stalled_transaction_holding_an_orgs_lock_does_not_block_other_processes(
    database_url: str, tmp_path: Path
) -> None:
    stalled = Database(database_url, idle_in_transaction_timeout=int(TIMEOUT))
    org = make_org(stalled)
    holding = threading.Event()
    release = threading.Event()

    def stall(conn: Connection) -> None:
        lock_scope(conn, org.org_id, "profiles:EU")  # what a CDP write of region EU takes first
        holding.set()
        release.wait(120)  # frozen here, the transaction open and idle

    job = stalled.submit(stall)
    try:
        assert holding.wait(30)
        with serve(
            database_url, tmp_path, PROFILEHUB_DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS=TIMEOUT
        ) as server:
            # Without the timeout this waits for the lock until the client gives up.
            answer = httpx.post(
                f"{server.base}/cdp/v1/users",
                json=write_body(org.org_id, 1),
                headers=org.headers(),
                timeout=60,
            )
            assert answer.status_code == 200, answer.text
    finally:
        release.set()
        job.exception(timeout=60)  # woken up, its writer finds the transaction ended (and retries)
        stalled.close()
