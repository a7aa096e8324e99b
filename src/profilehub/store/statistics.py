"""Planner statistics kept fresh on PostgreSQL when autovacuum does not.

Every lookup profilehub makes (ids under the primary key, ``max(seq)`` of a CRM object, people by
email) is planned from table statistics. A table never analysed looks empty to the planner, which
then picks plans that read whole indexes: ``max(seq)`` read every index entry at 30,000 people.
Autovacuum normally analyses tables as they change; where it is off (for the whole server, or for
a table through its ``autovacuum_enabled`` storage parameter) profilehub analyses each table it
writes once it has changed as much as autovacuum's defaults would wait for (50 rows plus a tenth
of the table), spending at most about a tenth of the time on it.

The ANALYZE runs on a thread and connection of its own, woken by the writer after a batch, as
autovacuum's runs in a process of its own: ANALYZE takes no lock that writes wait for. Run by the
writer itself between batches, each one (70-310 ms on a loaded 2-CPU machine) held back every
write queued meanwhile, which set the p99 latency of 64 HTTP clients (bench/NOTES-crm.md); and an
ANALYZE waiting for a table's lock (a VACUUM or an index build holding it) held back every write
until that finished.

Off the writer, an ANALYZE still takes a CPU from the writes while it runs: with the default
sample (statistics target 100: 30,000 rows a table) a look that found the tables of a CDP and CRM
write due took ~400 ms of the database server's CPU at 10-100k rows a table, and the writes beside
it slowed by half (the p99 of 64 HTTP clients on PostgreSQL was 3.5x its median). So it samples as
PostgreSQL did by default until 8.4 (target 10: 3,000 rows, ~60 ms for the same look), which is
plenty for the plans profilehub needs (lookups by key, ``max(seq)``), and it pauses for its page
reads as autovacuum's ANALYZE does (its default cost delay, 2 ms per 200 page reads). A target the
operator set on a column, or a lower default, still applies. Serving, it analyses one table at a
time with a pause between them, so a look takes the CPU in bursts of 10-40 ms rather than one of
60-150 ms; and one process's analyser looks at a time (an advisory lock), where each worker of
``serve --workers N`` looked at the same counters and two looks at once made one burst of both.

An importing process (``Database(yields_to_waiting_writers=True)``: ``profilehub import``) analyses
without the pauses: no request of its own waits beside the ANALYZE, but the import's end does,
since the process waits for the last one before it exits (its statistics would be lost with its
connection otherwise). After a million-record bulk import that last ANALYZE of the written tables
took 4.4 s paced and under 0.1 s without the pauses (bench/NOTES-bulk.md).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from profilehub.store.tables import metadata

log = logging.getLogger(__name__)

# autovacuum_analyze_threshold and autovacuum_analyze_scale_factor's defaults
_THRESHOLD = 50
_SCALE = 0.1
_MIN_INTERVAL = 1.0  # seconds between two looks at the counters
_BUDGET = 10  # the writer waits this many times what the last ANALYZE took
# The analyser's session: a small sample, and autovacuum's pauses (autovacuum_vacuum_cost_delay's
# default; vacuum_cost_limit's default of 200 stays).
_SAMPLE_TARGET = 10
_COST_DELAY_MS = 2
# Serving, the seconds between two tables' ANALYZE of one look (``_analyse_tables``).
_PAUSE_BETWEEN_TABLES = 0.05
# The advisory lock one analyser holds for a look, whatever process it is in ("profstat").
_LOCK_KEY = 0x70726F6673746174

# Per written table: is autovacuum off for it, how much changed since its last analyse, its rows.
_STATE = """
SELECT n.name,
       current_setting('autovacuum') = 'off' OR current_setting('track_counts') = 'off'
       OR EXISTS (SELECT 1 FROM unnest(c.reloptions) o
                  WHERE lower(o) IN ('autovacuum_enabled=false', 'autovacuum_enabled=off',
                                     'autovacuum_enabled=no', 'autovacuum_enabled=0')),
       coalesce(s.n_mod_since_analyze, 0),
       greatest(c.reltuples, 0)
FROM unnest(CAST(:names AS text[])) AS n(name)
JOIN pg_class c ON c.oid = to_regclass(n.name)
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
"""


@dataclass(frozen=True)
class TableState:
    name: str
    autovacuum_off: bool
    changed: int
    rows: float

    @property
    def due(self) -> bool:
        return self.autovacuum_off and self.changed > _THRESHOLD + _SCALE * self.rows


def written_tables() -> list[str]:
    return sorted(metadata.tables)


def table_states(conn: Connection) -> list[TableState]:
    rows = conn.execute(sa.text(_STATE), {"names": written_tables()})
    return [TableState(name, bool(off), int(changed), float(n)) for name, off, changed, n in rows]


def autovacuum_warning(conn: Connection) -> str | None:
    """What ``profilehub serve`` says at start-up (once, not in each worker or command) when
    autovacuum does not look after some of profilehub's tables; None where it does, and on SQLite."""
    if conn.dialect.name != "postgresql":
        return None
    server_off = conn.exec_driver_sql("SHOW autovacuum").scalar() == "off"
    counts_off = conn.exec_driver_sql("SHOW track_counts").scalar() == "off"
    if server_off or counts_off:
        where = "autovacuum is off on this PostgreSQL server" if server_off else "track_counts is off"
    else:
        off = [t.name for t in table_states(conn) if t.autovacuum_off]
        if not off:
            return None
        where = f"autovacuum is off for table(s) {', '.join(off)}"
    return (
        f"{where}: profilehub runs ANALYZE itself on the tables it writes, after its writes; "
        "VACUUM (space reuse, wraparound protection) is left to you"
    )


class PlannerStatistics:
    """Analyses, on its own thread, the tables autovacuum would have analysed by now; the writer
    calls ``refresh`` after each batch and never waits for it."""

    def __init__(self, engine: Engine, paced: bool = True) -> None:
        self._engine = engine
        self._paced = paced  # its page reads paused as autovacuum's are (the module's doc)
        self._enabled = engine.dialect.name == "postgresql"
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        if self._enabled:
            self._thread = threading.Thread(target=self._run, name="profilehub-statistics", daemon=True)
            self._thread.start()
        self._next = time.monotonic() + _MIN_INTERVAL

    def refresh(self) -> None:
        """Wake the analyser when its interval is over (the writer's call after a batch)."""
        if self._enabled and time.monotonic() >= self._next:
            self._wake.set()

    def close(self) -> None:
        if self._thread is not None:
            self._stopping = True
            self._wake.set()
            # An ANALYZE waiting for a lock is not waited for: the thread is a daemon.
            self._thread.join(timeout=5)

    def _run(self) -> None:
        # One connection for the thread's life: checked in after each look, it was closed by the
        # writer's one-connection pool, and each look started a new PostgreSQL backend.
        conn: Connection | None = None
        try:
            while True:
                self._wake.wait()
                if self._stopping:
                    return
                self._next = math.inf  # the writer's calls meanwhile do not queue another look
                self._wake.clear()
                conn = self._analyse(conn)
        finally:
            if conn is not None:
                conn.close()

    def _analyse(self, conn: Connection | None) -> Connection | None:
        """Analyse what is due; the connection to use next time (None after an error)."""
        started = time.monotonic()
        took = 0.0  # the ANALYZEs' time, which spaces the looks
        try:
            if conn is None:
                conn = self._engine.connect()
            # One analyser at a time across processes (``serve --workers N``, an import beside a
            # server): a serving one finds the lock taken and leaves the look to its holder,
            # whose ANALYZE resets the counters it would have looked at (two workers' looks at
            # once made one burst of twice the CPU, bench/NOTES-crm.md); an importing one waits
            # for it, its look being the import's last (the module's doc).
            taking = "pg_try_advisory_lock(:k)" if self._paced else "pg_advisory_lock(:k) IS NULL"
            # A failure below invalidates the connection, and its session's lock goes with it.
            if conn.execute(sa.text(f"SELECT {taking}"), {"k": _LOCK_KEY}).scalar():
                due = [t.name for t in table_states(conn) if t.due]
                conn.commit()
                took = self._analyse_tables(conn, due)
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
            conn.commit()
        except sa.exc.SQLAlchemyError:
            log.exception("ANALYZE failed; plans may be poor until it succeeds")
            if conn is not None:
                conn.invalidate()  # the server may have gone: a new connection next time
                conn.close()
            conn = None
            took = time.monotonic() - started
        self._next = time.monotonic() + max(_MIN_INTERVAL, _BUDGET * took)
        return conn

    def _analyse_tables(self, conn: Connection, due: list[str]) -> float:
        """ANALYZE each of ``due`` in a transaction of its own; the seconds they took. Serving
        (``paced``), a pause follows each: the look's CPU comes in a table's burst at a time
        (~10-30 ms) instead of one of all of them (60-150 ms of a CPU taken from the writes)."""
        took = 0.0
        for n, name in enumerate(due):
            if self._stopping:
                break
            if n and self._paced:
                time.sleep(_PAUSE_BETWEEN_TABLES)
            began = time.monotonic()
            _sample_lightly(conn, self._paced)
            conn.exec_driver_sql(f"ANALYZE {name}")
            conn.commit()
            took += time.monotonic() - began
        return took


def _sample_lightly(conn: Connection, paced: bool = True) -> None:
    """The analyser's settings for this transaction (see the module's doc; local to it, so the
    connection goes back to the writer's pool as it came): the operator's lower target kept, and
    ``paced``, autovacuum's pauses for page reads (unpaced, the operator's own cost delay applies)."""
    conn.execute(
        sa.text(
            "SELECT set_config('default_statistics_target', "
            "LEAST(current_setting('default_statistics_target')::int, :target)::text, true)"
        ),
        {"target": _SAMPLE_TARGET},
    )
    if paced:
        conn.execute(
            sa.text("SELECT set_config('vacuum_cost_delay', :delay, true)"), {"delay": str(_COST_DELAY_MS)}
        )


# What ``analyse_before_lookups`` waits for a table's lock before leaving its statistics as they are.
_LOOKUP_LOCK_TIMEOUT = "5s"


def analyse_before_lookups(conn: Connection, tables: Sequence[str]) -> None:
    """ANALYZE ``tables`` now, in ``conn``'s transaction (a savepoint), sampled as the analyser
    samples: for a bulk import about to plan its lookups of an org's stored ids. Statistics taken
    before the org wrote (autovacuum analyses once a tenth of a table changed, which an org's first
    thousands of rows beside another's never are) put the org at a few rows, and the planner then
    probed the ucid index, matching on ``org_id`` alone and filtering every row of the org for each
    id looked up: minutes where the primary key takes seconds. In the import's own transaction
    because its connection is the writer's, whose pool has none to spare; the table's ANALYZE lock
    is then held to the import's commit, which holds back other ANALYZEs and VACUUMs of it, never
    a write. A lock not granted within ``_LOOKUP_LOCK_TIMEOUT`` leaves the statistics as they are,
    with a log line. PostgreSQL only."""
    if conn.dialect.name != "postgresql":
        return
    before = conn.execute(
        sa.text("SELECT current_setting('lock_timeout'), current_setting('default_statistics_target')")
    ).one()
    try:
        with conn.begin_nested():
            conn.execute(sa.text("SELECT set_config('lock_timeout', :t, true)"), {"t": _LOOKUP_LOCK_TIMEOUT})
            _sample_lightly(conn, paced=False)
            for name in tables:
                conn.exec_driver_sql(f"ANALYZE {name}")
    except sa.exc.OperationalError as exc:
        log.warning("ANALYZE before the import's lookups did not run (%s); lookups may be slow", exc)
        return
    # The savepoint's release kept its settings: the rest of the import runs with the caller's.
    conn.execute(
        sa.text(
            "SELECT set_config('lock_timeout', :lock, true), set_config('default_statistics_target', :target, true)"
        ),
        {"lock": before[0], "target": before[1]},
    )
