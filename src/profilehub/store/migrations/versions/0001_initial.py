"""Initial schema: orgs, credentials, identity strategy, profiles, ids, change log.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orgs",
        sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("keep_raw_ids", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("strategy_version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "org_regions",
        sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("region", sa.String(16), primary_key=True),
    )
    op.create_table(
        "credentials",
        sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("secret_hash", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        sa.Column("scopes", sa.String(500), nullable=False),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
        sa.Column("revoked_ts", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "id_types",
        sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("id_type", sa.String(100), primary_key=True),
        sa.Column("namespace", sa.String(100), nullable=False),
        sa.Column("id_class", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("max_per_profile", sa.Integer, nullable=False),
    )
    op.create_table(
        "blocked_values",
        sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("id_type", sa.String(100), primary_key=True),
        sa.Column("value", sa.String(512), primary_key=True),
    )
    op.create_table(
        "profiles",
        sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("ucid", sa.String(36), primary_key=True),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
        sa.Column("updated_ts", sa.BigInteger, nullable=False),
        sa.Column("merged_into", sa.String(36), nullable=True),
        sa.Column("data", sa.Text, nullable=False, server_default="{}"),
    )
    op.create_index("ix_profiles_merged_into", "profiles", ["org_id", "merged_into"])
    op.create_table(
        "profile_ids",
        sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("region", sa.String(16), primary_key=True),
        sa.Column("id_type", sa.String(100), primary_key=True),
        sa.Column("value", sa.String(512), primary_key=True),
        sa.Column("ucid", sa.String(36), nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_profile_ids_ucid", "profile_ids", ["org_id", "ucid"])
    op.create_table(
        "changes",
        sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("change_id", sa.String(40), primary_key=True),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("entity", sa.String(40), nullable=False),
        sa.Column("entity_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
    )
    op.create_index("ix_changes_entity", "changes", ["org_id", "entity", "entity_id"])


def downgrade() -> None:
    for table in (
        "changes",
        "profile_ids",
        "profiles",
        "blocked_values",
        "id_types",
        "credentials",
        "org_regions",
        "orgs",
    ):
        op.drop_table(table)
