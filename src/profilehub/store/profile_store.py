"""Erasure of profiles (with their journal and consent ledger). Profile reads and writes go through ``profile_storage`` (one
implementation, the batch store, for the writer and for search, get and erasure alike)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from profilehub.store.batch_store import chunks
from profilehub.store.consent_ledger import delete_ledger
from profilehub.store.journal_store import delete_journal
from profilehub.store.tables import profile_ids, profiles


def delete_profiles(conn: Connection, org_id: int, masters: list[str]) -> list[str]:
    """Erase masters, everything merged into them, their ids and journal; return every erased ucid."""
    erased: list[str] = []
    for part in chunks(sorted(set(masters))):
        erased += [
            r.ucid
            for r in conn.execute(
                sa.select(profiles.c.ucid).where(
                    profiles.c.org_id == org_id,
                    sa.or_(profiles.c.ucid.in_(part), profiles.c.merged_into.in_(part)),
                )
            )
        ]
        conn.execute(profile_ids.delete().where(profile_ids.c.org_id == org_id, profile_ids.c.ucid.in_(part)))
        conn.execute(
            profiles.delete().where(
                profiles.c.org_id == org_id,
                sa.or_(profiles.c.ucid.in_(part), profiles.c.merged_into.in_(part)),
            )
        )
    delete_journal(conn, org_id, erased)
    delete_ledger(conn, org_id, erased)
    return erased
