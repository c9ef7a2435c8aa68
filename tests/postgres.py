"""PostgreSQL for the storage tests: a throwaway server of Debian's binaries (the `postgresql`
package, which `make system-deps` installs; its own service is never used), started once per
session in a temporary directory on a free loopback port, and a fresh database per test.

The server runs in a time zone that is not UTC, so code that leans on the server's zone shows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from tests.harness import free_port

BINARIES = Path("/usr/lib/postgresql")  # Debian: /usr/lib/postgresql/<major>/bin
ZONE = "Asia/Shanghai"  # UTC+8: a request late in a UTC day is early the next day here


def pg_bin() -> Path:
    """The newest installed server's bin directory; the test fails (not skips) without one."""
    found = [p for p in BINARIES.glob("*/bin") if (p / "initdb").is_file()]
    if not found:
        pytest.fail(
            f"PostgreSQL's server binaries are not in {BINARIES}/*/bin: run `make system-deps` "
            "(it installs the Debian package postgresql; `make test` runs it first)",
            pytrace=False,
        )
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


def _as_owner() -> dict[str, Any]:
    """initdb and postgres refuse root: run them as the `postgres` user the package made."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


def _stop(bin_dir: Path, data: Path, proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        subprocess.run([bin_dir / "pg_ctl", "-D", data, "stop", "-m", "immediate", "-s"],
                       capture_output=True, timeout=30, **_as_owner())  # fmt: skip
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()  # reaped: no stale postmaster.pid for a later start


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A SQLAlchemy URL of the database ``kaiyuan_test`` on a server of this session only
    (loopback TCP, trust authentication, stopped with ``pg_ctl stop -m immediate``)."""
    bin_dir = pg_bin()
    # Outside pytest's 0700 temp root, which the postgres user could not enter.
    root = Path(tempfile.mkdtemp(prefix="kaiyuan-pg-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        data = root / "data"
        started = time.monotonic()
        init = subprocess.run(
            [bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync",
             "-E", "UTF8", "--locale=C", "--no-instructions"],
            capture_output=True, text=True, timeout=120, **_as_owner(),
        )  # fmt: skip
        if init.returncode != 0:
            pytest.fail(f"initdb failed:\n{init.stdout}{init.stderr}", pytrace=False)
        for _ in range(3):  # a free port can be taken before the server binds it
            port = free_port()
            log = root / f"server-{port}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    [bin_dir / "postgres", "-D", data, "-k", root, "-p", str(port),
                     "-c", "listen_addresses=127.0.0.1", "-c", f"timezone={ZONE}",
                     "-c", "fsync=off", "-c", "synchronous_commit=off",
                     "-c", "full_page_writes=off", "-c", "max_connections=200"],
                    stdout=out, stderr=subprocess.STDOUT, **_as_owner(),
                )  # fmt: skip
            try:
                url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
                if _ready(url, proc, deadline=time.monotonic() + 60):
                    break
            except BaseException:
                _stop(bin_dir, data, proc)
                raise
            _stop(bin_dir, data, proc)
        else:
            pytest.fail(f"PostgreSQL did not start:\n{log.read_text(errors='replace')}")
        try:
            _admin(url, "CREATE DATABASE kaiyuan_test")
            print(f"PostgreSQL {bin_dir.parent.name} up in {time.monotonic() - started:.2f} s")
            yield url.rsplit("/", 1)[0] + "/kaiyuan_test"
        finally:
            _stop(bin_dir, data, proc)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _ready(url: str, proc: subprocess.Popen[bytes], deadline: float) -> bool:
    engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 2})
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with engine.connect() as db:
                    db.execute(text("SELECT 1"))
                return True
            except OperationalError:
                time.sleep(0.05)
        return False
    finally:
        engine.dispose()


def _admin(url: str, statement: str) -> None:
    """``statement`` (CREATE/DROP DATABASE: outside a transaction) on the server's own
    database."""
    engine = create_engine(
        make_url(url).set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    try:
        with engine.connect() as db:
            db.execute(text(statement))
    finally:
        engine.dispose()


@pytest.fixture
def postgres_database(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the session's server for one test, dropped after it."""
    name = f"kaiyuan_{uuid.uuid4().hex[:12]}"
    _admin(postgres_server, f"CREATE DATABASE {name}")
    try:
        yield str(make_url(postgres_server).set(database=name).render_as_string(False))
    finally:
        _admin(postgres_server, f"DROP DATABASE {name} WITH (FORCE)")  # engines left open


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each storage test twice: on a SQLite file in tmp_path, and on a fresh PostgreSQL
    database (the server starts only when a test asks for it)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'kaiyuan.db'}"
    return str(request.getfixturevalue("postgres_database"))
