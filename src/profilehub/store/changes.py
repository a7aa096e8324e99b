"""The change log: who changed what, when. Read back in order as a per-org change feed."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.store.tables import changes

_id_lock = threading.Lock()
_id_ms = -1
_id_counter = 0


def new_change_id() -> str:
    """12 hex digits of the wall clock's epoch ms, then 16 of a counter that starts at a random
    point each millisecond: strictly increasing within a process, so the feed (read in change_id
    order, ``--after`` the last one read) holds a process's changes in the order they were made,
    also those of one millisecond. The time is when the change is recorded, not the change's
    ``ts``: an import given ``--at`` an earlier time would otherwise put its changes behind the
    feed's readers."""
    global _id_ms, _id_counter
    with _id_lock:
        ms = time.time_ns() // 1_000_000
        if ms > _id_ms:
            _id_ms = ms
            # random against collisions between processes; two bits of room for the counter
            _id_counter = int.from_bytes(os.urandom(8), "big") >> 2
        else:
            _id_counter += 1
        return f"{_id_ms:012x}{_id_counter:016x}"


class ChangeIdBlock:
    """``n`` change ids reserved at once: ``block(k)`` is the k-th, after every id this process
    made before and before every one it makes after. The bulk import gives the change of its k-th
    write ``block(k)``, so the feed holds its changes in file order, as the online import's."""

    def __init__(self, n: int) -> None:
        global _id_ms, _id_counter
        with _id_lock:
            ms = time.time_ns() // 1_000_000
            if ms > _id_ms:
                start = int.from_bytes(os.urandom(8), "big") >> 2
            else:
                ms, start = _id_ms, _id_counter + 1
            _id_ms, _id_counter = ms, start + max(n, 1) - 1
        self.prefix = f"{ms:012x}"
        self.start = start

    def __call__(self, k: int) -> str:
        return f"{self.prefix}{self.start + k:016x}"


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
        "change_id": new_change_id(),
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
