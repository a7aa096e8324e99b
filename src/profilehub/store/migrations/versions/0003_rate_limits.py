"""Per-org request rate limits.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("per_second", sa.Integer, nullable=True),
        sa.Column("per_minute", sa.Integer, nullable=True),
        sa.Column("updated_ts", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rate_limits")
