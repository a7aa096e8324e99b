"""The change log: who changed what, when. Read back in order as a per-org change feed."""

from __future__ import annotations

import os
import time
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.store.tables import changes


def new_change_id(now_ms: int) -> str:
    # Sortable by time: 12 hex digits of epoch ms, then randomness against collisions.
    return f"{now_ms:012x}{os.urandom(8).hex()}"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def change_row(
    org_id: int,
    actor: str,
    entity: str,
    entity_id: str,
    action: str,
    detail: dict[str, Any] | None = None,
    ts: int | None = None,
) -> dict[str, Any]:
    ts = ts if ts is not None else now_ms()
    return {
        "org_id": org_id,
        "change_id": new_change_id(ts),
        "ts": ts,
        "actor": actor[:100],
        "entity": entity,
        "entity_id": entity_id,
        "action": action,
        "detail": orjson.dumps(detail or {}).decode(),
    }


def record(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(changes.insert(), rows)


def history(
    conn: Connection,
    org_id: int,
    *,
    entity: str | None = None,
    entity_id: str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    q = sa.select(changes).where(changes.c.org_id == org_id)
    if entity is not None:
        q = q.where(changes.c.entity == entity)
    if entity_id is not None:
        q = q.where(changes.c.entity_id == entity_id)
    if after is not None:
        q = q.where(changes.c.change_id > after)
    q = q.order_by(changes.c.change_id).limit(limit)
    return [
        {
            "changeId": r.change_id,
            "ts": r.ts,
            "actor": r.actor,
            "entity": r.entity,
            "entityId": r.entity_id,
            "action": r.action,
            "detail": orjson.loads(r.detail),
        }
        for r in conn.execute(q)
    ]
