"""Keys, usage, agent traces and video jobs share one database (kaiyuan.db, or the
PostgreSQL of database_url); the SQLite files traces and video jobs had before are imported
once, nothing lost and nothing twice."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import inspect, text

from kaiyuan.agent.traces import Traces
from kaiyuan.db import open_database
from kaiyuan.media.jobs import Jobs

PARAMS = {"width": 32, "height": 16, "frames": 9, "fps": 8}


def test_traces_and_video_jobs_live_in_the_one_database(tmp_path: Path, database_url: str) -> None:
    traces = Traces(tmp_path, database_url)
    run = traces.start("m", "a task")
    traces.step(run, kind="tool", name="search", input={"q": "x"}, output="found",
                started=time.time(), seconds=0.1)  # fmt: skip
    traces.close()
    jobs = Jobs(tmp_path, database_url)
    video = jobs.create("tiny-video", "a cat", PARAMS)
    jobs.close()
    engine = open_database(tmp_path, database_url)
    tables = set(inspect(engine).get_table_names())
    shared = {"api_keys", "usage", "usage_daily", "agent_runs", "agent_steps", "video_jobs"}
    assert shared | {"conversations"} <= tables
    with engine.connect() as db:
        assert db.execute(text("SELECT task FROM agent_runs")).scalar_one() == "a task"
        assert db.execute(text("SELECT name FROM agent_steps")).scalar_one() == "search"
        assert db.execute(text("SELECT id FROM video_jobs")).scalar_one() == video.id
    assert sorted(p.name for p in tmp_path.glob("*.sqlite")) == []  # no files of their own


def test_the_old_files_are_imported_once(tmp_path: Path, database_url: str) -> None:
    with sqlite3.connect(tmp_path / "traces.sqlite") as db:  # the oldest schema: no `messages`
        db.execute("CREATE TABLE runs (id VARCHAR(32) PRIMARY KEY, created FLOAT, model "
                   "VARCHAR(200), task TEXT, status VARCHAR(20), answer TEXT, citations TEXT, "
                   "stop_reason VARCHAR(40), seconds FLOAT, steps INTEGER, prompt_tokens "
                   "INTEGER, completion_tokens INTEGER)")  # fmt: skip
        db.execute("CREATE TABLE steps (id INTEGER PRIMARY KEY, run_id VARCHAR(32), \"index\" "
                   "INTEGER, kind VARCHAR(10), name VARCHAR(200), input TEXT, output TEXT, "
                   "error TEXT, started FLOAT, seconds FLOAT, prompt_tokens INTEGER, "
                   "completion_tokens INTEGER)")  # fmt: skip
        db.execute("INSERT INTO runs VALUES ('abc', 1.0, 'm', 'old task', 'completed', 'a', "
                   "'[]', NULL, 0.5, 1, 3, 4)")  # fmt: skip
        db.execute("INSERT INTO steps VALUES (1, 'abc', 1, 'model', 'm', '{}', '\"a\"', NULL, "
                   "1.0, 0.5, 3, 4)")  # fmt: skip
    with sqlite3.connect(tmp_path / "media.sqlite") as db:
        db.execute("CREATE TABLE videos (id VARCHAR(40) PRIMARY KEY, created FLOAT, completed "
                   "FLOAT, model VARCHAR(200), prompt TEXT, params TEXT, status VARCHAR(20), "
                   "progress INTEGER, error TEXT, path TEXT)")  # fmt: skip
        db.execute("INSERT INTO videos VALUES ('video_old', 1.0, 2.0, 'v', 'p', ?, "
                   "'completed', 100, NULL, NULL)", (json.dumps(PARAMS),))  # fmt: skip
    traces = Traces(tmp_path, database_url)
    old = traces.get("abc")
    assert old["task"] == "old task" and old["usage"]["completion_tokens"] == 4
    assert [s["name"] for s in old["trace"]] == ["m"]
    # a new step after the imported one (PostgreSQL: the id's sequence moved past the copies)
    traces.step("abc", kind="tool", name="fetch", input={}, output="page", started=2.0,
                seconds=0.1)  # fmt: skip
    assert [s["name"] for s in traces.get("abc")["trace"]] == ["m", "fetch"]
    traces.close()
    assert (tmp_path / "traces.sqlite.imported").is_file()
    assert not (tmp_path / "traces.sqlite").exists()
    jobs = Jobs(tmp_path, database_url)
    assert jobs.get("video_old").status == "completed"
    jobs.close()
    # opened again (the file renamed): still one copy of each
    again = Traces(tmp_path, database_url)
    assert [r["id"] for r in again.runs()] == ["abc"]
    again.close()
    (tmp_path / "traces.sqlite.imported").rename(tmp_path / "traces.sqlite")  # put back by hand
    twice = Traces(tmp_path, database_url)
    assert [r["id"] for r in twice.runs()] == ["abc"]  # rows already there are kept, not doubled
    twice.close()


def test_processes_opening_a_fresh_database_at_once_all_find_it_migrated(
    tmp_path: Path, database_url: str
) -> None:
    opener = (
        "import sys; from pathlib import Path; from kaiyuan.db import open_database; "
        "from kaiyuan.db.keys import KeyStore; "
        "KeyStore(open_database(Path(sys.argv[1]), sys.argv[2])).list()"
    )
    command = [sys.executable, "-c", opener, str(tmp_path), database_url]
    procs = [subprocess.Popen(command, stderr=subprocess.PIPE) for _ in range(6)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    with open_database(tmp_path, database_url).connect() as db:
        assert db.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0006"
