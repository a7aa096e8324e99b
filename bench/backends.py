"""Fresh databases for one benchmark: a new SQLite file, or a new PostgreSQL database dropped after."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

PG_ADMIN = os.environ.get("PROFILEHUB_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def fresh_database(backend: str, out: Path) -> Iterator[str]:
    """A PROFILEHUB_DATABASE_URL of an empty database, removed when the block ends."""
    name = f"profilehub_bench_{uuid.uuid4().hex[:10]}"
    if backend == "sqlite":
        path = out / f"{name}.db"
        try:
            yield f"sqlite:///{path.resolve()}"
        finally:
            # with the writer turns' lock files (store/turns.py) beside it
            for suffix in ("", "-wal", "-shm", "-writer", "-waiting", "-present"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    if backend != "postgres":
        raise ValueError(f"unknown backend {backend!r}")
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+psycopg://')}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
