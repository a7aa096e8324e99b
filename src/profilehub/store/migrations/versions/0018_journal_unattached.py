"""The journal's unattached ids: which journal rows hold an id their profile did not take, so an
erasure of the id's holder takes it out of them without reading the whole journal
(docs/privacy.md#what-an-erasure-leaves).

Journal rows written before this revision have none: an erasure leaves their ids of other people
as it did before (the note in docs/privacy.md says so).

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Opaque keys compare byte by byte on PostgreSQL, as 0016 made the other tables' do.
    collation = "C" if op.get_bind().dialect.name == "postgresql" else None
    op.create_table(
        "journal_unattached",
        sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("ucid", sa.String(36, collation=collation), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("region", sa.String(16, collation=collation), primary_key=True),
        sa.Column("id_type", sa.String(100, collation=collation), primary_key=True),
        sa.Column("value", sa.String(512, collation=collation), primary_key=True),
        sa.Column("ts", sa.BigInteger, nullable=False),
    )
    op.create_index(
        "ix_journal_unattached_id", "journal_unattached", ["org_id", "region", "id_type", "value"]
    )


def downgrade() -> None:
    op.drop_index("ix_journal_unattached_id", table_name="journal_unattached")
    op.drop_table("journal_unattached")
