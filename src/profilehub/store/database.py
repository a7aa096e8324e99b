"""The database handle: engine, migrations, reads, and the single writer.

Every write goes through one writer thread per process, which groups the writes queued while the
previous transaction ran into one transaction (group commit). That is what makes concurrent writers
correct on SQLite (one writer, as Datasette does) and cheap on both backends. Across processes,
SQLite's ``BEGIN IMMEDIATE`` and PostgreSQL advisory locks (see ``lock_scope``) serialise writers of
the same scope.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from profilehub.errors import ProfilehubError, ServiceUnavailable
from profilehub.repeated_log import RepeatedLog
from profilehub.store.checkpoints import BACKSTOP_PAGES, WalCheckpointer
from profilehub.store.events import EventBell, EventRow, collected, pending_events
from profilehub.store.faults import DatabaseFault, FaultKind, classify
from profilehub.store.statistics import PlannerStatistics
from profilehub.store.turns import WriterTurns

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

T = TypeVar("T")
Job = Callable[[Connection], Any]
log = logging.getLogger(__name__)
_refusals = RepeatedLog(log)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_MIGRATION_LOCK_KEY = 0x70726F66  # "prof": one PostgreSQL advisory lock for schema upgrades
# The newest migration's revision, known without Alembic: every command opens the database, and
# loading Alembic to find the schema current took ~0.3 s of each one's start-up (bench/NOTES-ci.md).
# Alembic runs only when the schema is not at this revision. A new migration updates it
# (tests/test_migrations.py checks it is Alembic's head).
SCHEMA_HEAD = "0018"


def _alembic_config(connection: Connection) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def _scripts() -> ScriptDirectory:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(cfg)


def head_revision() -> str:
    head = _scripts().get_current_head()
    assert head is not None
    return head


@dataclass(frozen=True)
class SchemaChange:
    """What opening a database did to its schema: ``before`` is None when it had none (created),
    equal to ``after`` when it was current already."""

    before: str | None
    after: str

    def describe(self) -> str:
        if self.before is None:
            return f"created the schema at revision {self.after}"
        if self.before == self.after:
            return f"the schema is already at revision {self.after}"
        return f"upgraded the schema from revision {self.before} to {self.after}"


class SchemaAhead(ServiceUnavailable):
    """The schema is at a revision this version does not know: a newer profilehub upgraded it.
    Alembic cannot downgrade from a revision it has no script for, so nothing is touched."""


def revision_known(revision: str) -> bool:
    """Whether this version has a migration of that name (False: a newer version wrote it)."""
    try:
        return _scripts().get_revision(revision) is not None
    except Exception:  # alembic raises its own errors for an unknown or malformed revision
        return False


def _ahead(revision: str, head: str) -> str:
    return (
        f"database: the schema is at revision {revision}, unknown to this version (head {head}): "
        "a newer profilehub upgraded it; run that version"
    )


def schema_problem(conn: Connection) -> str | None:
    """Why this code cannot serve the schema ``conn`` sees (None: it is at the head revision).

    A running server finds its schema changed under it when someone downgrades it or restores an
    older backup (behind), or a newer profilehub upgrades it (ahead, a revision unknown here).
    """
    from alembic.runtime.migration import MigrationContext

    revision = MigrationContext.configure(conn).get_current_revision()
    head = head_revision()
    if revision == head:
        return None
    if revision is None or revision_known(revision):
        return (
            f"database: the schema is at revision {revision}, behind this version's {head}; "
            "run 'profilehub db upgrade' (or restart profilehub serve, which upgrades it)"
        )
    return _ahead(revision, head)


def schema_revision(url: str) -> str | None:
    """The schema revision the database is at, without creating or upgrading anything; None when
    there is no database or no schema yet (both are made on first use)."""
    parsed = sa.engine.make_url(url)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if is_sqlite and (not parsed.database or not Path(parsed.database).is_file()):
        return None  # connecting would create the file
    from alembic.runtime.migration import MigrationContext

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def database_missing(exc: sa.exc.DBAPIError) -> bool:
    # psycopg reports a connection refused for a missing database without a SQLSTATE.
    text = str(exc.orig or exc)
    return getattr(exc.orig, "sqlstate", None) == "3D000" or ("database" in text and "does not exist" in text)


def create_database(url: str) -> None:
    """Create the PostgreSQL database ``url`` names, as SQLite creates its file: a new install
    needs no ``createdb`` step. Connects to the server's ``postgres`` database (``template1``
    when that one is gone) as the URL's user, who needs the CREATEDB privilege."""
    target = sa.engine.make_url(url)
    name = target.database or ""
    last: Exception | None = None
    for maintenance in ("postgres", "template1"):
        engine = sa.create_engine(target.set(database=maintenance), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                exists = conn.execute(
                    sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
                ).first()
                if not exists:
                    quoted = conn.dialect.identifier_preparer.quote_identifier(name)
                    try:
                        conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
                        log.warning("created the PostgreSQL database %s (it did not exist)", name)
                    except sa.exc.ProgrammingError as exc:
                        # Another process created it meanwhile: what we wanted.
                        if "already exists" not in str(exc.orig or exc):
                            raise
            return
        except sa.exc.OperationalError as exc:
            last = exc  # no such maintenance database, or not allowed to connect to it
        finally:
            engine.dispose()
    assert last is not None
    raise last


def _enable_wal(cur: Any) -> None:
    """Switch a new SQLite file to WAL once; later connections find it set already.

    Switching needs the database to itself, and SQLite answers "database is locked" at once
    (without waiting on the busy timeout) while another process holds it, as when several
    processes open a new file together: so only switch when needed, and retry for a while.
    """
    deadline = time.monotonic() + 30
    while True:
        try:
            if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# Seconds a new PostgreSQL connection may take before it fails (PROFILEHUB_DB_CONNECT_TIMEOUT_SECONDS).
# Without one, a database host that silently drops packets (a firewall, a host gone from the
# network) holds every request until the kernel gives up, minutes later, instead of answering 503.
DEFAULT_CONNECT_TIMEOUT_SECONDS = 5
# Seconds PostgreSQL lets a session of ours sit idle inside a transaction before ending it
# (PROFILEHUB_DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS; 0: never). A profilehub process frozen or
# cut off mid-write keeps its session, and so its org's write locks, open on the server: without
# this, every other process's writes of that org would wait for them for good. Far above the
# pauses between a write's statements, even an import batch's on a busy machine.
DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS = 60


def make_engine(
    url: str,
    *,
    writer: bool = False,
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT_SECONDS,
    idle_in_transaction_timeout: int = DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS,
) -> Engine:
    """The engine for reads, or (``writer``) the one connection of the writer thread.

    The writer's PostgreSQL connection is not pinged before each batch: the ping was a round trip
    per batch (about a seventh of the writer's time). If the server went away, the batch fails,
    SQLAlchemy drops the dead connection, and the writer retries each job on a new one.
    """
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=1 if writer else 8,
            max_overflow=1 if writer else 16,
        )

        @sa.event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            # Take transaction control from the sqlite3 module so BEGIN IMMEDIATE is ours to send.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")
            _enable_wal(cur)
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            # Writers take the write lock up front: a read-then-write transaction that upgrades
            # its lock later can fail with SQLITE_BUSY instead of waiting.
            if conn.get_execution_options().get("immediate"):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql("BEGIN")

        return engine
    # libpq (and psycopg) count the timeout per address tried, and treat less than 2 s as 2 s.
    connect_args: dict[str, Any] = {"connect_timeout": connect_timeout}
    query = sa.engine.make_url(url).query
    if "tcp_user_timeout" not in query:
        # An open connection whose host went silent (gone from the network, packets dropped): what
        # it sent is given up after as long as a connection may take to open, so the request
        # answers 503 instead of waiting for the kernel's retransmissions (~15 minutes).
        connect_args["tcp_user_timeout"] = max(2, connect_timeout) * 1000
    session = f"-c idle_in_transaction_session_timeout={idle_in_transaction_timeout * 1000}"
    given = query.get("options")  # the URL's own ?options= are kept
    connect_args["options"] = " ".join([*([given] if isinstance(given, str) else list(given or ())), session])
    if writer:
        return sa.create_engine(
            url, pool_size=1, max_overflow=1, pool_pre_ping=False, connect_args=connect_args
        )
    return sa.create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True, connect_args=connect_args)


def migrate(engine: Engine) -> SchemaChange:
    """Bring the schema to the newest revision; safe when several processes start at once.

    Raises ``SchemaAhead``, touching nothing, when a newer version has upgraded it."""
    if _recorded_revision(engine) == SCHEMA_HEAD:
        return SchemaChange(SCHEMA_HEAD, SCHEMA_HEAD)
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    head = head_revision()
    with engine.connect() as conn:
        conn = conn.execution_options(immediate=True)
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
            current = MigrationContext.configure(conn).get_current_revision()
            if current != head:
                if current is not None and not revision_known(current):
                    raise SchemaAhead(_ahead(current, head))
                command.upgrade(_alembic_config(conn), "head")
    change = SchemaChange(current, head)
    if current != head:
        # In serve's log; other commands log nothing at info (db upgrade prints it).
        log.info("%s", change.describe())
    return change


def _recorded_revision(engine: Engine) -> str | None:
    """The one revision Alembic recorded; None when there is none yet, or not exactly one (then
    Alembic itself decides). Read without a lock: a revision committed is one whose upgrade
    committed with it, and anything else goes on to ``migrate``'s locked check."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):  # no schema yet
            return None
        recorded = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    return str(recorded[0]) if len(recorded) == 1 else None


def lock_scope(conn: Connection, org_id: int, scope: str) -> None:
    """Serialise writers of one (org, scope) across processes on PostgreSQL.

    Within one process the single writer already serialises; SQLite's BEGIN IMMEDIATE does the
    rest there. The lock is held until the transaction ends.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
            {"k": f"{org_id}:{scope}"},
        )


def lock_scopes(conn: Connection, org_id: int, scopes: list[str]) -> None:
    """``lock_scope`` of each of ``scopes``, in that order, in one statement (one round trip)."""
    if conn.dialect.name == "postgresql" and scopes:
        # The select list is evaluated left to right: the locks are taken in ``scopes`` order.
        locks = ", ".join(f"pg_advisory_xact_lock(hashtextextended(:k{i}, 0))" for i in range(len(scopes)))
        conn.execute(sa.text(f"SELECT {locks}"), {f"k{i}": f"{org_id}:{s}" for i, s in enumerate(scopes)})


class GroupJob:
    """A job the writer may run in one call together with the queued jobs of the same group.

    ``group(conn, payloads)`` does the work of several jobs at once and returns one result per
    payload, in order. Consecutive queued jobs of one group are handed over together, so e.g. 64
    concurrent single writes become one batch write: one set of reads and one set of
    ``executemany`` writes instead of 64. Alone (or on a retry) a job is a group of one.
    """

    __slots__ = ("finish", "group", "payload")

    def __init__(
        self,
        group: Callable[[Connection, list[Any]], list[Any]],
        payload: Any,
        finish: Callable[[Connection, Any], Any] | None = None,
    ) -> None:
        self.group = group
        self.payload = payload
        self.finish = finish

    def done(self, conn: Connection, value: Any) -> Any:
        return value if self.finish is None else self.finish(conn, value)

    def __call__(self, conn: Connection) -> Any:
        return self.done(conn, self.group(conn, [self.payload])[0])


def then(job: Callable[[Connection], T], finish: Callable[[Connection, T], Any]) -> Job:
    """``job``, then ``finish(conn, its result)`` in the same transaction (a group job still joins
    its group); the job's result becomes ``finish``'s."""
    if isinstance(job, GroupJob):
        return GroupJob(job.group, job.payload, finish)
    return lambda conn: finish(conn, job(conn))


class OnceJob:
    """A job the writer runs at most once: a whole bulk import's transaction, minutes of work that
    a retry after a passing fault (a lock held too long, a lost connection) would redo from the
    start, as many as five times. When the database fails it, its caller gets the error at once
    (the import says nothing was written and to run it again). Batched with other jobs whose
    transaction failed for another's sake, it still gets its one run alone."""

    __slots__ = ("job",)

    def __init__(self, job: Job) -> None:
        self.job = job

    def __call__(self, conn: Connection) -> Any:
        return self.job(conn)


class SoloJob:
    """A job the writer runs in a transaction of its own, never batched with other jobs: one
    whose row locks, taken in an order of its own, could otherwise interleave with another job's
    in one transaction and deadlock with a third transaction that takes them in the other order
    (a webhook round locks an event before its waiting rows; an erasure deletes both, events
    first: two rounds in one transaction lock a waiting row before the second round's event)."""

    __slots__ = ("job",)

    def __init__(self, job: Job) -> None:
        self.job = job

    def __call__(self, conn: Connection) -> Any:
        return self.job(conn)


def _runs(batch: list[tuple[Job, Future[Any]]]) -> list[list[tuple[Job, Future[Any]]]]:
    """Split the batch into runs of consecutive jobs of one group (other jobs run alone)."""
    runs: list[list[tuple[Job, Future[Any]]]] = []
    for item in batch:
        job = item[0]
        last = runs[-1][0][0] if runs else None
        if isinstance(job, GroupJob) and isinstance(last, GroupJob) and last.group == job.group:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


@contextmanager
def savepoint(conn: Connection) -> Iterator[None]:
    """A savepoint around the block: rolled back when it raises, with the change events the block
    collected for the writer's transaction (they would describe writes that no longer exist)."""
    pending = pending_events(conn)
    mark = len(pending) if pending is not None else 0
    try:
        with conn.begin_nested():
            yield
    except BaseException as exc:
        if pending is not None:
            del pending[mark:]
        # SQLite ends the whole transaction itself on some errors (SQLITE_FULL, SQLITE_IOERR,
        # SQLITE_NOMEM), taking the savepoint with it: rolling the savepoint back then fails with
        # "no such savepoint", which would hide the cause. The cause is what the writer
        # classifies: a full disk fails at once instead of running the job again into it.
        cause: BaseException | None = exc
        while cause is not None and _savepoint_gone(cause):
            cause = cause.__context__
        if cause is not None and cause is not exc:
            raise cause from None
        raise


def _savepoint_gone(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite refusing to roll back to a savepoint that its transaction, ended
    by the database itself, took with it (SQLAlchemy's error or the driver's beneath it)."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    return isinstance(orig, sqlite3.OperationalError) and str(orig).startswith("no such savepoint")


def _attempt(conn: Connection, run: list[tuple[Job, Future[Any]]]) -> list[tuple[Future[Any], bool, Any]]:
    """Run ``run`` (one job, or consecutive jobs of one group in one call) in a savepoint."""
    first = run[0][0]
    with savepoint(conn):
        if len(run) > 1 and isinstance(first, GroupJob):
            values = first.group(conn, [j.payload for j, _ in run if isinstance(j, GroupJob)])
            return [
                (fut, True, j.done(conn, v) if isinstance(j, GroupJob) else v)
                for (j, fut), v in zip(run, values, strict=True)
            ]
        return [(run[0][1], True, first(conn))]


def _run_in_savepoints(
    conn: Connection, run: list[tuple[Job, Future[Any]]]
) -> list[tuple[Future[Any], bool, Any]]:
    """Each job of ``run`` all-or-nothing, by the database rather than by the convention that jobs
    refuse before they write: a job that raises a domain error, whatever it wrote by then, has its
    savepoint rolled back while the batch's other jobs commit. A group run that raises runs its jobs
    again one by one, each in its own savepoint, so one job's error never fails its neighbours.
    Any other error still fails the whole transaction (the batch is then retried job by job)."""
    try:
        return _attempt(conn, run)
    except ProfilehubError as exc:
        if len(run) == 1:
            return [(run[0][1], False, exc)]
    return [result for item in run for result in _run_in_savepoints(conn, [item])]


BatchObserver = Callable[[int, int], None]


class WriteQueueFull(ServiceUnavailable):
    """The writer has ``max_queued`` writes waiting: refused at once rather than queued behind them."""


class _Bare:
    """A step the writer runs on its connection outside any transaction, in its turn in the queue:
    what SQLite refuses inside one (``PRAGMA journal_mode``, ``PRAGMA locking_mode``). It is given
    the SQLAlchemy connection, not yet begun; it works on ``conn.connection.driver_connection``."""

    __slots__ = ("step",)

    def __init__(self, step: Callable[[Connection], Any]) -> None:
        self.step = step


class _Writer:
    """One thread that commits queued jobs in batches."""

    def __init__(
        self,
        engine: Engine,
        batch_size: int,
        max_queued: int | None = None,
        on_batch: BatchObserver | None = None,
        turns: WriterTurns | None = None,
        bell: EventBell | None = None,
        checkpoints: WalCheckpointer | None = None,
        paced_statistics: bool = True,
    ) -> None:
        self._engine = engine
        self._checkpoints = checkpoints
        self._bell = bell
        self._batch_size = batch_size
        self._max_queued = max_queued
        self._on_batch = on_batch
        self._turns = turns
        self._queue: queue.SimpleQueue[tuple[Job | _Bare, Future[Any]] | None] = queue.SimpleQueue()
        # A bare step met while gathering a batch: it runs after that batch, before anything newer.
        # A job met while gathering a batch that runs alone (``SoloJob``) is held the same way.
        self._held: tuple[_Bare | SoloJob, Future[Any]] | None = None
        self._thread = threading.Thread(target=self._run, name="profilehub-writer", daemon=True)
        self._closed = False
        self._statistics = PlannerStatistics(engine, paced=paced_statistics)
        # What stopped the last write, until a write commits again (``Database.write_fault``).
        self.fault: DatabaseFault | None = None
        self._thread.start()

    def submit(self, job: Job) -> Future[Any]:
        if self._closed:
            raise ServiceUnavailable("the database writer is shut down", headers={"Retry-After": "1"})
        # qsize() may be a few behind while other threads submit: the bound is approximate by that.
        if self._max_queued is not None and self._queue.qsize() >= self._max_queued:
            raise WriteQueueFull(
                f"overloaded: {self._max_queued} writes are already waiting; retry shortly",
                headers={"Retry-After": "1"},
            )
        fut: Future[Any] = Future()
        self._queue.put((job, fut))
        return fut

    def submit_bare(self, step: Callable[[Connection], T]) -> Future[T]:
        """Queue ``step`` (``_Bare``) behind the jobs queued so far."""
        if self._closed:
            raise ServiceUnavailable("the database writer is shut down", headers={"Retry-After": "1"})
        fut: Future[T] = Future()
        self._queue.put((_Bare(step), fut))
        return fut

    def depth(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._statistics.close()

    def _run(self) -> None:
        # No local here holds a job: the next get() may wait for a long time.
        while not self._take_turn(self._next()):
            pass

    def _next(self) -> tuple[Job | _Bare, Future[Any]] | None:
        held, self._held = self._held, None
        return held if held is not None else self._queue.get()

    def _take_turn(self, item: tuple[Job | _Bare, Future[Any]] | None) -> bool:
        """Run ``item`` and what queued behind it; True when the writer is to stop.

        A method of its own so the batch (its jobs' inputs, its futures' results) is freed on
        return: held in ``_run``'s locals until the next write, one 1,000-record ``_bulk`` kept
        ~100 MB of the server alive while idle."""
        if item is None:
            return True
        job, fut = item
        del item
        if isinstance(job, _Bare):
            self._run_bare(job, fut)
            return False
        batch: list[tuple[Job, Future[Any]]] = [(job, fut)]
        del job, fut
        stop = False
        # The batch is gathered once the turn is ours: what queued while waiting goes in it.
        with self._turns.turn() if self._turns is not None else nullcontext():
            while len(batch) < self._batch_size and not isinstance(batch[0][0], SoloJob):
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                if isinstance(nxt[0], _Bare | SoloJob):
                    self._held = (nxt[0], nxt[1])
                    break
                batch.append((nxt[0], nxt[1]))
            if self._on_batch is not None:
                self._on_batch(len(batch), self._queue.qsize())
            self._run_batch(batch)
        self._statistics.refresh()
        if self._checkpoints is not None:
            self._checkpoints.wrote()
        return stop

    def _run_batch(self, batch: list[tuple[Job, Future[Any]]]) -> None:
        results: list[tuple[Future[Any], bool, Any]] = []
        try:
            with self._engine.connect() as conn:
                conn = conn.execution_options(immediate=True)
                with conn.begin(), collected(conn) as events:
                    for run in _runs(batch):
                        results += _run_in_savepoints(conn, run)
        except Exception as exc:
            error = database_error(exc)
            fault = classify(error) if error is not None else None
            if error is not None and fault is not None and fault.persistent:
                # A full disk or a read-only file fails every retry alike: fail the batch at once.
                # The callers report it (the HTTP answer and its log line, the importer's message).
                log.info("batch of %d writes failed: %s", len(batch), fault.message)
                self.fault = fault
                for _, fut in batch:
                    fut.set_exception(error)
                return
            # A lone job is not run again when it runs once (``OnceJob``), or when the failure is
            # its own (neither the database's nor SQLAlchemy's over a connection the server
            # dropped): it already ran alone, and would meet the same.
            own = error is None and not isinstance(exc, sa.exc.SQLAlchemyError)
            if len(batch) == 1 and (own or isinstance(batch[0][0], OnceJob)):
                log.info("a write failed and is not run again: %r", exc)
                if fault is not None:
                    self.fault = fault
                batch[0][1].set_exception(exc if error is None else error)
                return
            # The database refusing (down, restarting) fails every batch alike while it lasts.
            outage = fault if isinstance(error, sa.exc.OperationalError | sa.exc.InterfaceError) else None
            self._retry_alone(batch, exc, outage)
            return
        self.fault = None
        if events:
            self._rang(events)
        for fut, ok, value in results:
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def _run_bare(self, bare: _Bare, fut: Future[Any]) -> None:
        try:
            with self._engine.connect() as conn:
                value = bare.step(conn)
        except Exception as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(value)

    def _rang(self, events: list[EventRow]) -> None:
        if self._bell is not None:
            self._bell.ring({e.org_id for e in events})

    def _retry_alone(
        self, batch: list[tuple[Job, Future[Any]]], cause: BaseException, outage: DatabaseFault | None
    ) -> None:
        if outage is not None:
            # Said with its traceback once per interval, with the count of the others.
            _refusals.say(
                outage.kind.value,
                logging.ERROR,
                f"batch of {len(batch)} writes failed ({outage.cause}); retrying them one by one",
                exc_info=cause,
            )
        else:
            log.exception("batch of %d writes failed; retrying them one by one", len(batch))
        for i, (job, fut) in enumerate(batch):
            failed = self._run_alone(job, fut)
            if failed is not None:
                # The database itself refused (not this job's data): the rest would wait out the
                # same retries to meet the same fault, so they fail now.
                for _, rest in batch[i + 1 :]:
                    rest.set_exception(failed)
                return

    def _run_alone(self, job: Job, fut: Future[Any]) -> sa.exc.OperationalError | None:
        """Run one job in its own transaction, retrying lock conflicts; the database's error when
        it refused the job after its retries (a ``OnceJob``: after its one run)."""
        last = 0 if isinstance(job, OnceJob) else 4
        for attempt in range(last + 1):
            try:
                with self._engine.connect() as conn:
                    conn = conn.execution_options(immediate=True)
                    with conn.begin(), collected(conn) as events:
                        value = job(conn)
                self.fault = None
                if events:
                    self._rang(events)
                fut.set_result(value)
                return None
            except ProfilehubError as exc:
                fut.set_exception(exc)
                return None
            except Exception as raised:
                error = database_error(raised)
                if not isinstance(error, sa.exc.OperationalError):
                    fut.set_exception(raised if error is None else error)
                    return None
                # deadlock, lock timeout: try again
                fault = classify(error)
                # The first retry opens a new connection (the old one may have died with a server
                # restart); when that cannot reach the server either, further tries would each
                # wait out the connect timeout again while the client waits.
                gone = fault.kind is FaultKind.UNREACHABLE and attempt >= 1
                if attempt == last or fault.persistent or gone:
                    self.fault = fault
                    fut.set_exception(error)
                    # A deadlock is this job's bad luck; the others are the database's state.
                    return None if fault.kind is FaultKind.UNAVAILABLE else error
                time.sleep(0.01 * (2**attempt))
        return None


def database_error(exc: BaseException) -> sa.exc.DBAPIError | None:
    """``exc`` as SQLAlchemy's error when the database raised it, else None. A job that works the
    driver's own cursor (the bulk path's ``COPY`` and ``executemany``) meets the driver's errors
    unwrapped: wrapped as SQLAlchemy wraps its statements' errors, a full disk met there is
    classified, reported and not retried like one met by any other statement."""
    seen: BaseException | None = exc
    # SQLAlchemy's own refusal over a connection the server dropped (``PendingRollbackError``,
    # raised while the error that dropped it was handled): that error is the database's answer.
    for _ in range(8 if isinstance(exc, sa.exc.SQLAlchemyError) else 1):
        if seen is None:
            break
        if isinstance(seen, sa.exc.DBAPIError):
            return seen
        # psycopg's errors, once psycopg is loaded (by a PostgreSQL engine): loading it for a
        # SQLite database was a good part of every command's start-up.
        psycopg = sys.modules.get("psycopg")
        for base in (sqlite3.Error, *((psycopg.Error,) if psycopg is not None else ())):
            if isinstance(seen, base):
                wrapped = sa.exc.DBAPIError.instance(None, None, seen, base)
                return wrapped if isinstance(wrapped, sa.exc.DBAPIError) else None
        seen = seen.__cause__ or seen.__context__
    return None


def _probe_write(conn: Connection) -> None:
    if conn.dialect.name == "sqlite":
        version = int(conn.exec_driver_sql("PRAGMA user_version").scalar() or 0)
        conn.exec_driver_sql(f"PRAGMA user_version = {version}")
    else:
        conn.exec_driver_sql("SELECT 1")


def _sqlite_file(engine: Engine) -> Path | None:
    """The SQLite file ``engine`` writes; None for PostgreSQL and in-memory databases."""
    path = engine.url.database
    if engine.dialect.name != "sqlite" or not path or path == ":memory:" or path.startswith("file:"):
        return None
    return Path(path)


def _writer_turns(engine: Engine, polite: bool) -> WriterTurns | None:
    """Turns at a SQLite file's write lock (see ``store/turns.py``); None for PostgreSQL and
    in-memory databases, and where the lock files cannot be made (a read-only directory)."""
    path = _sqlite_file(engine)
    if path is None:
        return None
    try:
        return WriterTurns(path, polite=polite)
    except OSError as exc:
        log.warning("writing without turns at the write lock (%s): writers of this file may starve", exc)
        return None


class Database:
    """The store's handle. ``yields_to_waiting_writers``: this process writes in bulk (the
    importer) and lets other processes' writers waiting for the same SQLite file go first.
    ``background_checkpoints``: a SQLite file's WAL is checkpointed by a thread of its own rather
    than in the writer's commits (``store/checkpoints.py``; the server's latency).
    ``postgres_turns``: PostgreSQL: a folder whose lock files this writer takes turns at with the
    other processes given the same folder (the workers of one ``serve --workers N``), as SQLite's
    writers do at the file's (``store/turns.py``): each batch is gathered once the turn is ours.
    Without turns each worker gathered its batch, then waited inside its transaction for the
    other's to commit (the org's advisory lock): batches of 2-15 writes instead of ~30."""

    def __init__(
        self,
        url: str,
        *,
        write_batch_size: int = 256,
        write_queue_max: int | None = None,
        on_batch: BatchObserver | None = None,
        yields_to_waiting_writers: bool = False,
        connect_timeout: int = DEFAULT_CONNECT_TIMEOUT_SECONDS,
        idle_in_transaction_timeout: int = DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS,
        background_checkpoints: bool = False,
        postgres_turns: Path | None = None,
    ) -> None:
        self.url = url
        engine = functools.partial(
            make_engine,
            url,
            connect_timeout=connect_timeout,
            idle_in_transaction_timeout=idle_in_transaction_timeout,
        )
        self.engine = engine()
        try:
            self.schema_change = self._migrate(url)
        except BaseException:
            self.engine.dispose()
            raise
        self._writer_engine = engine(writer=True)
        self._turns = _writer_turns(self._writer_engine, yields_to_waiting_writers)
        if postgres_turns is not None and self._writer_engine.dialect.name == "postgresql":
            try:
                self._turns = WriterTurns(postgres_turns / "postgresql")
            except OSError as exc:  # the folder gone or unwritable: correct without, only slower
                log.warning("writing without turns beside the other workers (%s)", exc)
        self._checkpoints: WalCheckpointer | None = None
        file = _sqlite_file(self._writer_engine)
        if background_checkpoints and file is not None:
            self._checkpoints = WalCheckpointer(file)

            @sa.event.listens_for(self._writer_engine, "connect")
            def _backstop(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")

        # Rung after each commit that wrote events: long-polls of the change feeds wake on it.
        self.event_bell = EventBell()
        self._writer = _Writer(
            self._writer_engine,
            write_batch_size,
            write_queue_max,
            on_batch,
            self._turns,
            self.event_bell,
            self._checkpoints,
            # An importer's ANALYZE unpaced: the import's end waits for it (``store/statistics.py``).
            paced_statistics=not yields_to_waiting_writers,
        )
        self._probe: Future[None] | None = None
        self._probe_lock = threading.Lock()

    def _migrate(self, url: str) -> SchemaChange:
        try:
            return migrate(self.engine)
        except sa.exc.OperationalError as exc:
            if self.engine.dialect.name != "postgresql" or not database_missing(exc):
                raise
            create_database(url)
            return migrate(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def submit(self, job: Callable[[Connection], T]) -> Future[T]:
        """Queue ``job`` for the writer; ``WriteQueueFull`` when ``write_queue_max`` writes wait."""
        return self._writer.submit(job)

    def on_writer_connection(self, step: Callable[[Connection], T]) -> T:
        """Run ``step`` on the writer's connection outside any transaction, after the writes queued
        before it, and wait for its result (``_Bare``: connection settings a transaction refuses)."""
        return self._writer.submit_bare(step).result()

    def sqlite_file(self) -> Path | None:
        """The SQLite file written; None for PostgreSQL and in-memory databases."""
        return _sqlite_file(self._writer_engine)

    def release_readers(self) -> None:
        """Close this process's idle reader connections (new ones open on the next read)."""
        self.engine.dispose()

    def write_queue_depth(self) -> int:
        return self._writer.depth()

    def write_fault(self) -> DatabaseFault | None:
        """None while writes commit; else what stopped the last one (a full disk, a lock...).

        A remembered fault is checked again with a probe write (one at a time: callers meanwhile
        share it), so it clears once the cause is gone even when no client writes meanwhile (a load
        balancer that stopped sending them because of it). SQLite's probe rewrites the file's header page, a real write
        a full disk refuses; PostgreSQL's can only show that the server answers and takes the
        write lock, so a full disk there is remembered until a write commits.
        """
        fault = self._writer.fault
        if fault is None or (fault.kind is FaultKind.DISK_FULL and self.dialect != "sqlite"):
            return fault
        with self._probe_lock:
            probe = self._probe
            if probe is None or probe.done():
                probe = self._probe = self.submit(_probe_write)
        try:
            probe.result(timeout=5)
        except Exception:  # the probe's failure is the fault it keeps
            log.debug("probe write failed", exc_info=True)
        return self._writer.fault

    def write(self, job: Callable[[Connection], T]) -> T:
        """Run ``job`` in the writer's next transaction and wait for its result."""
        return self.submit(job).result()

    async def awrite(self, job: Callable[[Connection], T]) -> T:
        # Shielded: a caller cancelled while waiting (a task stopped at shutdown) would otherwise
        # cancel the writer's future, and the writer thread died setting its result.
        return await asyncio.shield(asyncio.wrap_future(self.submit(job)))

    def writers_waiting(self) -> bool:
        """Whether another process's writer waits for this SQLite file (or did a moment ago)."""
        return self._turns is not None and self._turns.others_waiting()

    def writers_present(self) -> bool:
        """Whether another process (a server) writes to this SQLite file, waiting or not."""
        return self._turns is not None and self._turns.others_present()

    def close(self) -> None:
        self._writer.close()
        if self._checkpoints is not None:
            self._checkpoints.close()
        self._writer_engine.dispose()
        self.engine.dispose()
        if self._turns is not None:
            self._turns.close()
