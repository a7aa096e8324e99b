"""SQLite: the server's writes reach the database file itself (not only its WAL) while it writes.

The server checkpoints the WAL on a thread of its own (``store/checkpoints.py``) instead of in its
writer's commits, whose automatic checkpoint is only a backstop at 10,000 pages (~40 MB). So what
is tested is that the thread does it: well before the backstop, the writes are copied into the
database file (what a copy of that file alone, or a reader of it, sees).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi import FastAPI

from profilehub.crm.people import upsert_people_batch
from profilehub.store.checkpoints import BACKSTOP_PAGES
from tests.conftest import make_org

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def test_the_servers_writes_are_checkpointed_into_the_database_file(app: FastAPI, database_url: str) -> None:
    db = app.state.db
    make_org(db)
    file = Path(database_url.removeprefix("sqlite:///"))
    wal = Path(f"{file}-wal")
    before = file.stat().st_size
    people = 0
    deadline = time.monotonic() + 30
    # The thread checkpoints every quarter second while the writer commits: keep writing until the
    # file has grown, or give up.
    while time.monotonic() < deadline and file.stat().st_size <= before:
        batch = [{"emails": [f"p{people + i}@x.com"], "firstName": "P"} for i in range(100)]
        upsert_people_batch(db, 1234, batch, "email", "test")
        people += len(batch)
        time.sleep(0.1)
    assert file.stat().st_size > before, f"nothing checkpointed into the file after {people} people"
    # Not the writer's own backstop: the WAL never came near it.
    assert wal.stat().st_size < BACKSTOP_PAGES * 4096 / 4, wal.stat().st_size
