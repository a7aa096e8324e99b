"""New and changed rows in bulk on the driver's own cursor, for the writer's hot paths."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from itertools import chain, islice
from typing import Any

import orjson
from sqlalchemy.engine import Connection


def insert_rows(conn: Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Insert ``rows`` (values in ``columns`` order) into ``table``: COPY on PostgreSQL (several
    times faster than INSERTs), one prepared INSERT run over all rows on SQLite (in-process, no
    round trip to save)."""
    if not rows:
        return
    names = ", ".join(columns)
    cursor = conn.connection.cursor()
    try:
        if conn.dialect.name == "postgresql":
            with cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" * len(columns))
            cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)
    finally:
        cursor.close()


# Rows one SQLite ``INSERT`` takes at most in ``sqlite_insert_many``; its parameters stay within
# 999, the smallest limit a SQLite build may have (SQLITE_MAX_VARIABLE_NUMBER before 3.32).
_SQLITE_ROWS_PER_INSERT = 100
_SQLITE_MAX_PARAMETERS = 999


@lru_cache(maxsize=256)
def _sqlite_insert_of(table: str, columns: tuple[str, ...], rows: int, tail: str) -> str:
    """``INSERT INTO table (columns) VALUES (…), …`` of ``rows`` rows, then ``tail``."""
    one = f"({', '.join('?' * len(columns))})"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([one] * rows)}{tail}"


def sqlite_insert_many(
    cursor: Any, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """SQLite: insert ``rows`` (values in ``columns`` order, read as they go) into ``table`` in
    their order, up to 100 rows a statement (``INSERT … VALUES (…), (…), …``) and the last few one
    by one. The same rows, in the same order, as one ``executemany`` of a one-row ``INSERT``, for
    about a third less CPU a row: the module's and SQLite's work per statement run is paid once per
    100 rows (id rows into their keyed table, 7.1-7.8 -> 3.9-5.2 µs a row, bench/NOTES-bulk-engine.md)."""
    per = max(1, min(_SQLITE_ROWS_PER_INSERT, _SQLITE_MAX_PARAMETERS // len(columns)))
    rest: list[Sequence[Any]] = []

    def full_statements() -> Iterator[list[Any]]:
        it = iter(rows)
        while len(chunk := list(islice(it, per))) == per:
            yield list(chain.from_iterable(chunk))
        rest.extend(chunk)

    cursor.executemany(_sqlite_insert_of(table, tuple(columns), per, ""), full_statements())
    if rest:
        cursor.executemany(_sqlite_insert_of(table, tuple(columns), 1, ""), rest)


_SQLITE_ROWS_PER_GROUP_INSERT = 64


def sqlite_insert_grouped(
    cursor: Any, table: str, columns: tuple[str, ...], rows: Sequence[Sequence[Any]], tail: str = ""
) -> None:
    """SQLite: insert ``rows`` (values in ``columns`` order) into ``table`` in their order, in
    multi-row ``INSERT``s of 64, 32, 16, …, 1 rows that add up to their number (a CRM writer
    group's 24 rows of a table: one of 16 and one of 8, instead of 24 runs of a one-row INSERT),
    at most seven statement texts a table, which the driver keeps prepared. ``tail``: a conflict
    clause (`` ON CONFLICT DO NOTHING``), which applies to each row as to an INSERT of it alone."""
    per = 1 << (
        max(1, min(_SQLITE_ROWS_PER_GROUP_INSERT, _SQLITE_MAX_PARAMETERS // len(columns))).bit_length() - 1
    )
    at = 0
    while at < len(rows):
        size = 1 << (min(per, len(rows) - at).bit_length() - 1)
        count = (len(rows) - at) // size if size == per else 1
        statements = [
            list(chain.from_iterable(rows[at + n * size : at + (n + 1) * size])) for n in range(count)
        ]
        cursor.executemany(_sqlite_insert_of(table, columns, size, tail), statements)
        at += count * size


def pg_recordset(columns: Sequence[str], types: Mapping[str, str], alias: str = "v") -> str:
    """PostgreSQL: the rows of one ``%s`` parameter (``pg_rows``) as a table ``alias`` of
    ``columns``, for ``INSERT … SELECT``, ``UPDATE … FROM`` and ``DELETE … USING``.

    The rows travel as one JSON text that the server takes apart, instead of one array parameter
    per column: psycopg dumps arrays element by element in Python, which cost a 64-person CRM
    batch about 4 ms (as much as its statements' round trips), where orjson takes 0.1 ms."""
    return f"json_to_recordset(%s::json) AS {alias}({', '.join(f'{c} {types[c]}' for c in columns)})"


def pg_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """The parameter of ``pg_recordset``: ``rows`` (values in ``columns`` order) as JSON."""
    return orjson.dumps([dict(zip(columns, row, strict=True)) for row in rows]).decode()


@contextmanager
def pipelined(conn: Connection) -> Iterator[None]:
    """PostgreSQL: the block's statements on the driver's cursor are sent without waiting for
    each one's answer (psycopg's pipeline mode), so the writes before a read and the read cost one
    round trip, not one each. A statement's error is raised at the next read or at the block's
    end. Only driver-cursor statements without COPY belong in the block. Inside another such block
    it adds nothing (the outer one waits). SQLite: the block as it is (no round trips)."""
    if conn.dialect.name != "postgresql":
        yield
        return
    # Here: a SQLite database never loads psycopg (every command's start-up, bench/NOTES-ci.md);
    # a PostgreSQL engine has loaded it already.
    from psycopg import pq

    raw: Any = conn.connection.dbapi_connection
    if raw.pgconn.pipeline_status != pq.PipelineStatus.OFF:
        yield
        return
    with raw.pipeline():
        yield
