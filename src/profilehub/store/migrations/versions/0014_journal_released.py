"""The journal keeps the ids a write let go of (a CRM PATCH that drops an email), so an unmerge's
replay lets go of them too (docs/unmerge.md).

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: existing rows released nothing, and adding the column rewrites no row.
    op.add_column("profile_writes", sa.Column("released", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("profile_writes") as batch:
        batch.drop_column("released")
