"""CRM dialect: custom objects and attributes, records of every object, value indexes, emails.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "crm_objects",
        sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("slug", sa.String(60), primary_key=True),
        sa.Column("singular_name", sa.String(255), nullable=False),
        sa.Column("plural_name", sa.String(255), nullable=False),
        sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
        sa.Column("updated_ts", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "crm_attributes",
        sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("object_slug", sa.String(60), primary_key=True),
        sa.Column("key", sa.String(80), primary_key=True),
        sa.Column("label", sa.String(255), nullable=False),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("is_unique", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("is_required", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("is_archived", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("options", sa.Text, nullable=False, server_default="[]"),
        sa.Column("config", sa.Text, nullable=False, server_default="{}"),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
        sa.Column("updated_ts", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "crm_records",
        sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("object_slug", sa.String(60), primary_key=True),
        sa.Column("record_id", sa.String(36), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("data", sa.Text, nullable=False, server_default="{}"),
        sa.Column("search_text", sa.Text, nullable=False, server_default=""),
        sa.Column("created_ts", sa.BigInteger, nullable=False),
        sa.Column("updated_ts", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_crm_records_seq", "crm_records", ["org_id", "object_slug", "seq"])
    op.create_table(
        "crm_values",
        sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("object_slug", sa.String(60), primary_key=True),
        sa.Column("attribute_key", sa.String(80), primary_key=True),
        sa.Column("value", sa.String(1024), primary_key=True),
        sa.Column("record_id", sa.String(36), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_crm_values_record", "crm_values", ["org_id", "object_slug", "record_id"])
    op.create_table(
        "crm_unique_values",
        sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("object_slug", sa.String(60), primary_key=True),
        sa.Column("attribute_key", sa.String(80), primary_key=True),
        sa.Column("value", sa.String(1024), primary_key=True),
        sa.Column("record_id", sa.String(36), nullable=False),
    )
    op.create_index(
        "ix_crm_unique_values_record", "crm_unique_values", ["org_id", "object_slug", "record_id"]
    )
    op.create_table(
        "crm_person_emails",
        sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("email_lower", sa.String(320), primary_key=True),
        sa.Column("person_id", sa.String(36), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
    )
    op.create_index("ix_crm_person_emails_person", "crm_person_emails", ["org_id", "person_id"])


def downgrade() -> None:
    for table in (
        "crm_person_emails",
        "crm_unique_values",
        "crm_values",
        "crm_records",
        "crm_attributes",
        "crm_objects",
    ):
        op.drop_table(table)
