"""Data from before the one database: the SQLite files agent traces (``traces.sqlite``) and
video jobs (``media.sqlite``) had of their own. Each is copied into its tables once (the
columns both have; rows already there are kept) and then renamed ``*.imported``, so nothing a
user had is lost and nothing is imported twice."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Integer, MetaData, Table, create_engine, func, inspect, select

log = logging.getLogger(__name__)


def import_once(engine: Engine, old: Path, tables: dict[str, Table]) -> None:
    """Rows of each old table (keys) into the new one (values), then ``old`` is renamed."""
    if not old.is_file():
        return
    source = create_engine(f"sqlite:///{old}")
    try:
        with source.connect() as reading, engine.begin() as writing:
            for name, table in tables.items():
                fresh = _rows(reading, name, table)
                known = {tuple(r) for r in writing.execute(select(*table.primary_key.columns))}
                keys = [c.name for c in table.primary_key.columns]
                fresh = [r for r in fresh if tuple(r.get(k) for k in keys) not in known]
                if fresh:
                    writing.execute(table.insert(), fresh)
                    _advance_serial(writing, table)
                log.info("imported %d rows of %s from %s", len(fresh), name, old)
    finally:
        source.dispose()
    old.rename(old.with_name(old.name + ".imported"))


def _advance_serial(writing: Any, table: Table) -> None:
    """PostgreSQL: rows copied with their integer ids leave the id's sequence behind (the next
    insert would reuse id 1); it moves past the largest id."""
    key = list(table.primary_key.columns)
    if writing.dialect.name != "postgresql" or len(key) != 1:
        return
    if not isinstance(key[0].type, Integer):
        return
    sequence = func.pg_get_serial_sequence(table.name, key[0].name)  # NULL: not a serial
    writing.execute(select(func.setval(sequence, select(func.max(key[0])).scalar_subquery())))


def _rows(reading: Any, name: str, table: Table) -> list[dict[str, Any]]:
    """The old table's rows in the new table's columns (a column added since: its default)."""
    if not inspect(reading).has_table(name):
        return []
    old = Table(name, MetaData(), autoload_with=reading)
    shared = [c.name for c in table.columns if c.name in old.c]
    rows = [dict(r._mapping) for r in reading.execute(select(*(old.c[n] for n in shared)))]
    for row in rows:
        for column in table.columns:
            if column.name not in row and column.default is not None:
                row[column.name] = getattr(column.default, "arg", None)
    return rows
