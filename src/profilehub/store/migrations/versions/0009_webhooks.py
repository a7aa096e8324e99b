"""Push delivery: webhook endpoints, their pending events, and stream cursors.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("endpoint_id", sa.String(64), primary_key=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("event_types", sa.Text, nullable=False, server_default=""),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
        sa.Column("disabled_ts", sa.BigInteger, nullable=True),
        sa.Column("disabled_reason", sa.Text, nullable=True),
        sa.Column("cursor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("failing_since", sa.BigInteger, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("delivered", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "webhook_pending",
        sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("endpoint_id", sa.String(64), primary_key=True),
        sa.Column("event_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("ordering_key", sa.String(64), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_ts", sa.BigInteger, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
    )
    op.create_index(
        "ix_webhook_pending_key", "webhook_pending", ["org_id", "endpoint_id", "ordering_key", "event_id"]
    )
    op.create_index("ix_webhook_pending_due", "webhook_pending", ["org_id", "endpoint_id", "next_attempt_ts"])
    op.create_table(
        "stream_cursors",
        sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("stream", sa.String(200), primary_key=True),
        sa.Column("cursor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("published", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.BigInteger, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("stream_cursors")
    op.drop_table("webhook_pending")
    op.drop_table("webhook_endpoints")
