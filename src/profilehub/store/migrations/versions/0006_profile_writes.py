"""The journal of profile writes (explain and undo merges) and its per-org retention.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "profile_writes",
        sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("ucid", sa.String(36), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("created", sa.Boolean, nullable=False),
        sa.Column("named_ucid", sa.String(36), nullable=True),
        sa.Column("ids", sa.Text, nullable=False),
        sa.Column("upsert", sa.Text, nullable=False),
        sa.Column("merges", sa.Text, nullable=False, server_default="{}"),
    )
    op.create_table(
        "journal_retention",
        sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("max_age_days", sa.Integer, nullable=True),
        sa.Column("updated_ts", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("journal_retention")
    op.drop_table("profile_writes")
