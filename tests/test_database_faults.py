"""The cause a 503 names, read from real driver errors (the full disk has tests/test_full_disk.py)."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from profilehub.store.faults import FaultKind, classify


def test_a_sqlite_file_locked_by_another_writer_is_named_locked(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError) as caught:
        other.execute("BEGIN IMMEDIATE")
    holder.rollback()
    fault = classify(sa.exc.OperationalError("BEGIN IMMEDIATE", None, caught.value))
    assert fault.kind is FaultKind.LOCKED
    assert fault.message.startswith("database: locked (database is locked)"), fault.message


def test_a_read_only_sqlite_file_is_named_read_only(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
    reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as caught:
        reader.execute("INSERT INTO t VALUES (1)")
    fault = classify(caught.value)
    assert fault.kind is FaultKind.READ_ONLY and fault.persistent, fault


def test_a_postgresql_server_that_does_not_answer_is_named_unreachable() -> None:
    with socket.socket() as s:  # a port with nothing listening on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=2)
    fault = classify(sa.exc.OperationalError("connect", None, caught.value))
    assert fault.kind is FaultKind.UNREACHABLE and not fault.persistent
    assert fault.message.startswith("database: unreachable ("), fault.message
