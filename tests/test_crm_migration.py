"""Migration 0002 adds the CRM tables to a first-release database and can be rolled back."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command

from profilehub.crm.people import upsert_people_batch
from profilehub.store.database import Database, _alembic_config, make_engine
from tests.conftest import make_org

CRM_TABLES = {
    "crm_objects",
    "crm_attributes",
    "crm_records",
    "crm_values",
    "crm_unique_values",
    "crm_person_emails",
}


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_crm_tables_come_with_0002_and_go_with_its_downgrade(database_url: str) -> None:
    engine = make_engine(database_url)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0001")
    engine.dispose()
    assert not CRM_TABLES & _tables(database_url)

    db = Database(database_url)  # opening it upgrades to the head
    try:
        org = make_org(db)
        assert _tables(database_url) >= CRM_TABLES
        [result] = upsert_people_batch(
            db, org.org_id, [{"firstName": "Jane", "emails": ["j@a.co"]}], "email", "t"
        )
        assert not isinstance(result, Exception) and result.created
    finally:
        db.close()

    engine = make_engine(database_url)
    with engine.begin() as conn:
        command.downgrade(_alembic_config(conn), "0001")
    engine.dispose()
    assert not CRM_TABLES & _tables(database_url)
    assert {"orgs", "profiles", "changes"} <= _tables(database_url)
