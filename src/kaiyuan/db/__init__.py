"""kaiyuan's one database: SQLite under ``KAIYUAN_HOME`` (WAL, a busy timeout, foreign keys)
by default, PostgreSQL when ``database_url`` names one. The schema is Alembic's migrations in
``db/migrations``, applied when the database is opened, so every version of kaiyuan finds the
tables it expects."""

from __future__ import annotations

from kaiyuan.db.engine import database_url, open_database, open_for

__all__ = ["database_url", "open_database", "open_for"]
