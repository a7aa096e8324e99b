"""Suppression: each org's fingerprint key and the fingerprints of erased ids.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Orgs made before this get their key at their first erasure (suppression_store.org_key).
    op.create_table(
        "suppression_keys",
        sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "suppressed_ids",
        sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("region", sa.String(16), primary_key=True),
        sa.Column("fingerprint", sa.String(64), primary_key=True),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("suppressed_ids")
    op.drop_table("suppression_keys")
