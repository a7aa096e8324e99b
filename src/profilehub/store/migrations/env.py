"""Alembic environment: runs on the connection handed over by ``profilehub.store.database``."""

from __future__ import annotations

from alembic import context

from profilehub.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - we always hand a connection over
    raise RuntimeError("profilehub migrations run through profilehub.store.database.migrate()")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
