"""A database written by an older release upgrades in place, keeping its data."""

from __future__ import annotations

import hashlib
import json

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner

from profilehub.cli import main
from profilehub.crm.companies import list_companies
from profilehub.crm.people import get_person, list_people, upsert_people_batch
from profilehub.orgs import get_org
from profilehub.profiles import ProfileService, ProfileWrite
from profilehub.store.database import (
    SCHEMA_HEAD,
    Database,
    SchemaAhead,
    _alembic_config,
    head_revision,
    make_engine,
)
from profilehub.store.strategy_store import load_strategy, seed_default_strategy
from tests.conftest import make_org, migrated_url
from tests.serve_process import free_port

FIRST_RELEASE = "0001"
ANN = "00000000-0000-4000-8000-00000000a001"
BOB = "00000000-0000-4000-8000-00000000b002"


def _old_org(conn: sa.Connection, id_type_ts: int) -> None:
    """Org 42 (region EU, a primary ``crm_id`` type) written the way the first release wrote it."""
    conn.execute(
        sa.text(
            "INSERT INTO orgs (org_id, name, keep_raw_ids, strategy_version, created_ts) "
            "VALUES (42, 'Old', false, 1, 1)"
        )
    )
    conn.execute(sa.text("INSERT INTO org_regions (org_id, region) VALUES (42, 'EU')"))
    conn.execute(
        sa.text("INSERT INTO id_types VALUES (42, 'crm_id', 'crm', 'primary', 1, :ts)"), {"ts": id_type_ts}
    )


def test_the_head_known_without_alembic_is_alembics_head() -> None:
    # Commands open a database at SCHEMA_HEAD without Alembic: left behind by a new migration, it
    # would leave every database at the previous revision un-upgraded.
    assert head_revision() == SCHEMA_HEAD, "a new migration: set store.database.SCHEMA_HEAD to it"


def test_first_release_database_upgrades_in_place(database_url: str) -> None:
    engine = make_engine(database_url)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), FIRST_RELEASE)
    with engine.begin() as conn:
        # Written the way the first release wrote its rows.
        _old_org(conn, id_type_ts=1)
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


def test_a_store_before_crm_links_upgrades_and_links_its_people(database_url: str) -> None:
    """At 0007 (the last revision without links), with orgs, profiles and CRM people in it."""
    engine = make_engine(database_url)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0007")
    with engine.begin() as conn:
        for org_id in (42, 43):
            conn.execute(
                sa.text(
                    "INSERT INTO orgs (org_id, name, keep_raw_ids, strategy_version, created_ts) "
                    f"VALUES ({org_id}, 'Old', false, 1, 1)"
                )
            )
            conn.execute(sa.text(f"INSERT INTO org_regions VALUES ({org_id}, 'UK'), ({org_id}, 'EU')"))
        seed_default_strategy(conn, 42)
        # as 0007 seeded it: the link idType came with 0008
        conn.execute(sa.text("DELETE FROM id_types WHERE id_type = 'crm_person_id'"))
        # A profile of the CDP dialect holding ann's email (its sha256 digest), and two people.
        conn.execute(
            sa.text(
                "INSERT INTO profiles (org_id, ucid, region, created_ts, updated_ts, merged_into, data) "
                "VALUES (42, '00000000-0000-4000-8000-000000000001', 'EU', 5, 6, NULL, '{}')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO profile_ids VALUES (42, 'EU', 'email_sha256_lowercase', :h, "
                "'00000000-0000-4000-8000-000000000001', 6)"
            ),
            {"h": hashlib.sha256(b"ann@old.example").hexdigest()},
        )
        for seq, (pid, email) in enumerate([(ANN, "ann@old.example"), (BOB, "bob@old.example")], 1):
            conn.execute(
                sa.text(
                    "INSERT INTO crm_records (org_id, object_slug, record_id, seq, data, search_text, "
                    "created_ts, updated_ts) VALUES (42, 'people', :id, :seq, :data, '', 7, 7)"
                ),
                {"id": pid, "seq": seq, "data": json.dumps({"first_name": "Old", "emails": [email]})},
            )
            conn.execute(
                sa.text("INSERT INTO crm_person_emails VALUES (42, :e, :id, 0)"), {"e": email, "id": pid}
            )
    engine.dispose()

    db = Database(database_url)  # opening it is the upgrade
    try:
        with db.read() as conn:
            assert get_org(conn, 42).home_region == "EU"  # the first region, alphabetically
            assert "crm_person_id" in load_strategy(conn, 42).id_types
            assert get_person(conn, 42, ANN)["ucid"] is None  # not linked yet
        result = CliRunner().invoke(
            main, ["org", "link-people", "--org-id", "42"], env={"PROFILEHUB_DATABASE_URL": database_url}
        )
        assert result.exit_code == 0, result.output
        assert "linked 2 people" in result.output
        service = ProfileService(db)
        [ann] = service.search(42, None, {"email": ["ann@old.example"]})
        assert ann["ucid"] == "00000000-0000-4000-8000-000000000001"  # joined the CDP profile
        assert ann["ids"]["crm"][0]["crm_person_id"] == ANN
        with db.read() as conn:
            assert get_person(conn, 42, ANN)["ucid"] == ann["ucid"]
            assert get_person(conn, 42, BOB)["ucid"] is not None
        again = CliRunner().invoke(
            main, ["org", "link-people", "--org-id", "42"], env={"PROFILEHUB_DATABASE_URL": database_url}
        )
        assert "linked 0 people" in again.output
        # and a person's next write links it too (here: one written since, without the command)
        [bob] = upsert_people_batch(db, 42, [{"emails": ["bob@old.example"], "lastName": "B"}], "email", "t")
        assert not isinstance(bob, Exception) and bob.person["ucid"] is not None
    finally:
        db.close()


def test_opaque_keys_compare_byte_by_byte_after_the_upgrade(database_url: str) -> None:
    """0016: ids, ucids and change ids written before it are still found, and order by their bytes
    on both databases (PostgreSQL's ``COLLATE "C"``, SQLite's own), whatever the server's locale."""
    engine = make_engine(database_url)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0015")
    values = ["b-2", "B-1", "a", "_x", "Z", "é", "10", "9"]
    with engine.begin() as conn:
        _old_org(conn, id_type_ts=5)
        ucid = "00000000-0000-4000-8000-000000000001"
        conn.execute(
            sa.text(
                "INSERT INTO profiles (org_id, ucid, region, created_ts, updated_ts, merged_into, data) "
                "VALUES (42, :u, 'EU', 5, 6, NULL, '{}')"
            ),
            {"u": ucid},
        )
        for value in values:
            conn.execute(
                sa.text("INSERT INTO profile_ids VALUES (42, 'EU', 'crm_id', :v, :u, 6)"),
                {"v": value, "u": ucid},
            )
    engine.dispose()

    db = Database(database_url)  # opening it is the upgrade
    try:
        with db.read() as conn:
            ordered = conn.execute(
                sa.text("SELECT value FROM profile_ids WHERE org_id = 42 ORDER BY value")
            ).scalars()
            assert list(ordered) == sorted(values)  # code point order, as Python and SQLite sort
        [found] = ProfileService(db).search(42, None, {"crm_id": ["é"]})
        assert found["ucid"] == ucid
    finally:
        db.close()


def test_people_stored_before_case_folding_are_found_by_any_case_after_db_upgrade(database_url: str) -> None:
    """0017: search text stored lowercased (as 0016's version wrote it) is case-folded, so a term
    typed in any case finds people and companies written before; more rows than one batch of it."""
    engine = make_engine(database_url)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0016")
    people = [(f"00000000-0000-4000-8000-{n:012d}", f"P{n}", f"Hauptstraße {n}") for n in range(1, 1202)]
    people.append((ANN, "Ann", "Paris"))
    with engine.begin() as conn:
        _old_org(conn, id_type_ts=5)
        conn.execute(
            sa.text(
                "INSERT INTO crm_records (org_id, object_slug, record_id, seq, data, search_text, "
                "created_ts, updated_ts) VALUES (42, 'people', :id, :seq, :data, :text, 7, 7)"
            ),
            [
                {
                    "id": pid,
                    "seq": seq,
                    "data": json.dumps({"first_name": name, "primary_location": where}),
                    "text": f"{name} {where}".lower(),  # the search text as the older version built it
                }
                for seq, (pid, name, where) in enumerate(people, 1)
            ],
        )
        conn.execute(
            sa.text(
                "INSERT INTO crm_records (org_id, object_slug, record_id, seq, data, search_text, "
                "created_ts, updated_ts) VALUES (42, 'companies', :id, 1, :data, :text, 7, 7)"
            ),
            {"id": BOB, "data": json.dumps({"name": "Straßenbau AG"}), "text": "straßenbau ag"},
        )
    engine.dispose()

    status, output = _profilehub(database_url, "db", "upgrade")
    assert status == 0 and f"to {head_revision()}" in output, output
    db = Database(database_url)
    try:
        with db.read() as conn:
            found, page = list_people(conn, 42, page=13, count=100, search="STRASSE")
            assert page.total == 1201 and [p["firstName"] for p in found] == ["P1201"]
            found, page = list_people(conn, 42, page=1, count=100, search="PARIS")
            assert [p["firstName"] for p in found] == ["Ann"]
            [company], _ = list_companies(conn, 42, page=1, count=100, search="strassenbau")
            assert company["name"] == "Straßenbau AG"
    finally:
        db.close()


def test_a_store_before_journal_unattached_upgrades_and_its_erasures_reach_other_journals(
    database_url: str,
) -> None:
    """0018: a store at 0017 with a journaled profile upgrades; a write kept apart from another
    person's phone number by a limit (``id_owned_elsewhere``) lands on that profile, and erasing the
    number's holder takes the number out of the journal entry that kept it, leaving the rest."""
    engine = make_engine(database_url)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0017")
    ann = "00000000-0000-4000-8000-00000000a017"
    ann_hash = hashlib.sha256(b"ann@old.example").hexdigest()
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO orgs (org_id, name, keep_raw_ids, strategy_version, created_ts) "
                "VALUES (42, 'Old', false, 1, 1)"
            )
        )
        conn.execute(sa.text("INSERT INTO org_regions VALUES (42, 'EU')"))
        seed_default_strategy(conn, 42)
        conn.execute(
            sa.text(
                "INSERT INTO profiles (org_id, ucid, region, created_ts, updated_ts, merged_into, data) "
                "VALUES (42, :u, 'EU', 5, 6, NULL, '{}')"
            ),
            {"u": ann},
        )
        conn.execute(
            sa.text("INSERT INTO profile_ids VALUES (42, 'EU', 'email_sha256_lowercase', :h, :u, 6)"),
            {"h": ann_hash, "u": ann},
        )
        conn.execute(
            sa.text(
                "INSERT INTO profile_writes (org_id, ucid, seq, ts, region, actor, created, named_ucid, "
                "ids, upsert, merges) VALUES (42, :u, 5000, 5, 'EU', 'old', true, NULL, :ids, '{}', '{}')"
            ),
            {"u": ann, "ids": json.dumps([["email_sha256_lowercase", ann_hash]])},
        )
    engine.dispose()

    db = Database(database_url)  # opening it is the upgrade
    try:
        service = ProfileService(db)
        [bob] = service.write_batch(
            [ProfileWrite(42, "EU", {"email": "bob@old.example", "cellphone": "+4930555017"})], "t"
        )
        [landed] = service.write_batch(
            [ProfileWrite(42, "EU", {"email": "ann@old.example", "cellphone": "+4930555017"})], "t"
        )
        assert not isinstance(bob, Exception) and not isinstance(landed, Exception)
        assert landed.profile["ucid"] == ann
        assert "id_owned_elsewhere" in [n["code"] for n in landed.notices]
        phone = hashlib.sha256(b"+4930555017").hexdigest()

        def journal() -> str:
            with db.read() as conn:
                rows = conn.execute(
                    sa.text("SELECT ids FROM profile_writes WHERE org_id = 42 AND ucid = :u"), {"u": ann}
                )
                return "\n".join(r[0] for r in rows)

        assert phone in journal()
        service.delete(42, "EU", {"email": ["bob@old.example"]}, "t")
        # Both of ann's entries stay (the one from before the upgrade as it was), without bob's number.
        kept = journal()
        assert phone not in kept and kept.count(ann_hash) == 2
        with db.read() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM journal_unattached")).scalar_one() == 0
    finally:
        db.close()


def _profilehub(database_url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env={"PROFILEHUB_DATABASE_URL": database_url})
    # Refusals are a ClickException (SystemExit 1), never an exception escaping as a traceback.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_db_upgrade_says_what_it_did(database_url: str) -> None:
    head = head_revision()
    assert _profilehub(database_url, "db", "upgrade")[1].startswith(
        f"created the schema at revision {head} ("
    )
    assert _profilehub(database_url, "db", "upgrade")[1].startswith(
        f"the schema is already at revision {head} ("
    )


def test_db_upgrade_of_an_older_store_names_both_revisions_and_keeps_its_data(database_url: str) -> None:
    engine = make_engine(database_url)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), FIRST_RELEASE)
    with engine.begin() as conn:
        _old_org(conn, id_type_ts=1)
    engine.dispose()
    status, output = _profilehub(database_url, "db", "upgrade")
    assert status == 0 and output.startswith(
        f"upgraded the schema from revision {FIRST_RELEASE} to {head_revision()} ("
    ), output
    assert "Old" in _profilehub(database_url, "org", "list")[1]


def _ahead(database_url: str) -> None:
    """The store as a newer profilehub leaves it: at a revision this version has no script for."""
    Database(migrated_url(database_url)).close()
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()


@pytest.mark.parametrize("command_line", [("db", "upgrade"), ("org", "list"), ("serve", "--port", "{port}")])
def test_a_store_of_a_newer_version_is_refused_and_left_alone(
    database_url: str, command_line: tuple[str, ...]
) -> None:
    _ahead(database_url)
    port = str(free_port())
    status, output = _profilehub(database_url, *(arg.replace("{port}", port) for arg in command_line))
    assert status == 1
    assert "revision 9999, unknown to this version" in output and "newer profilehub" in output, output
    with pytest.raises(SchemaAhead):
        Database(database_url)
    engine = make_engine(database_url)
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == "9999"
    engine.dispose()


def test_info_says_a_store_of_a_newer_version_is_ahead(database_url: str) -> None:
    _ahead(database_url)
    status, output = _profilehub(database_url, "info")
    assert status == 0
    assert f"schema revision: 9999 (ahead of this version's {head_revision()}" in output, output
    assert "db upgrade" not in output  # upgrading is what this version cannot do
