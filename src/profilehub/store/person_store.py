"""Replacing one person's rows with a rebuilt set (an unmerge): profiles, ids, journal and
consent ledger.

The caller holds the writer and the scope's lock; everything happens in its transaction.
"""

from __future__ import annotations

import orjson
from sqlalchemy.engine import Connection

from profilehub.identity.memory import MemoryStorage
from profilehub.identity.storage import WriteRecord
from profilehub.store.batch_store import chunks
from profilehub.store.consent_ledger import replace_ledger
from profilehub.store.journal_store import (
    JOURNAL_COLUMNS,
    delete_journal,
    insert_unattached,
    journal_row,
    unattached_rows,
)
from profilehub.store.tables import profile_ids, profile_writes, profiles


def replace_person(
    conn: Connection,
    org_id: int,
    ucids: list[str],
    rebuilt: MemoryStorage,
    journal: list[tuple[int, WriteRecord]],
) -> None:
    """Delete the profiles ``ucids`` (a master and its merged ucids) with their ids and journal,
    and write ``rebuilt``'s profiles and ids and ``journal`` (``(seq, record)``, as replayed: its
    unattached ids are the replay's) instead."""
    for part in chunks(sorted(set(ucids))):
        conn.execute(profile_ids.delete().where(profile_ids.c.org_id == org_id, profile_ids.c.ucid.in_(part)))
        conn.execute(profiles.delete().where(profiles.c.org_id == org_id, profiles.c.ucid.in_(part)))
    replace_ledger(conn, org_id, ucids, journal)
    delete_journal(conn, org_id, sorted(set(ucids)))
    rows = []
    id_rows = []
    for (org, ucid), row in sorted(rebuilt.profiles.items()):
        if org != org_id:
            continue
        rows.append(
            {
                "org_id": org_id,
                "ucid": ucid,
                "region": row.region,
                "created_ts": row.created_ts,
                "updated_ts": row.updated_ts,
                "merged_into": row.merged_into,
                "data": orjson.dumps(row.data).decode(),
            }
        )
        id_rows += [
            {
                "org_id": org_id,
                "region": row.region,
                "id_type": ident.id_type,
                "value": ident.value,
                "ucid": ucid,
                "ts": ts,
            }
            for ident, ts in sorted(row.ids.items())
        ]
    if rows:
        conn.execute(profiles.insert(), rows)
    if id_rows:
        conn.execute(profile_ids.insert(), id_rows)
    if journal:
        conn.execute(
            profile_writes.insert(),
            [dict(zip(JOURNAL_COLUMNS, journal_row(record, seq), strict=True)) for seq, record in journal],
        )
        # As the replay resolved each write (``delete_journal`` took the old rows' away).
        insert_unattached(conn, [row for seq, record in journal for row in unattached_rows(record, seq)])
