"""The profile storage of each database: ``profile_storage(conn)`` is the ``ProfileStorage`` (see
``identity.storage``) of one transaction, on SQLite or PostgreSQL.

Both share ``BatchStore`` (what a batch has read and written, answered from memory, and the final
rows it writes at ``flush``); they differ in how the SQL reaches the database: SQLite takes ``IN``
lists in chunks and ``executemany`` (each statement runs in-process), PostgreSQL takes arrays
for lookups, a JSON recordset for updates and deletes, and ``COPY`` for new rows (each statement
is a round trip, parsed and planned).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy.engine import Connection

from profilehub.identity.normalize import Identifier
from profilehub.store.batch_store import CHUNK, BatchStore, chunks
from profilehub.store.rows import pg_recordset, pg_rows


def profile_storage(conn: Connection, journal: bool = True, ledger: bool = True) -> BatchStore:
    """The profile storage of ``conn``'s transaction (reads, and writes written at its ``flush``);
    ``journal=False`` keeps no journal of the writes, ``ledger=False`` no consent ledger (the
    benches' baselines)."""
    if conn.dialect.name == "postgresql":
        return PostgresProfileStorage(conn, journal, ledger)
    return SqliteProfileStorage(conn, journal, ledger)


def _by_type(ids: Iterable[Identifier]) -> Iterator[tuple[str, list[str]]]:
    """Ids grouped as (idType, values), in chunks.

    ``id_type = ? AND value IN (...)`` walks the primary key on both backends, where SQLite plans
    a row-value ``(id_type, value) IN (...)`` as a scan of the whole org and region.
    """
    grouped: dict[str, list[str]] = {}
    for i in sorted(set(ids)):
        grouped.setdefault(i.id_type, []).append(i.value)
    for id_type, values in grouped.items():
        for part in chunks(values):
            yield id_type, part


class SqliteProfileStorage(BatchStore):
    def _sql(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        cursor = self.conn.connection.cursor()
        try:
            cursor.execute(sql, tuple(params))
            rows = [tuple(r) for r in cursor.fetchall()]
        finally:
            cursor.close()
        return rows

    def _sql_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            cursor = self.conn.connection.cursor()
            try:
                cursor.executemany(sql, rows)
            finally:
                cursor.close()

    # An IN list of parameters, in chunks under SQLite's parameter limit.
    def _parts(self, values: list[str]) -> Iterable[list[str]]:
        return chunks(values)

    def _in(self, values: list[str]) -> str:
        return f"IN ({', '.join('?' * len(values))})"

    def _values(self, values: list[str]) -> list[Any]:
        return values

    def _read_ids_into(
        self, org_id: int, region: str, ids: list[Identifier], found: dict[Identifier, tuple[str, int]]
    ) -> None:
        # One statement per few hundred values: a UNION ALL of one primary-key lookup per idType.
        parts: list[str] = []
        params: list[Any] = []

        def run() -> None:
            for id_type, value, ucid, ts in self._sql(" UNION ALL ".join(parts), params):
                found[Identifier(id_type, value)] = (ucid, ts)
            parts.clear()
            params.clear()

        for id_type, values in _by_type(ids):
            parts.append(
                "SELECT id_type, value, ucid, ts FROM profile_ids WHERE org_id = ? AND region = ? "
                f"AND id_type = ? AND value IN ({', '.join('?' * len(values))})"
            )
            params.extend((org_id, region, id_type, *values))
            if len(params) >= CHUNK:
                run()
        if parts:
            run()

    def _change_many(
        self,
        verb: str,
        table: str,
        set_cols: tuple[str, ...],
        key_cols: tuple[str, ...],
        rows: list[tuple[Any, ...]],
    ) -> None:
        # One statement per row: SQLite runs them in-process, with no round trip to save.
        if not rows:
            return
        where = " AND ".join(f"{c} = ?" for c in key_cols)
        if verb == "UPDATE":
            self._sql_many(
                f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in set_cols)} WHERE {where}", rows
            )
        else:
            self._sql_many(f"DELETE FROM {table} WHERE {where}", rows)


# PostgreSQL types of the columns updated or matched in bulk.
_PG_TYPES = {
    "org_id": "bigint",
    "ucid": "text",
    "region": "text",
    "id_type": "text",
    "value": "text",
    "ts": "bigint",
    "updated_ts": "bigint",
    "data": "text",
    "merged_into": "text",
}
# The profiles' key. profile_ids' updates need no arrays: that table is large from the first
# batches (several ids a profile), so the planner looks its rows up by key already.
_NAMED_KEY = ("org_id", "ucid")


class PostgresProfileStorage(BatchStore):
    def _sql(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        # psycopg takes %s placeholders; %b (binary) is written as such
        cursor = self.conn.connection.cursor()
        try:
            cursor.execute(sql.replace("?", "%s"), tuple(params))
            rows = [tuple(r) for r in cursor.fetchall()]
        finally:
            cursor.close()
        return rows

    # One array (= ANY), so the statement text does not change with the number of values.
    def _parts(self, values: list[str]) -> Iterable[list[str]]:
        return [values] if values else []

    def _in(self, values: list[str]) -> str:
        return "= ANY(%b)"

    def _values(self, values: list[str]) -> list[Any]:
        return [values]

    def _read_ids_into(
        self, org_id: int, region: str, ids: list[Identifier], found: dict[Identifier, tuple[str, int]]
    ) -> None:
        # One statement for the whole batch, one array per idType: the SQL text depends only on
        # the idTypes present, and the values travel as arrays, not thousands of parameters.
        grouped: dict[str, list[str]] = {}
        for i in ids:
            grouped.setdefault(i.id_type, []).append(i.value)
        parts: list[str] = []
        params: list[Any] = []
        for id_type, values in sorted(grouped.items()):
            parts.append(
                "SELECT id_type, value, ucid, ts FROM profile_ids "
                "WHERE org_id = ? AND region = ? AND id_type = ? AND value = ANY(%b)"
            )
            params += [org_id, region, id_type, values]
        for id_type, value, ucid, ts in self._sql(" UNION ALL ".join(parts), params):
            found[Identifier(id_type, value)] = (ucid, ts)

    def _change_many(
        self,
        verb: str,
        table: str,
        set_cols: tuple[str, ...],
        key_cols: tuple[str, ...],
        rows: list[tuple[Any, ...]],
    ) -> None:
        # One statement whose rows arrive as one JSON parameter (``pg_recordset``), instead of a
        # round of parsing and planning per row, or an array per column that psycopg dumps
        # element by element.
        if not rows:
            return
        cols = set_cols + key_cols
        source = pg_recordset(cols, _PG_TYPES)
        where = " AND ".join(f"t.{c} = v.{c}" for c in key_cols)
        params: list[Any] = [pg_rows(cols, rows)]
        if key_cols == _NAMED_KEY:
            # The rows' keys named as arrays as well as joined: the planner takes a JSON recordset
            # for 100 rows whatever it holds, and below some 50,000 profiles it hashed the
            # recordset and read every profile of the database for each batch with a returning
            # profile (EXPLAIN ANALYZE at 4,500 profiles: 104 pages, 2.4 ms for 14 rows).
            first = len(set_cols)
            where += " AND t.org_id = ANY(%s) AND t.ucid = ANY(%s)"
            params += [sorted({r[first] for r in rows}), sorted({r[first + 1] for r in rows})]
        if verb == "UPDATE":
            sql = f"UPDATE {table} AS t SET {', '.join(f'{c} = v.{c}' for c in set_cols)} FROM {source} WHERE {where}"
        else:
            sql = f"DELETE FROM {table} AS t USING {source} WHERE {where}"
        cursor = self.conn.connection.cursor()
        try:
            cursor.execute(sql, params)
        finally:
            cursor.close()
