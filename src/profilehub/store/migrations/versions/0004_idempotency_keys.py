"""Idempotency keys: the first answer of each keyed write, for 24 hours.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_idempotency_keys_org_created", "idempotency_keys", ["org_id", "created_ts"])


def downgrade() -> None:
    op.drop_table("idempotency_keys")
