"""PostgreSQL databases the tests make are dropped however a run ends, and a missing database is
created on first use (issue 17, items 12 and 7)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from profilehub.cli import main
from profilehub.store.database import Database
from tests.conftest import (
    PG_ADMIN,
    _pg,
    child_pids,
    drop_leftover_databases,
    pg_test_database_name,
    running_in_ci,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def pg_admin() -> str:
    if _pg.error:
        if running_in_ci():
            pytest.fail(f"CI=true and {_pg.error}")
        pytest.skip(f"POSTGRESQL UNAVAILABLE, test not run: {_pg.error}")
    return PG_ADMIN


def _databases(pattern: str) -> list[str]:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (pattern,)).fetchall()
    return [r[0] for r in rows]


def _drop(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _databases_of(pids: list[int]) -> list[str]:
    return [name for pid in pids for name in _databases(pg_test_database_name(pid).rsplit("_", 1)[0] + "_%")]


@pytest.fixture
def test_run(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[subprocess.Popen[str], list[int]]]:
    """A pytest run with this suite's conftest, parked in a test once its database exists; with
    ``-n 1`` (param "xdist", as scripts/test runs) the database is its worker's. Yields the run and
    the pids whose databases it made."""
    (tmp_path / "conftest.py").write_text("from tests.conftest import *  # noqa: F403\n")
    parked = tmp_path / "parked"  # made by the parked test once it runs
    (tmp_path / "test_parked.py").write_text(
        f"import pathlib, time\n\ndef test_parked():\n    pathlib.Path({str(parked)!r}).touch()\n    time.sleep(120)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = ["-n", "1"] if getattr(request, "param", "plain") == "xdist" else ["-n", "0"]
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *workers, str(tmp_path)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    pids: list[int] = []
    # Generous: two pytest start-ups (controller and worker) on a loaded 2-core machine.
    deadline = time.monotonic() + 180
    while not (parked.exists() and _databases_of(pids)):
        assert run.poll() is None and time.monotonic() < deadline, "the test run made no database"
        time.sleep(0.2)
        pids = [run.pid, *child_pids(run.pid)]
    yield run, pids
    if run.poll() is None:
        run.kill()
    run.wait(timeout=30)
    for name in _databases_of(pids):
        _drop(name)


# SIGHUP takes the same handler as SIGTERM. The SIGTERM run spreads its tests over an xdist worker
# as scripts/test does: the controller, not the worker, is the process that gets the signal.
@pytest.mark.parametrize(
    ("signum", "test_run"),
    [(signal.SIGINT, "plain"), (signal.SIGTERM, "xdist")],
    ids=["SIGINT", "SIGTERM-xdist"],
    indirect=["test_run"],
)
def test_an_interrupted_test_run_drops_its_database(
    pg_admin: str, test_run: tuple[subprocess.Popen[str], list[int]], signum: int
) -> None:
    run, pids = test_run
    assert _databases_of(pids)
    run.send_signal(signum)
    output, _ = run.communicate(timeout=180)
    assert _databases_of(pids) == [], output


def test_a_killed_test_run_s_database_is_dropped_by_the_next_run(
    pg_admin: str, test_run: tuple[subprocess.Popen[str], list[int]]
) -> None:
    run, pids = test_run
    run.kill()  # SIGKILL: no clean-up at all
    run.wait(timeout=30)
    [leftover] = _databases_of(pids)
    dropped = drop_leftover_databases()  # what every run does at its start
    assert leftover in dropped and _databases_of(pids) == []
    # This run's own database, whose process is alive, is kept.
    assert _pg.dbname not in dropped and _databases(_pg.dbname) == [_pg.dbname]


def test_a_missing_postgresql_database_is_created_on_first_use(
    pg_admin: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = pg_test_database_name()
    url = f"{PG_ADMIN.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+psycopg://')}/{name}"
    assert _databases(name) == []
    monkeypatch.setenv("PROFILEHUB_DATABASE_URL", url)
    try:
        info = CliRunner().invoke(main, ["info"])
        assert info.exit_code == 0 and "schema revision: none yet" in info.output, info.output
        assert _databases(name) == []  # info only looks
        created = CliRunner().invoke(
            main, ["org", "create", "--org-id", "1", "--name", "A", "--region", "EU"]
        )
        assert created.exit_code == 0, created.output
        assert _databases(name) == [name]
        db = Database(url)  # and the next process finds it there
        with db.read() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM orgs")).scalar_one() == 1
        db.close()
    finally:
        _drop(name)
