"""Change delivery: the outbox of events and the cursor they are numbered by.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("event_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("feed", sa.String(8), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("region", sa.String(16), nullable=True),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("entity_id", sa.String(64), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
    )
    op.create_index("ix_events_feed", "events", ["org_id", "feed", "event_id"])
    op.create_index("ix_events_entity", "events", ["org_id", "entity_id"])
    sequence = op.create_table(
        "event_sequence",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("last_id", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(sequence, [{"name": "events", "last_id": 0}])


def downgrade() -> None:
    op.drop_table("event_sequence")
    op.drop_table("events")
