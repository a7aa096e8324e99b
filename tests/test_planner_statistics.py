"""PostgreSQL without autovacuum: profilehub analyses every table it writes, and says so at start-up.

The server's ``autovacuum`` setting is not ours to change (other databases share the server), so
the tests switch autovacuum off the way a table can: its ``autovacuum_enabled`` storage parameter.
That is a real condition the writer reads, and it holds whatever the server's own setting is.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from profilehub.cli import main
from profilehub.crm.people import upsert_people_batch
from profilehub.store.database import Database
from profilehub.store.statistics import _LOCK_KEY, _sample_lightly, written_tables
from tests.conftest import make_org
from tests.serve_process import free_port

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)

# The tables a person write fills (unique values belong to unique custom attributes only).
CRM_TABLES = ("crm_records", "crm_values", "crm_person_emails")


def _switch_autovacuum_off(database_url: str) -> None:
    setup = Database(database_url)  # creates the schema
    try:
        with setup.engine.begin() as conn:
            for table in written_tables():
                conn.exec_driver_sql(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    finally:
        setup.close()


def _analysed(db: Database, table: str) -> tuple[bool, float]:
    with db.read() as conn:
        row = conn.execute(
            sa.text(
                "SELECT s.last_analyze IS NOT NULL, c.reltuples FROM pg_class c "
                "JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.oid = to_regclass(:t)"
            ),
            {"t": table},
        ).one()
    return bool(row[0]), float(row[1])


def _write_people_until_analysed(db: Database, people: int, seconds: float) -> int:
    """Upsert people 100 at a time until the CRM tables are analysed or ``seconds`` pass; the
    people written so far. The writer looks at the tables' change counters between batches
    (PostgreSQL publishes them within about a second)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        batch = [{"emails": [f"p{people + i}@x.com"], "firstName": "P"} for i in range(100)]
        upsert_people_batch(db, 1234, batch, "email", "test")
        people += len(batch)
        if all(_analysed(db, t)[0] for t in CRM_TABLES):
            break
        time.sleep(0.2)
    return people


def test_serve_says_once_at_start_up_when_autovacuum_is_off(
    database_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import uvicorn

    _switch_autovacuum_off(database_url)
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", database_url)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    port = str(free_port())
    served = CliRunner().invoke(main, ["serve", "--port", port])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        listed = CliRunner().invoke(main, ["org", "list"])
        Database(database_url).close()  # a server worker's, a deliverer's or a command's store
    assert served.exit_code == 0 and listed.exit_code == 0, served.output + listed.output
    # A line of the server's JSON log on stderr, as every other: not plain text before the log.
    [warning] = [json.loads(line) for line in served.stderr.splitlines() if "autovacuum is off" in line]
    assert (warning["level"], warning["logger"]) == ("warning", "profilehub.serve"), warning
    # Off for the whole server (as on the development machine) or, where it is on, for the tables.
    message = warning["msg"]
    assert "ANALYZE" in message and ("crm_records" in message or "server" in message), message
    # Said by serve alone, once: not by every command, worker or deliverer that opens the store.
    assert "autovacuum" not in listed.output
    assert not [r for r in caplog.records if "autovacuum" in r.getMessage()]


def test_crm_tables_get_statistics_from_the_writer(database_url: str) -> None:
    _switch_autovacuum_off(database_url)
    db = Database(database_url)
    try:
        make_org(db)
        people = _write_people_until_analysed(db, 0, 30)
        for table in CRM_TABLES:
            analysed, rows = _analysed(db, table)
            assert analysed and rows > 0, f"{table} was never analysed after {people} people"
        with db.read() as conn:
            plan = "\n".join(
                conn.exec_driver_sql(
                    "EXPLAIN SELECT max(seq) FROM crm_records WHERE org_id = 1234 AND object_slug = 'people'"
                ).scalars()
            )
        # The newest seq is one step down the (org, object, seq) index, not a scan of its entries.
        assert "Limit" in plan and "Index Only Scan Backward" in plan, plan
    finally:
        db.close()


def test_one_analyser_at_a_time_across_processes(database_url: str) -> None:
    """Another process's analyser holding the look (its advisory lock): this one leaves the tables
    to it, then analyses them itself once the lock is free."""
    _switch_autovacuum_off(database_url)
    db = Database(database_url)
    other = db.engine.connect()
    try:
        make_org(db)
        other.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
        # Long enough for several looks (one a second at least) with the tables due.
        people = _write_people_until_analysed(db, 0, 4)
        assert not any(_analysed(db, t)[0] for t in CRM_TABLES), f"analysed under another's lock ({people})"
        other.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
        people = _write_people_until_analysed(db, people, 30)
        assert all(_analysed(db, t)[0] for t in CRM_TABLES), f"never analysed after {people} people"
    finally:
        other.rollback()
        other.close()
        db.close()


def test_writes_go_on_while_an_analyze_waits_for_a_table_lock(database_url: str) -> None:
    """A VACUUM (or an index build) holding a written table's lock makes ANALYZE wait for it; the
    writes must not wait with it (ANALYZE takes no lock that writes need)."""
    _switch_autovacuum_off(database_url)
    db = Database(database_url)
    pool = ThreadPoolExecutor(max_workers=1)
    blocker = db.engine.connect()
    try:
        make_org(db)
        # What a running VACUUM of crm_records holds: ANALYZE of the table waits for it, writes don't.
        blocker.exec_driver_sql("LOCK TABLE crm_records IN SHARE UPDATE EXCLUSIVE MODE")

        def write(start: int) -> None:
            batch = [{"emails": [f"p{start + i}@x.com"], "firstName": "P"} for i in range(100)]
            # A writer stuck behind the ANALYZE would never answer: bounded, so the test fails.
            pool.submit(upsert_people_batch, db, 1234, batch, "email", "test").result(timeout=60)

        people = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _analyze_waiting(db):
            write(people)
            people += 100
            time.sleep(0.2)
        assert _analyze_waiting(db), f"no ANALYZE started after {people} people"
        for _ in range(3):
            write(people)
            people += 100
        with db.read() as conn:
            total = conn.execute(
                sa.text("SELECT count(*) FROM crm_records WHERE org_id = 1234 AND object_slug = 'people'")
            ).scalar()
        assert total == people
    finally:
        blocker.rollback()
        blocker.close()
        pool.shutdown()
        db.close()


def _analyze_waiting(db: Database) -> bool:
    with db.read() as conn:
        return bool(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND query ILIKE 'ANALYZE%' AND wait_event_type = 'Lock'"
                )
            ).scalar()
        )


@pytest.mark.parametrize("paced", [True, False])
def test_the_analyser_pauses_for_page_reads_only_when_paced(database_url: str, paced: bool) -> None:
    """A server's analyser pauses as autovacuum's does (2 ms a round of page reads); an importer's
    leaves the server's own cost delay (none by default), since its end waits for the ANALYZE."""
    db = Database(database_url)
    try:
        with db.engine.connect() as conn:
            server = conn.exec_driver_sql("SHOW vacuum_cost_delay").scalar()
            _sample_lightly(conn, paced)
            delay = conn.exec_driver_sql("SHOW vacuum_cost_delay").scalar()
            target = conn.exec_driver_sql("SHOW default_statistics_target").scalar()
            conn.rollback()
        assert delay == ("2ms" if paced else server)
        assert target == "10"
    finally:
        db.close()
