"""SQLite: ``profile_ids`` as a WITHOUT ROWID table.

Every identifier is one row keyed by (org, region, idType, value). As a rowid table SQLite keeps
that key twice (the table and its primary-key index), so each id written is three B-tree inserts
and each lookup two searches; clustered on its primary key it is two inserts and one search.
PostgreSQL is unchanged.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        "CREATE TABLE profile_ids_clustered ("
        "org_id BIGINT NOT NULL, region VARCHAR(16) NOT NULL, id_type VARCHAR(100) NOT NULL, "
        "value VARCHAR(512) NOT NULL, ucid VARCHAR(36) NOT NULL, ts BIGINT NOT NULL, "
        "PRIMARY KEY (org_id, region, id_type, value)) WITHOUT ROWID"
    )
    op.execute(
        "INSERT INTO profile_ids_clustered (org_id, region, id_type, value, ucid, ts) "
        "SELECT org_id, region, id_type, value, ucid, ts FROM profile_ids"
    )
    op.execute("DROP TABLE profile_ids")
    op.execute("ALTER TABLE profile_ids_clustered RENAME TO profile_ids")
    op.create_index("ix_profile_ids_ucid", "profile_ids", ["org_id", "ucid"])


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        "CREATE TABLE profile_ids_rowid ("
        "org_id BIGINT NOT NULL, region VARCHAR(16) NOT NULL, id_type VARCHAR(100) NOT NULL, "
        "value VARCHAR(512) NOT NULL, ucid VARCHAR(36) NOT NULL, ts BIGINT NOT NULL, "
        "PRIMARY KEY (org_id, region, id_type, value))"
    )
    op.execute(
        "INSERT INTO profile_ids_rowid SELECT org_id, region, id_type, value, ucid, ts FROM profile_ids"
    )
    op.execute("DROP TABLE profile_ids")
    op.execute("ALTER TABLE profile_ids_rowid RENAME TO profile_ids")
    op.create_index("ix_profile_ids_ucid", "profile_ids", ["org_id", "ucid"])
