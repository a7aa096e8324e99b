"""Table definitions.

Every table is keyed by ``org_id`` first, and no query joins across orgs, so the schema can be
distributed by ``org_id`` later without change. Timestamps are epoch milliseconds (BIGINT).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

orgs = sa.Table(
    "orgs",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(200), nullable=False),
    # Raw emails and phone numbers are hashed and dropped unless the org opts in.
    sa.Column("keep_raw_ids", sa.Boolean, nullable=False, server_default=sa.false()),
    # Bumped whenever the identity strategy changes, so caches know to reload it.
    sa.Column("strategy_version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("created_ts", sa.BigInteger, nullable=False),
)

org_regions = sa.Table(
    "org_regions",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("region", sa.String(16), primary_key=True),
)

credentials = sa.Table(
    "credentials",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    # sha256 of the whole secret; the secret itself is never stored.
    sa.Column("secret_hash", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # "apikey" (CDP) or "token" (CRM)
    sa.Column("prefix", sa.String(32), nullable=False),  # shown in listings and the change log
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    sa.Column("scopes", sa.String(500), nullable=False),
    sa.Column("created_ts", sa.BigInteger, nullable=False),
    sa.Column("revoked_ts", sa.BigInteger, nullable=True),
)

id_types = sa.Table(
    "id_types",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("id_type", sa.String(100), primary_key=True),
    sa.Column("namespace", sa.String(100), nullable=False),
    sa.Column("id_class", sa.String(16), nullable=False),  # primary | secondary | disabled
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("max_per_profile", sa.Integer, nullable=False),
)

blocked_values = sa.Table(
    "blocked_values",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    # "*" blocks the value for every idType.
    sa.Column("id_type", sa.String(100), primary_key=True),
    sa.Column("value", sa.String(512), primary_key=True),
)

profiles = sa.Table(
    "profiles",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("ucid", sa.String(36), primary_key=True),
    sa.Column("region", sa.String(16), nullable=False),
    sa.Column("created_ts", sa.BigInteger, nullable=False),
    sa.Column("updated_ts", sa.BigInteger, nullable=False),
    # Set when this profile was merged away; it then resolves to its master.
    sa.Column("merged_into", sa.String(36), nullable=True),
    # JSON: {category: {attr: value, "_ts": "<epoch ms>"}}
    sa.Column("data", sa.Text, nullable=False, server_default="{}"),
    sa.Index("ix_profiles_merged_into", "org_id", "merged_into"),
)

profile_ids = sa.Table(
    "profile_ids",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("region", sa.String(16), primary_key=True),
    sa.Column("id_type", sa.String(100), primary_key=True),
    sa.Column("value", sa.String(512), primary_key=True),
    # Always a master ucid: a merge moves ids, so lookups never chase links.
    sa.Column("ucid", sa.String(36), nullable=False),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Index("ix_profile_ids_ucid", "org_id", "ucid"),
)

changes = sa.Table(
    "changes",
    metadata,
    sa.Column("org_id", sa.BigInteger, primary_key=True, autoincrement=False),
    # Time-ordered id (epoch-ms hex + random), so the feed can be read in order per org.
    sa.Column("change_id", sa.String(40), primary_key=True),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("entity", sa.String(40), nullable=False),
    sa.Column("entity_id", sa.String(64), nullable=False),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
    sa.Index("ix_changes_entity", "org_id", "entity", "entity_id"),
)
