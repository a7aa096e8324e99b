"""Suppression in the database: each org's fingerprint key and its suppressed fingerprints.

The rules are ``profilehub.identity.suppression``. Every change here bumps the org's
``strategy_version``: the strategy (which carries the fingerprints) is reloaded by every process
on its next write, and writes prepared ahead under the old version are prepared again.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.identity.suppression import IdPair, Suppression, fingerprinter
from profilehub.store.changes import now_ms
from profilehub.store.tables import orgs, suppressed_ids, suppression_keys

_CHUNK = 500


def _bump_strategy_version(conn: Connection, org_id: int) -> None:
    # As strategy_store's (which loads the fingerprints from here, hence not imported).
    conn.execute(
        orgs.update().where(orgs.c.org_id == org_id).values(strategy_version=orgs.c.strategy_version + 1)
    )


def create_key(conn: Connection, org_id: int) -> bytes:
    key = secrets.token_bytes(32)
    conn.execute(suppression_keys.insert().values(org_id=org_id, key=key.hex(), created_ts=now_ms()))
    return key


def org_key(conn: Connection, org_id: int) -> bytes:
    """The org's key, made now for an org created before suppression existed (in a writer job)."""
    found = conn.execute(
        sa.select(suppression_keys.c.key).where(suppression_keys.c.org_id == org_id)
    ).scalar_one_or_none()
    return bytes.fromhex(found) if found is not None else create_key(conn, org_id)


def load_suppression(conn: Connection, org_id: int) -> Suppression | None:
    """The org's key and fingerprints (None: it has no key, so nothing can be suppressed)."""
    found = conn.execute(
        sa.select(suppression_keys.c.key).where(suppression_keys.c.org_id == org_id)
    ).scalar_one_or_none()
    if found is None:
        return None
    by_region: dict[str, set[bytes]] = {}
    rows = conn.execute(
        sa.select(suppressed_ids.c.region, suppressed_ids.c.fingerprint).where(
            suppressed_ids.c.org_id == org_id
        )
    )
    for region, hex_print in rows:
        by_region.setdefault(region, set()).add(bytes.fromhex(hex_print))
    return Suppression(bytes.fromhex(found), {r: frozenset(v) for r, v in by_region.items()})


def suppress(conn: Connection, org_id: int, region: str, ids: Iterable[IdPair]) -> int:
    """Keep the fingerprints of ``ids`` in ``region``; how many were new."""
    prints_of = fingerprinter(org_key(conn, org_id))
    prints = sorted({prints_of(i).hex() for i in ids})
    if not prints:
        return 0
    held: set[str] = set()
    for start in range(0, len(prints), _CHUNK):
        part = prints[start : start + _CHUNK]
        held.update(
            conn.execute(
                sa.select(suppressed_ids.c.fingerprint).where(
                    suppressed_ids.c.org_id == org_id,
                    suppressed_ids.c.region == region,
                    suppressed_ids.c.fingerprint.in_(part),
                )
            ).scalars()
        )
    new = [p for p in prints if p not in held]
    if new:
        ts = now_ms()
        conn.execute(
            suppressed_ids.insert(),
            [{"org_id": org_id, "region": region, "fingerprint": p, "created_ts": ts} for p in new],
        )
        _bump_strategy_version(conn, org_id)
    return len(new)


def unsuppress(conn: Connection, org_id: int, region: str, ids: Iterable[IdPair]) -> int:
    """Forget the fingerprints of ``ids`` in ``region``; how many there were."""
    found = conn.execute(
        sa.select(suppression_keys.c.key).where(suppression_keys.c.org_id == org_id)
    ).scalar_one_or_none()
    if found is None:
        return 0
    prints_of = fingerprinter(bytes.fromhex(found))
    prints = sorted({prints_of(i).hex() for i in ids})
    removed = 0
    for start in range(0, len(prints), _CHUNK):
        removed += conn.execute(
            suppressed_ids.delete().where(
                suppressed_ids.c.org_id == org_id,
                suppressed_ids.c.region == region,
                suppressed_ids.c.fingerprint.in_(prints[start : start + _CHUNK]),
            )
        ).rowcount
    if removed:
        _bump_strategy_version(conn, org_id)
    return removed
