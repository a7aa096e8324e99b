"""The writer's connection is not pinged before each batch; losing it must still cost no write."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from profilehub.profiles import ProfileService, ProfileWrite
from profilehub.store.database import Database
from tests.conftest import make_org


def test_writes_go_on_after_the_server_drops_the_writer_connection(db: Database) -> None:
    if db.dialect != "postgresql":
        pytest.skip("SQLite has no server connection to lose; PostgreSQL run covers this")
    make_org(db)
    service = ProfileService(db)
    [first] = service.write_batch([ProfileWrite(1234, "EU", {"email": "a@x.com"})], "test")
    pid = db.write(lambda c: c.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
    with db.read() as conn:
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
    # The next batch finds its connection dead, and is retried on a new one.
    [again] = service.write_batch([ProfileWrite(1234, "EU", {"email": "a@x.com", "AdId": "d-1"})], "test")
    assert not isinstance(first, Exception) and not isinstance(again, Exception)
    assert again.profile["ucid"] == first.profile["ucid"]
    assert db.write(lambda c: c.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()) != pid
