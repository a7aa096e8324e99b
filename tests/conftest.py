"""Fixtures: every storage and API test runs on SQLite and on PostgreSQL.

PostgreSQL tests use a fresh database per run and a fresh schema per test. When the server is
unreachable they are skipped with a loud reason, except under CI=true, where that fails the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from profilehub import collector
from profilehub.app import create_app
from profilehub.auth import CredentialKind, create_credential
from profilehub.config import Settings
from profilehub.orgs import create_org
from profilehub.request_log import JsonFormatter, logging_config
from profilehub.store.database import Database, make_engine, migrate

PG_ADMIN = os.environ.get("PROFILEHUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
T = TypeVar("T")

# No test may touch the user's own database: a command that falls back to the default location
# (PROFILEHUB_DATABASE_URL unset) finds it in a throwaway folder, and the shell's
# PROFILEHUB_DATABASE_URL is ignored. Subprocesses inherit both.
os.environ.pop("PROFILEHUB_DATABASE_URL", None)
_DATA_HOME = tempfile.mkdtemp(prefix="profilehub-test-data-")
os.environ["XDG_DATA_HOME"] = _DATA_HOME


# Test databases are named after the machine and the process that made them, so a later run can
# tell one whose run was killed before its clean-up (kill -9, a crash) from one still in use.
TEST_DB_PREFIX = "profilehub_test_"
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
_TEST_DB_RE = re.compile(rf"^{TEST_DB_PREFIX}{_HOST}_(\d+)_[0-9a-f]+$")


def pg_test_database_name(pid: int | None = None) -> str:
    return f"{TEST_DB_PREFIX}{_HOST}_{pid or os.getpid()}_{uuid.uuid4().hex[:8]}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    return True


def drop_leftover_databases(admin_url: str = PG_ADMIN) -> list[str]:
    """Drop this machine's test databases whose process is gone; those of running test sessions
    (and names of any other form) are left alone."""
    dropped = []
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        names = conn.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (TEST_DB_PREFIX,)
        ).fetchall()
        for (name,) in names:
            found = _TEST_DB_RE.match(name)
            if found and not _process_alive(int(found.group(1))):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                dropped.append(name)
    return dropped


class _Postgres:
    def __init__(self) -> None:
        self.error: str | None = None
        self.dbname = pg_test_database_name()
        self.created = False
        self.schemas = 0
        self.schema_of: dict[str, str] = {}  # the URLs new_url() made, and their schema

    def start(self, *, create: bool = True, drop_leftovers: bool = True) -> None:
        try:
            if drop_leftovers:
                drop_leftover_databases()
            with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
                if create:
                    conn.execute(f'CREATE DATABASE "{self.dbname}"')
            self.created = create
        except psycopg.Error as exc:
            self.error = f"PostgreSQL at {PG_ADMIN} is unreachable: {exc}".strip()

    def new_url(self) -> str:
        """A URL whose connections all live in a new, empty schema of this run's database."""
        self.schemas += 1
        schema = f"t{self.schemas}_{uuid.uuid4().hex[:6]}"
        base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        with psycopg.connect(f"{PG_ADMIN.rsplit('/', 1)[0]}/{self.dbname}", autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        url = f"{base}/{self.dbname}?options=-csearch_path%3D{schema}"
        self.schema_of[url] = schema
        return url

    def admin_conn(self) -> psycopg.Connection[Any]:
        """A connection to this run's database (not into any one schema)."""
        return psycopg.connect(f"{PG_ADMIN.rsplit('/', 1)[0]}/{self.dbname}")

    def stop(self) -> None:
        if self.created:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')


_pg = _Postgres()


# One statement as SQLAlchemy handed it to the driver: (SQL, parameters, executemany).
_Statement = tuple[str, Any, bool]


class _Migrated:
    """A test database brought to the newest schema revision by copying one made earlier.

    Upgrading each test's empty database through Alembic (ten revisions) took 0.1 s on SQLite
    and 0.3-0.8 s on PostgreSQL, most of a short test's time, for some 1,400 tests. So each test
    process upgrades one empty database the real way, once, and each test's database gets a
    copy: the SQLite file itself, or on PostgreSQL the very statements that upgrade sent (the
    DDL, the rows it inserted, alembic_version), sent again into the new schema in one
    transaction. ``Database()`` then finds the schema at the head revision, as after any upgrade.
    tests/test_migrations.py and the like keep upgrading from empty: they use ``database_url``.
    """

    def __init__(self) -> None:
        self._sqlite_file: Path | None = None
        self._pg_statements: list[_Statement] | None = None
        self._done: set[str] = set()

    def prepare(self, url: str) -> None:
        """Make the empty database at ``url`` (from ``database_url`` or ``_pg.new_url()``) a
        migrated one; a second call for the same URL does nothing."""
        if url in self._done:
            return
        if url.startswith("sqlite:///"):
            target = Path(url.removeprefix("sqlite:///"))
            assert not target.exists(), f"{target} is not a new database"
            shutil.copyfile(self._sqlite_template(), target)
        else:
            statements = self._pg_template()
            with _pg.admin_conn() as conn:
                conn.execute(f'SET LOCAL search_path = "{_pg.schema_of[url]}"')
                with conn.pipeline(), conn.cursor() as cur:
                    for sql, params, many in statements:
                        if many:
                            cur.executemany(sql, params)
                        else:
                            cur.execute(sql, params)
        self._done.add(url)

    def _sqlite_template(self) -> Path:
        if self._sqlite_file is None:
            folder = Path(tempfile.mkdtemp(prefix="migrated-", dir=_DATA_HOME))
            file = folder / "profilehub.db"
            engine = make_engine(f"sqlite:///{file}")
            try:
                migrate(engine)
            finally:
                engine.dispose()
            # The file alone must hold everything: the last connection's close checkpointed the
            # WAL into it; check it did, rather than copy a file whose writes are elsewhere.
            assert not Path(f"{file}-wal").exists() or Path(f"{file}-wal").stat().st_size == 0
            self._sqlite_file = file
        return self._sqlite_file

    def _pg_template(self) -> list[_Statement]:
        if self._pg_statements is None:
            statements: list[_Statement] = []
            engine = make_engine(_pg.new_url())

            def record(_c: Any, _cur: Any, sql: str, params: Any, _ctx: Any, many: bool) -> None:
                statements.append((sql, params, many))

            sa.event.listen(engine, "before_cursor_execute", record)
            try:
                migrate(engine)
            finally:
                engine.dispose()
            self._pg_statements = statements
        return self._pg_statements


_migrated = _Migrated()


def migrated_url(url: str) -> str:
    """``url`` (an empty database of ``database_url`` or ``_pg.new_url()``) at the newest schema
    revision, made faster than by ``Database(url)``'s own upgrade (see ``_Migrated``)."""
    _migrated.prepare(url)
    return url


def running_in_ci(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether a missing PostgreSQL fails the run: ``CI`` set to 1, true or yes (any case).

    The banner and the fixture both ask this one function, so what the banner announces is what
    the run then does (``CI=false`` or ``CI=0`` is not CI).
    """
    return environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def child_pids(pid: int) -> list[int]:
    """The processes ``pid`` started that still run (Linux: every thread's ``children`` list)."""
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in children.read_text().split()]
        except OSError:
            continue  # the thread ended meanwhile
    return found


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # Under xdist the workers hold the databases: they are interrupted as by a terminal's Ctrl-C
    # (which reaches the whole process group), not left running until the controller's teardown
    # gives up on them.
    if _role == "controller":
        for child in child_pids(os.getpid()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGINT)
    raise KeyboardInterrupt(f"signal {signum}")


_role = "alone"


def _xdist_role(config: pytest.Config) -> str:
    """ "controller" hands tests to pytest-xdist's workers and runs none; "worker" runs them
    (`scripts/test` runs with ``-n``); "alone" is a plain run."""
    if hasattr(config, "workerinput"):
        return "worker"
    return "controller" if config.pluginmanager.has_plugin("dsession") else "alone"


def pytest_sessionstart(session: pytest.Session) -> None:
    # `kill` (SIGTERM) or a closed terminal (SIGHUP) would end the run on the spot; as a Ctrl-C
    # they end it through pytest's own clean-up instead, which drops this run's database.
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _interrupt)
    # Under xdist each worker has a database of its own (named by its pid, as a run's is); only
    # the controller, whose output is what the terminal shows, drops leftovers and says whether
    # PostgreSQL is there (two workers dropping one leftover at once could trip over each other).
    global _role
    role = _role = _xdist_role(session.config)
    _pg.start(create=role != "controller", drop_leftovers=role != "worker")
    if _pg.error:
        banner = "=" * 30
        print(
            f"\n{banner}\nPOSTGRESQL TESTS WILL {'FAIL' if running_in_ci() else 'BE SKIPPED'}: "
            f"{_pg.error}\n{banner}"
        )


@pytest.hookimpl(trylast=True)  # under xdist: after the controller has stopped its workers
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _pg.stop()
    if _role == "controller":
        # A worker drops its own database when it ends; one that an interrupted run's teardown
        # killed (its process now gone) left its database behind, so it goes here, not next run.
        with contextlib.suppress(psycopg.Error):
            drop_leftover_databases()
    shutil.rmtree(_DATA_HOME, ignore_errors=True)


def pytest_collection_finish(session: pytest.Session) -> None:
    # A test process allocates as a server does, and its collections cost what profilehub.collector
    # says of a server's: with Python's defaults a fifth to a quarter of a worker's CPU (GC 74 of
    # 257 CPU s in one worker of a whole run). So, once the test modules are imported, it keeps
    # the collector as `profilehub serve` does: what exists now frozen, young collections rarer.
    # (Tests of those settings save and restore them around themselves.)
    collector.tune()


def _fastapi_caches() -> list[Any]:
    import fastapi.dependencies.models

    module = fastapi.dependencies.models
    return [v for v in vars(module).values() if callable(getattr(v, "cache_clear", None))]


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    yield
    # FastAPI keeps, in module-level LRU caches of 4,096 entries, each endpoint and dependency
    # callable it has classified (sync, async, generator), and so every app a test made, with
    # the ~11,000 objects it holds: a worker kept some 250 dead apps (2.8 M objects, ~2 GB), and
    # every full collection walked them (single collections of 7 s under load; a test calling
    # gc.collect() 40 s). A server process makes one app, so only the tests need this.
    for cache in _fastapi_caches():
        cache.cache_clear()


@pytest.fixture(autouse=True)
def _logging_put_back() -> Iterator[None]:
    """``profilehub serve`` run in-process (CliRunner) configures this process's logging, as it
    does a server's: put it back after the test, or its JSON handler, on the runner's closed
    stream, would take every later test's log records."""
    configured = [logging.getLogger(name) for name in logging_config("info", True)["loggers"]]
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in configured]
    root = logging.getLogger()
    root_level = root.level
    yield
    for handler in [h for h in root.handlers if isinstance(h.formatter, JsonFormatter)]:
        root.removeHandler(handler)
    root.setLevel(root_level)
    for lg, handlers, level, propagate in saved:
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate


def pytest_unconfigure(config: pytest.Config) -> None:
    # A whole run leaves ~1.5 GB of test objects in this process, and the interpreter's last
    # collection at exit walked all of them: 60-80 s after the summary, in CI's time. Everything
    # that needed closing is closed above, so those objects are frozen out of that collection.
    gc.freeze()


# The modules whose tests run for tens of seconds each (served processes, subprocess pytest runs,
# long imports, the browser, the fuzzer): run first, so that under xdist the last tests left are
# short ones and no core sits idle while one of these finishes alone at the end of the run.
LONG_FIRST = (
    "test_readme.py",
    "test_import_workers.py",
    "test_pg_cleanup.py",
    "test_api_fuzz.py",
    "test_ci_flag.py",
    "test_kill_under_load.py",
    "test_metrics.py",
    "test_cdp_multiprocess.py",
    "test_shutdown.py",
    "test_console_browser.py",
    "test_postgres_restart.py",
    "test_deliver_processes.py",
    "test_stalled_lock_holder.py",
    "test_request_log.py",
    "test_identity_properties.py",
    "test_serving_faults.py",
    "test_full_disk.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A stable sort: the order within each group is the collection's own.
    items.sort(key=lambda item: item.path.name not in LONG_FIRST)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'profilehub.db'}"
    if _pg.error:
        if running_in_ci():
            pytest.fail(f"CI=true and {_pg.error}")
        pytest.skip(f"POSTGRESQL UNAVAILABLE, test not run: {_pg.error}")
    return _pg.new_url()


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(migrated_url(database_url))
    yield database
    database.close()


@pytest.fixture
def app(database_url: str) -> Iterator[FastAPI]:
    application = create_app(Settings(database_url=migrated_url(database_url), max_body_bytes=256 * 1024))
    yield application
    application.state.db.close()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@dataclass
class OrgFixture:
    org_id: int
    apikey: str
    token: str

    def headers(self, scopes: str = "profile.read,profile.write,profile.delete") -> dict[str, str]:
        return {"apikey": self.apikey, "scopes": scopes}

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def make_org(
    database: Database,
    org_id: int = 1234,
    regions: tuple[str, ...] = ("EU", "UK"),
    keep_raw_ids: bool = False,
) -> OrgFixture:
    database.write(lambda c: create_org(c, org_id, f"Org {org_id}", list(regions), keep_raw_ids=keep_raw_ids))
    key = database.write(
        lambda c: create_credential(
            c, org_id, CredentialKind.APIKEY, "profile.read,profile.write,profile.delete"
        )
    )
    token = database.write(lambda c: create_credential(c, org_id, CredentialKind.TOKEN, "crm:read,crm:write"))
    return OrgFixture(org_id, key.secret, token.secret)


@pytest.fixture
def org(app: FastAPI) -> OrgFixture:
    return make_org(app.state.db)


def run_concurrently(app: FastAPI, calls: Callable[[httpx.AsyncClient], list[Awaitable[T]]]) -> list[T]:
    """Send requests at once through the real ASGI app (one event loop, true interleaving)."""

    async def main() -> list[T]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as ac:
            return list(await asyncio.gather(*calls(ac)))

    return asyncio.run(main())


def names_field(error: dict[str, Any], status: int, field: str) -> bool:
    """Whether the error body ``error`` has ``status`` and names ``field`` in its ``errors`` and
    first in its message (as every entry point reading the same bad body must)."""
    return (
        error["status"] == status
        and field in (error.get("errors") or {})
        and error["message"].startswith(f"{field}: ")
    )


def assert_error(response: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    """Every error has the one body shape, and names the field it is about."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["status"] == status and isinstance(body["message"], str)
    if field is not None:
        assert field in body["message"], body
        assert field in (body.get("errors") or {}) or body["message"].startswith(field), body
    return dict(body)
