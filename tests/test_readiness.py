"""GET /healthz (the process answers) and GET /readyz (the database answers, takes writes, and its
schema is the one this code was written for), on both databases. The database unreachable and
a full disk: tests/test_database_down.py and tests/test_full_disk.py."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory
from fastapi import FastAPI
from fastapi.testclient import TestClient

from profilehub.store.database import MIGRATIONS_DIR, head_revision
from tests.conftest import assert_error


def _stamp(app: FastAPI, revision: str) -> None:
    # As a restored backup or a downgrade by hand leaves it: the recorded revision changes under
    # the running server.
    with app.state.db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = :r"), {"r": revision})


def _previous(revision: str) -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    down = ScriptDirectory.from_config(cfg).get_revision(revision).down_revision
    assert isinstance(down, str), "needs a head with one parent revision"
    return down


def test_alive_and_ready(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready" and ready.json()["schema"] == head_revision()


def test_not_ready_while_the_schema_is_behind_the_code(app: FastAPI, client: TestClient) -> None:
    head = head_revision()
    older = _previous(head)
    _stamp(app, older)
    r = client.get("/readyz")
    body = assert_error(r, 503)
    assert r.headers["Retry-After"]
    assert body["message"].startswith("database:") and older in body["message"], body
    assert "behind" in body["message"] and "profilehub db upgrade" in body["message"], body
    # Alive all the same: restarting the process is not what fixes it.
    assert client.get("/healthz").status_code == 200
    _stamp(app, head)
    assert client.get("/readyz").status_code == 200


def test_not_ready_when_a_newer_version_upgraded_the_schema(app: FastAPI, client: TestClient) -> None:
    _stamp(app, "9999_from_the_future")
    body = assert_error(client.get("/readyz"), 503)
    assert "9999_from_the_future" in body["message"] and "newer" in body["message"], body
    _stamp(app, head_revision())
    assert client.get("/readyz").status_code == 200
