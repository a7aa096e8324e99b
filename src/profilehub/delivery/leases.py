"""Leases: which deliverer works an endpoint (or an org's stream) now.

A lease is a compare-and-set on the row (``lease_owner``, ``lease_until`` in epoch ms), taken
and renewed inside the writer's transaction, so two deliverers never hold one at once: on
PostgreSQL the UPDATE's row lock orders them, on SQLite the write lock does. A deliverer that
dies (``kill -9``) loses its leases when they run out; the next holder starts from the last
committed cursor, so what the dead one sent but had not committed is sent again (at least once).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.errors import Conflict


class LeaseLost(Conflict):
    """Another deliverer holds the lease now (ours ran out): stop, commit nothing."""


def take(conn: Connection, table: sa.Table, key: dict[str, Any], owner: str, now: int, until: int) -> bool:
    """Take the row's lease if it is free, run out, or ours already; whether we hold it now."""
    done = conn.execute(
        table.update()
        .where(
            *(table.c[k] == v for k, v in key.items()),
            sa.or_(table.c.lease_owner.is_(None), table.c.lease_until < now, table.c.lease_owner == owner),
        )
        .values(lease_owner=owner, lease_until=until)
    ).rowcount
    return bool(done)


def renew(conn: Connection, table: sa.Table, key: dict[str, Any], owner: str, until: int) -> None:
    """Extend our lease, first thing in a transaction that commits delivery progress: if the
    lease is no longer ours, ``LeaseLost`` is raised before anything is written."""
    done = conn.execute(
        table.update()
        .where(*(table.c[k] == v for k, v in key.items()), table.c.lease_owner == owner)
        .values(lease_until=until)
    ).rowcount
    if not done:
        raise LeaseLost(f"lease of {key} lost", field="lease")


def release(conn: Connection, table: sa.Table, owner: str) -> None:
    """Hand back every lease ``owner`` holds in ``table`` (a clean stop): others take over at once."""
    conn.execute(
        table.update().where(table.c.lease_owner == owner).values(lease_owner=None, lease_until=None)
    )
