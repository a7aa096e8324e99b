"""The HTTP baseline: a bare ASGI app that upserts a write's rows raw, on the same database.

It parses the same body, normalises the ids with the same code (before queueing for the writer, as
profilehub does), and writes one row per id with ``INSERT ... ON CONFLICT DO UPDATE`` through the
same single writer (no identity resolution, no answer beyond ``{}``).
``python -m bench.baseline_server --port P --url URL``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import orjson
import sqlalchemy as sa
from starlette.types import Receive, Scope, Send

from bench.generate import ORG_ID, REGION
from bench.import_worker import raw_ids_upsert
from bench.machine import command_line, exclusive_run
from profilehub.app import tune_gc_for_serving
from profilehub.errors import ProfilehubError
from profilehub.identity.normalize import normalise_ids
from profilehub.identity.strategy import StrategyCache
from profilehub.store.database import Database


def make_app(url: str) -> Any:
    db = Database(url)
    stmt = raw_ids_upsert(db)
    strategies = StrategyCache()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = orjson.loads(b"".join(chunks))
        # Normalised before queueing for the writer, as profilehub's own route does.
        ahead = strategies.cached(ORG_ID)
        try:
            early = normalise_ids(ahead, body.get("ids") or {}, REGION)[0] if ahead else None
        except ProfilehubError:
            early = None

        def job(conn: sa.Connection) -> int:
            strategy = strategies.get(conn, ORG_ID)
            if early is not None and strategy is ahead:
                ids = early
            else:
                try:
                    ids, _ = normalise_ids(strategy, body.get("ids") or {}, REGION)
                except ProfilehubError:
                    return 400
            now = time.time_ns() // 1_000_000
            rows = [
                {
                    "org_id": ORG_ID,
                    "region": REGION,
                    "id_type": i.id_type,
                    "value": i.value,
                    "record": 0,
                    "ts": now,
                }
                for i in ids
            ]
            if rows:
                conn.execute(stmt, rows)
            return 200

        status = await db.awrite(job)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
            }
        )
        await send({"type": "http.response.body", "body": b"{}"})

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--url", required=True)
    args = parser.parse_args()
    with exclusive_run(command_line()):
        app = make_app(args.url)
        tune_gc_for_serving()  # the same runtime as ``profilehub serve``
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
