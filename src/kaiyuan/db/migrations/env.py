"""Alembic's environment: kaiyuan hands it an open connection (db/engine.py)."""

from __future__ import annotations

from alembic import context

from kaiyuan.db.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
