"""The HTTP baseline: a bare ASGI app that upserts a write's rows raw, on the same database.

It parses the same body, normalises the ids with the same code (before queueing for the writer, as
profilehub does), and writes the import baseline's raw rows (one per id, one profile row per
record) with ``INSERT ... ON CONFLICT DO UPDATE`` through the same single writer, with the same
batching: each request is a ``GroupJob``, so the requests queued while the writer was busy are
written together, one ``executemany`` per table in one transaction, as profilehub's writes of
concurrent requests become one batch. No identity resolution, no answer beyond ``{}``.
``python -m bench.baseline_server --port P --url URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import orjson
import sqlalchemy as sa
from starlette.types import Receive, Scope, Send

from bench.generate import ORG_ID, REGION
from bench.import_worker import raw_ids_upsert, raw_profiles_upsert, write_raw_rows
from bench.machine import command_line, exclusive_run
from profilehub.app import tune_gc_for_serving
from profilehub.errors import ProfilehubError
from profilehub.identity.normalize import Identifier, normalise_ids
from profilehub.identity.strategy import Strategy
from profilehub.store.database import Database, GroupJob
from profilehub.store.strategy_store import StrategyCache

# A request's body, the strategy its ids were normalised under ahead of the writer, and those ids.
Payload = tuple[dict[str, Any], Strategy | None, list[Identifier] | None]


def make_app(db: Database) -> Any:
    ids_stmt = raw_ids_upsert(db)
    prof_stmt = raw_profiles_upsert(db)
    strategies = StrategyCache()
    written = {"n": 0}

    def group(conn: sa.Connection, payloads: list[Payload]) -> list[int]:
        """The raw rows of every queued request at once; a status per request, in order."""
        strategy = strategies.get(conn, ORG_ID)
        statuses: list[int] = []
        good: list[tuple[dict[str, Any], list[Identifier]]] = []
        for body, ahead, early in payloads:
            ids = early if early is not None and strategy is ahead else None
            if ids is None:
                try:
                    ids, _ = normalise_ids(strategy, body.get("ids") or {}, REGION)
                except ProfilehubError:
                    statuses.append(400)
                    continue
            good.append((body, ids))
            statuses.append(200)
        written["n"] += len(good)
        write_raw_rows(conn, ids_stmt, prof_stmt, good, written["n"], time.time_ns() // 1_000_000)
        return statuses

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
        status: int = await asyncio.wrap_future(db.submit(GroupJob(group, (body, ahead, early))))
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
        app = make_app(Database(args.url))
        tune_gc_for_serving()  # the same runtime as ``profilehub serve``
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
