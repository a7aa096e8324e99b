"""Idempotency keys: the first answer of a keyed write, kept 24 hours and given again. No HTTP here.

A key belongs to an org (any of its credentials may repeat a request). The answer is saved in the
transaction of the write it answers, so a key is never kept without its write nor a write without
its key. A request is the same request when its method, path, query and body bytes are.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from profilehub.errors import BadRequest, Conflict
from profilehub.store.tables import idempotency_keys

TTL_MS = 24 * 3600 * 1000
MAX_KEY_LENGTH = 255
FIELD = "Idempotency-Key"
# An org's expired keys are deleted when it saves one, at most this often per process.
PRUNE_EVERY_MS = 10 * 60 * 1000


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: str


@dataclass(frozen=True)
class Stored:
    request_hash: str
    answer: Answer


class SavedElsewhere(Conflict):
    """Another process saved this key's answer while this write ran: the write is rolled back
    (a domain error, so by its own savepoint: the writer's other jobs commit) and the request
    answers the saved answer."""


def check_key(raw: str) -> str:
    key = raw.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise BadRequest(
            f"give 1 to {MAX_KEY_LENGTH} printable ASCII characters (a UUID is a good key)", field=FIELD
        )
    return key


def request_hash(method: str, path: str, query: bytes, body: bytes) -> str:
    digest = hashlib.sha256(f"{method}\n{path}\n".encode())
    digest.update(query + b"\n")
    digest.update(body)
    return digest.hexdigest()


class IdempotencyKeys:
    """Saved answers, and the keys this process is answering right now."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.in_flight: set[tuple[int, str]] = set()
        self._pruned: dict[int, int] = {}

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def lookup(self, conn: Connection, org_id: int, key: str) -> Stored | None:
        row = conn.execute(
            sa.select(idempotency_keys).where(
                idempotency_keys.c.org_id == org_id,
                idempotency_keys.c.key == key,
                idempotency_keys.c.created_ts > self.now_ms() - TTL_MS,
            )
        ).first()
        if row is None:
            return None
        headers = [(str(k), str(v)) for k, v in json.loads(row.headers)]
        return Stored(row.request_hash, Answer(row.status, headers, row.body))

    def save(self, conn: Connection, org_id: int, key: str, digest: str, answer: Answer) -> None:
        """Keep ``answer``; a key saved concurrently by another process is ``SavedElsewhere``."""
        now = self.now_ms()
        # An expired answer of this key, not pruned yet, gives way.
        conn.execute(
            idempotency_keys.delete().where(
                idempotency_keys.c.org_id == org_id,
                idempotency_keys.c.key == key,
                idempotency_keys.c.created_ts <= now - TTL_MS,
            )
        )
        # ON CONFLICT DO NOTHING rather than the unique key's error: that error is the database
        # failing the writer's whole transaction (logged, and every job in it run again one by
        # one); a row not inserted is this write's own outcome, rolled back alone. RETURNING says
        # whether it was (psycopg's rowcount is -1 for this statement either way).
        insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(idempotency_keys)
        inserted = conn.execute(
            insert.values(
                org_id=org_id,
                key=key,
                request_hash=digest,
                status=answer.status,
                headers=json.dumps(answer.headers),
                body=answer.body,
                created_ts=now,
            )
            .on_conflict_do_nothing()
            .returning(idempotency_keys.c.key)
        ).first()
        if inserted is None:
            raise SavedElsewhere("another request under this key was answered first", field=FIELD)
        if now - self._pruned.get(org_id, 0) > PRUNE_EVERY_MS:
            self._pruned[org_id] = now
            conn.execute(
                idempotency_keys.delete().where(
                    idempotency_keys.c.org_id == org_id, idempotency_keys.c.created_ts <= now - TTL_MS
                )
            )


def forget_answers(conn: Connection, org_id: int, mentions: Iterable[str]) -> None:
    """Delete the saved answers that mention any of ``mentions`` (erased ucids or record ids): an
    erased person's data must not be kept in them."""
    values = list(dict.fromkeys(m for m in mentions if m))
    for start in range(0, len(values), 100):
        chunk = values[start : start + 100]
        conn.execute(
            idempotency_keys.delete().where(
                idempotency_keys.c.org_id == org_id,
                sa.or_(*(idempotency_keys.c.body.contains(v, autoescape=True) for v in chunk)),
            )
        )


def forget_answers_until(conn: Connection, org_id: int, bounds: dict[str, int]) -> None:
    """Delete the saved answers that mention a profile of ``bounds`` and were saved up to its time
    (epoch ms): they may hold a person it was one with until an unmerge then, who is being erased
    (``store.unmerge_history``)."""
    for mention, until in bounds.items():
        conn.execute(
            idempotency_keys.delete().where(
                idempotency_keys.c.org_id == org_id,
                idempotency_keys.c.created_ts <= until,
                idempotency_keys.c.body.contains(mention, autoescape=True),
            )
        )
