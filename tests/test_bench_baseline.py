"""The HTTP baseline batches concurrent requests as profilehub does, so the ratio is like for like."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import orjson
import sqlalchemy as sa
from bench.baseline_server import make_app
from bench.generate import records
from bench.run_import import setup_org

from profilehub.store.database import Database

REQUESTS = 6


async def _post(app: Any, body: dict[str, Any]) -> int:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": orjson.dumps(body), "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/cdp/v1/users", "headers": []}
    await app(scope, receive, send)
    return int(sent[0]["status"])


def test_concurrent_requests_are_written_as_one_batch(database_url: str) -> None:
    setup_org(database_url)
    db = Database(database_url)
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "bench_raw_" in statement and statement.lstrip().upper().startswith("INSERT"):
            statements.append(statement.split("(")[0])

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", seen)
    try:
        app = make_app(db)
        bodies = [body for body, _, _ in records(REQUESTS, seed=23)]
        busy = threading.Event()
        db.submit(lambda conn: busy.wait(10))  # the writer is busy while the requests queue

        async def run() -> list[int]:
            posts = [asyncio.create_task(_post(app, body)) for body in bodies]
            await asyncio.sleep(0.3)
            busy.set()
            return await asyncio.gather(*posts)

        assert asyncio.run(run()) == [200] * REQUESTS
        with db.read() as conn:
            id_rows = conn.exec_driver_sql("SELECT COUNT(*) FROM bench_raw_ids").scalar_one()
            profile_rows = conn.exec_driver_sql("SELECT COUNT(*) FROM bench_raw_profiles").scalar_one()
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", seen)
        db.close()
    # The six queued requests: one statement per table, as profilehub writes them in one batch.
    assert sorted(statements) == ["INSERT INTO bench_raw_ids ", "INSERT INTO bench_raw_profiles "]
    assert id_rows > REQUESTS and profile_rows == REQUESTS
