"""PostgreSQL: the profile store's opaque keys (ucids, id values and idTypes, change ids, event
entity ids) compare byte by byte (``COLLATE "C"``), as SQLite's always have.

Under the database's own collation (``C.UTF-8``, ``en_US.UTF-8``...) PostgreSQL 15 compares every
text key through the C library's ``strcoll`` and sorts without abbreviated keys: building
``profile_ids``' keys after a bulk load spent most of its CPU there (the ucid index of 4.7 million
id rows, 22 s of server CPU at load 10; the bulk write of 300,000 records 20.8-24.9 -> 17.6-18.1 s,
bench/NOTES-bulk-engine.md). These values are hashes, uuids, hex counters and names the store
matches exactly: nothing reads them in a language's order. Equality is the same under both
collations (both are deterministic), so every lookup finds what it found; the one ordered read,
the change log by ``change_id`` (fixed-length lower-case hex), sorts the same under any collation.

Each table's columns change in one ``ALTER TABLE``: the rows are not rewritten (the type stays),
but the indexes over those columns are rebuilt, holding the table's lock meanwhile (minutes on a
store of tens of millions of ids). SQLite: nothing to do.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# table -> (column, its type), the columns of its keys and indexes that hold opaque values
OPAQUE = {
    "profiles": (("ucid", "varchar(36)"), ("merged_into", "varchar(36)")),
    "profile_ids": (
        ("region", "varchar(16)"),
        ("id_type", "varchar(100)"),
        ("value", "varchar(512)"),
        ("ucid", "varchar(36)"),
    ),
    "changes": (("change_id", "varchar(40)"), ("entity", "varchar(40)"), ("entity_id", "varchar(64)")),
    "events": (("feed", "varchar(8)"), ("entity_id", "varchar(64)")),
    "profile_writes": (("ucid", "varchar(36)"),),
    "consent_ledger": (("ucid", "varchar(36)"),),
}


def _collate(collation: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, columns in OPAQUE.items():
        changes = ", ".join(
            f'ALTER COLUMN {column} TYPE {kind} COLLATE "{collation}"' for column, kind in columns
        )
        op.execute(f"ALTER TABLE {table} {changes}")


def upgrade() -> None:
    _collate("C")


def downgrade() -> None:
    _collate("default")
