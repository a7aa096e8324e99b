"""``store.rows.sqlite_insert_many``, the bulk write's SQLite load: every row goes in, in the order
given (the rowids follow it), whatever the number of rows against the rows a statement takes,
and a row that breaks a key fails the load as one INSERT of it would."""

from __future__ import annotations

import sqlite3

import pytest

from profilehub.store.rows import sqlite_insert_many

COLUMNS = ("org_id", "region", "value", "data")


def _table() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE TABLE t (org_id INTEGER, region TEXT, value TEXT, data TEXT, PRIMARY KEY (org_id, value))"
    )
    return conn


@pytest.mark.parametrize("count", [0, 1, 99, 100, 101, 257])
def test_every_row_in_the_order_given(count: int) -> None:
    conn = _table()
    rows = [(7, "EU", f"v{n:04d}", None if n % 3 else '{"a": 1}') for n in reversed(range(count))]
    sqlite_insert_many(conn.cursor(), "t", COLUMNS, iter(rows))
    assert conn.execute("SELECT org_id, region, value, data FROM t ORDER BY rowid").fetchall() == rows


def test_a_duplicate_key_fails_the_load() -> None:
    conn = _table()
    rows = [(7, "EU", f"v{n}", "{}") for n in range(150)] + [(7, "EU", "v3", "{}")]
    with pytest.raises(sqlite3.IntegrityError):
        sqlite_insert_many(conn.cursor(), "t", COLUMNS, rows)
