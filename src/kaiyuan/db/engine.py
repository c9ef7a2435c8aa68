"""Opening the database: the URL from settings, the engine, the migrations."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError

from kaiyuan.config import Settings
from kaiyuan.sqlite import _pragmas

MIGRATIONS = Path(__file__).with_name("migrations")
FILE = "kaiyuan.db"  # under KAIYUAN_HOME
_migrated: set[str] = set()
_lock = threading.Lock()


def database_url(home: Path, url: str | None) -> str:
    """``url`` (PostgreSQL: ``postgresql+psycopg://...``), else the SQLite file under home."""
    if url:
        return url
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / FILE}"


def open_for(settings: Settings) -> Engine:
    """The database ``settings`` name (``database_url``, else SQLite under its home)."""
    return open_database(settings.home, settings.db_url())


def open_database(home: Path, url: str | None = None) -> Engine:
    """An engine on the database, its schema migrated to this version (once per process)."""
    target = database_url(home, url)
    backend = make_url(target).get_backend_name()
    # PostgreSQL sessions in UTC, whatever the server's zone: timestamps read back, and days
    # cut from them (``kaiyuan usage --by day``), are UTC's, as on SQLite.
    engine = create_engine(
        target,
        pool_pre_ping=backend != "sqlite",
        connect_args={"options": "-c TimeZone=UTC"} if backend == "postgresql" else {},
    )
    if backend == "sqlite":
        event.listen(engine, "connect", _pragmas)
    with _lock:
        if target not in _migrated:
            _upgrade_racing(engine)
            _migrated.add(target)
    return engine


def _upgrade_racing(engine: Engine, tries: int = 5) -> None:
    """Another process (a CLI beside the server) may migrate the same fresh database at the
    same moment: its tables then exist when ours are created. Looking again finds them done."""
    for attempt in range(tries):
        try:
            upgrade(engine)
            return
        except DBAPIError:
            if attempt == tries - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def upgrade(engine: Engine) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
