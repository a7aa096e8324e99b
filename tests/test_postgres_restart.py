"""PostgreSQL restarted under write load: while it is down every write is answered 503 with
Retry-After (or, before and after, 200), never a 500, a reset connection or a hang; the service
recovers by itself once the database is back; every acknowledged write is there.

The cluster is the test's own (tests/private_postgres.py), restarted with ``pg_ctl restart -m
fast``: sessions are terminated mid-transaction and new connections are refused for a while, as
in an operator's restart or a failover.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from profilehub.store.database import Database
from tests.conftest import make_org
from tests.private_postgres import PrivatePostgres
from tests.serve_process import serve
from tests.write_load import WriteLoad, missing_acknowledged


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()


def test_a_postgresql_restart_under_load_is_503s_then_recovery_and_loses_no_acknowledged_write(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    db = Database(private_postgres.url)  # creates the database and its schema
    try:
        org = make_org(db)
    finally:
        db.close()
    with serve(private_postgres.url, tmp_path) as server:
        load = WriteLoad(server.base, org, clients=8, timeout=60).start()
        try:
            load.wait_for_acks(100)
            private_postgres.restart()
            # Back by itself: writes are acknowledged again without touching the server.
            load.wait_for_acks(len(load.acknowledged()) + 100)
        finally:
            load.stop()
        answers = load.answers
        wrong = [a for a in answers if not a.acknowledged and not (a.status == 503 and a.retry_after)]
        assert wrong == [], f"{len(wrong)} answers neither 2xx nor 503 with Retry-After: {wrong[:5]}"
        assert any(a.status == 503 for a in answers), "the restart was never noticed"
        assert all(a.acknowledged for a in answers[-50:]), "not recovered"
        assert missing_acknowledged(server.base, org, load.acknowledged()) == []
