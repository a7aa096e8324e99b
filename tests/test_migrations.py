"""A database written by an older release upgrades in place, keeping its data."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.runtime.migration import MigrationContext

from profilehub.profiles import ProfileService, ProfileWrite
from profilehub.store.database import Database, _alembic_config, head_revision, make_engine
from tests.conftest import make_org

FIRST_RELEASE = "0001"


def test_first_release_database_upgrades_in_place(database_url: str) -> None:
    engine = make_engine(database_url)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), FIRST_RELEASE)
    with engine.begin() as conn:
        # Written the way the first release wrote its rows.
        conn.execute(
            sa.text(
                "INSERT INTO orgs (org_id, name, keep_raw_ids, strategy_version, created_ts) "
                "VALUES (42, 'Old', false, 1, 1)"
            )
        )
        conn.execute(sa.text("INSERT INTO org_regions (org_id, region) VALUES (42, 'EU')"))
        conn.execute(sa.text("INSERT INTO id_types VALUES (42, 'crm_id', 'crm', 'primary', 1, 1)"))
        conn.execute(
            sa.text(
                "INSERT INTO profiles (org_id, ucid, region, created_ts, updated_ts, merged_into, data) VALUES "
                "(42, '00000000-0000-4000-8000-000000000001', 'EU', 5, 6, NULL, "
                '\'{"profile": {"name": "Old", "_ts": "6"}}\')'
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO profile_ids VALUES (42, 'EU', 'crm_id', 'C-1', "
                "'00000000-0000-4000-8000-000000000001', 6)"
            )
        )
    engine.dispose()

    db = Database(database_url)  # opening it is the upgrade
    try:
        with db.read() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == head_revision()
        service = ProfileService(db)
        [found] = service.search(42, None, {"crm_id": ["C-1"]})
        assert found["ucid"] == "00000000-0000-4000-8000-000000000001"
        assert found["profile"]["name"] == "Old"
        [result] = service.write_batch(
            [ProfileWrite(42, "EU", {"crm_id": "C-1"}, {"profile": {"n": 2}})], "t"
        )
        assert not isinstance(result, Exception) and result.profile["ucid"] == found["ucid"]
        assert result.profile["profile"] == {"name": "Old", "n": 2, "_ts": result.profile["profile"]["_ts"]}
    finally:
        db.close()


def test_reopening_a_current_database_changes_nothing(database_url: str) -> None:
    db = Database(database_url)
    make_org(db)
    db.close()
    again = Database(database_url)
    try:
        with again.read() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM orgs")).scalar_one() == 1
    finally:
        again.close()
