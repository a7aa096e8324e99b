"""Every table is led by ``org_id``, so the schema can be spread over several database nodes by
org (Citus: ``create_distributed_table(t, 'org_id')``, see docs/operations.md#scale-out) and a
request of one org touches one node.

Checked on the live, migrated schema of both backends (a migration that drifted from the
metadata is caught too) and on the metadata: the primary key's first column, every index's and
unique constraint's first column, and every foreign key carries ``org_id`` (distributed tables
may only reference each other through the distribution column), and ``org_id`` has one type
everywhere (co-located tables need the same type). Tables that are genuinely global are listed
below with the reason; a new table is either org-led or must be added there, deliberately.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from profilehub.store.database import Database
from profilehub.store.tables import metadata

# Tables not led by org_id, each with why it is global (what Citus would make of it).
GLOBAL_TABLES = {
    "alembic_version": "migration bookkeeping, one row: stays a local table on the coordinator",
    "event_sequence": "the events' cursor, one row for the database (commit-ordered ids across orgs): "
    "a local table on the coordinator",
}


def _problems(inspector: Any, table: str) -> list[str]:
    problems: list[str] = []
    columns = {c["name"]: c for c in inspector.get_columns(table)}
    if "org_id" not in columns:
        return [f"{table}: no org_id column"]
    if columns["org_id"].get("nullable", True):
        problems.append(f"{table}: org_id is nullable")
    if not isinstance(columns["org_id"]["type"], sa.BigInteger):
        problems.append(f"{table}: org_id is {columns['org_id']['type']!r}, not BIGINT")
    pk = inspector.get_pk_constraint(table).get("constrained_columns") or []
    if pk[:1] != ["org_id"]:
        problems.append(f"{table}: primary key {pk} does not start with org_id")
    for index in inspector.get_indexes(table):
        if index["column_names"][:1] != ["org_id"]:
            problems.append(
                f"{table}: index {index['name']} {index['column_names']} does not start with org_id"
            )
    for unique in inspector.get_unique_constraints(table):
        if unique["column_names"][:1] != ["org_id"]:
            problems.append(
                f"{table}: unique {unique['name']} {unique['column_names']} does not start with org_id"
            )
    for fk in inspector.get_foreign_keys(table):
        if "org_id" not in fk["constrained_columns"]:
            problems.append(f"{table}: foreign key {fk['constrained_columns']} without org_id")
    return problems


class _MetadataInspector:
    """The metadata's tables, answered in the inspector's shapes."""

    def __init__(self) -> None:
        self._tables = metadata.tables

    def get_columns(self, table: str) -> list[dict[str, Any]]:
        return [{"name": c.name, "nullable": c.nullable, "type": c.type} for c in self._tables[table].columns]

    def get_pk_constraint(self, table: str) -> dict[str, Any]:
        return {"constrained_columns": [c.name for c in self._tables[table].primary_key.columns]}

    def get_indexes(self, table: str) -> list[dict[str, Any]]:
        return [
            {"name": i.name, "column_names": [c.name for c in i.columns]} for i in self._tables[table].indexes
        ]

    def get_unique_constraints(self, table: str) -> list[dict[str, Any]]:
        return [
            {"name": c.name, "column_names": [col.name for col in c.columns]}
            for c in self._tables[table].constraints
            if isinstance(c, sa.UniqueConstraint)
        ]

    def get_foreign_keys(self, table: str) -> list[dict[str, Any]]:
        return [
            {"constrained_columns": [col.name for col in c.columns]}
            for c in self._tables[table].constraints
            if isinstance(c, sa.ForeignKeyConstraint)
        ]


def test_every_table_of_the_live_schema_is_led_by_org_id(database_url: str) -> None:
    db = Database(database_url)
    try:
        inspector = sa.inspect(db.engine)
        tables = set(inspector.get_table_names())
        assert set(metadata.tables) <= tables, "a table of the metadata is missing from the migrated schema"
        assert set(GLOBAL_TABLES) <= tables, "a table listed as global no longer exists: remove it"
        problems = [p for t in sorted(tables - set(GLOBAL_TABLES)) for p in _problems(inspector, t)]
    finally:
        db.close()
    assert problems == [], "tables not led by org_id (make them so, or classify them in GLOBAL_TABLES)"


def test_every_table_of_the_metadata_is_led_by_org_id() -> None:
    inspector = _MetadataInspector()
    problems = [p for t in sorted(set(metadata.tables) - set(GLOBAL_TABLES)) for p in _problems(inspector, t)]
    assert problems == []


def test_the_citus_example_in_the_docs_distributes_every_org_led_table() -> None:
    text = (Path(__file__).parents[1] / "docs" / "operations.md").read_text()
    first = re.search(r"create_distributed_table\('(\w+)', 'org_id'\)", text)
    listed = re.search(r"unnest\(ARRAY\[([^\]]*)\]", text)
    assert first and listed, "docs/operations.md has no Citus example"
    documented = {first.group(1), *re.findall(r"'(\w+)'", listed.group(1))}
    assert documented == set(metadata.tables) - set(GLOBAL_TABLES)
