"""Console sessions: one row per signed-in browser, ended by signing out.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("session_hash", sa.String(64), primary_key=True),
        sa.Column("credential_hash", sa.String(64), nullable=False),
        sa.Column("credential_kind", sa.String(16), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
        sa.Column("expires_ts", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("console_sessions")
