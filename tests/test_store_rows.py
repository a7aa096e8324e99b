"""``store.rows.sqlite_insert_many`` (the bulk write's SQLite load) and ``sqlite_insert_grouped``
(a CRM writer group's rows): every row goes in, in the order given (the rowids follow it),
whatever the number of rows against the rows a statement takes, and a row that breaks a key fails
the load as one INSERT of it would."""

from __future__ import annotations

import sqlite3

import pytest

from profilehub.store.rows import sqlite_insert_grouped, sqlite_insert_many

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


@pytest.mark.parametrize("count", [0, 1, 2, 3, 24, 31, 64, 65, 129, 200])
def test_grouped_every_row_in_the_order_given(count: int) -> None:
    conn = _table()
    rows = [(7, "EU", f"v{n:04d}", None if n % 3 else '{"a": 1}') for n in reversed(range(count))]
    sqlite_insert_grouped(conn.cursor(), "t", COLUMNS, rows)
    assert conn.execute("SELECT org_id, region, value, data FROM t ORDER BY rowid").fetchall() == rows


def test_grouped_conflict_clause_applies_to_each_row() -> None:
    """Rows whose key is taken (by the table or an earlier row of the same call) are skipped, the
    others go in, as one ``INSERT … ON CONFLICT DO NOTHING`` of each row would do."""
    conn = _table()
    conn.execute("INSERT INTO t VALUES (7, 'EU', 'v0003', 'old')")
    rows = [(7, "EU", f"v{n % 40:04d}", str(n)) for n in range(100)]
    sqlite_insert_grouped(conn.cursor(), "t", COLUMNS, rows, " ON CONFLICT DO NOTHING")
    expected = [(7, "EU", "v0003", "old")] + [r for r in rows[:40] if r[2] != "v0003"]
    assert conn.execute("SELECT org_id, region, value, data FROM t ORDER BY rowid").fetchall() == expected


def test_grouped_a_duplicate_key_fails_without_a_conflict_clause() -> None:
    conn = _table()
    rows = [(7, "EU", f"v{n}", "{}") for n in range(20)] + [(7, "EU", "v3", "{}")]
    with pytest.raises(sqlite3.IntegrityError):
        sqlite_insert_grouped(conn.cursor(), "t", COLUMNS, rows)
