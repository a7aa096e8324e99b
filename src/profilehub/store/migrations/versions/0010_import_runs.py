"""Import runs: each ``profilehub import``'s progress, for ``serve``'s ``/metrics``.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "import_runs",
        sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("source_bytes", sa.BigInteger, nullable=False),
        sa.Column("read_bytes", sa.BigInteger, nullable=False),
        sa.Column("records_read", sa.BigInteger, nullable=False),
        sa.Column("records_created", sa.BigInteger, nullable=False),
        sa.Column("records_updated", sa.BigInteger, nullable=False),
        sa.Column("records_rejected", sa.BigInteger, nullable=False),
        sa.Column("started_ts", sa.BigInteger, nullable=False),
        sa.Column("updated_ts", sa.BigInteger, nullable=False),
        sa.Column("finished_ts", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_import_runs_org_updated", "import_runs", ["org_id", "updated_ts"])


def downgrade() -> None:
    op.drop_table("import_runs")
