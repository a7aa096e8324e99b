"""One person across both dialects: each org's home region and the idType linking CRM people.

Revision ID: 0008
Revises: 0007

Existing orgs get the first of their regions (in alphabetical order: the regions' order at
creation was never stored) as their home region, and the ``crm_person_id`` idType of the default
strategy. People written before this revision are linked on their next write, or all at once by
``profilehub org link-people`` (docs/crm.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("orgs", sa.Column("home_region", sa.String(16), nullable=True))
    op.execute(
        "UPDATE orgs SET home_region = "
        "(SELECT MIN(region) FROM org_regions WHERE org_regions.org_id = orgs.org_id)"
    )
    op.execute(
        "INSERT INTO id_types (org_id, id_type, namespace, id_class, priority, max_per_profile) "
        "SELECT org_id, 'crm_person_id', 'crm', 'primary', 1, 1 FROM orgs WHERE NOT EXISTS "
        "(SELECT 1 FROM id_types t WHERE t.org_id = orgs.org_id AND t.id_type = 'crm_person_id')"
    )
    # Servers cache strategies by version: a bump makes them read the new idType.
    op.execute("UPDATE orgs SET strategy_version = strategy_version + 1")


def downgrade() -> None:
    op.execute("DELETE FROM profile_ids WHERE id_type = 'crm_person_id'")
    op.execute("DELETE FROM id_types WHERE id_type = 'crm_person_id'")
    op.execute("UPDATE orgs SET strategy_version = strategy_version + 1")
    with op.batch_alter_table("orgs") as batch:
        batch.drop_column("home_region")
