"""GET /v1/usage?by=...&split=...: each group cut again (tokens per day per model, origin or
app, which the web app's usage page draws), with the same own-rows-only rule for a plain key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from kaiyuan.config import Settings
from kaiyuan.db import open_database, open_for
from kaiyuan.db.keys import KeyStore, Limits
from kaiyuan.db.usage import UsageRow, UsageStore, summary
from kaiyuan.engines.pool import EnginePool
from kaiyuan.server.app import create_app
from tests.fakes import Reply, ScriptedEngine
from tests.harness import serve_app


def _row(at: datetime, **fields: object) -> UsageRow:
    row = {"at": at, "key_id": "k1", "key_name": "team", "model": "m",
           "endpoint": "/v1/chat/completions", "app": "notes", "status": 200,
           "prompt_tokens": 10, "cached_tokens": 0, "completion_tokens": 5, "ttft_ms": 1.0,
           "duration_ms": 2.0, "finish_reason": "stop", "cancelled": False, "origin": "US",
           "cost_usd": 0.0, **fields}  # fmt: skip
    return UsageRow(**row)  # type: ignore[arg-type]


def _pairs(rows: list[dict[str, Any]]) -> list[tuple[Any, Any, int, int]]:
    return [
        (r["group"], r["split"], r["requests"], r["prompt_tokens"] + r["completion_tokens"])
        for r in rows
    ]


def test_summary_splits_days_by_a_second_group(tmp_path: Path, database_url: str) -> None:
    engine = open_database(tmp_path, database_url)
    store = UsageStore(engine)
    day = datetime(2026, 3, 1, 9, tzinfo=UTC)
    store.record(_row(day))
    store.record(_row(day + timedelta(minutes=1), origin="CN", model="qwen", prompt_tokens=40))
    store.record(_row(day + timedelta(minutes=2)))
    store.record(_row(day + timedelta(days=1), key_id="k2", key_name="other", app="mail"))
    store.record(_row(day + timedelta(days=1, minutes=1), app=None, origin=None, model=None,
                      prompt_tokens=0, completion_tokens=0, status=404))  # fmt: skip
    by_origin = summary(engine, "day", day, split="origin")
    # days in order; within a day the most tokens first
    assert _pairs(by_origin) == [
        ("2026-03-01", "CN", 1, 45),
        ("2026-03-01", "US", 2, 30),
        ("2026-03-02", "US", 1, 15),
        ("2026-03-02", None, 1, 0),
    ]
    assert _pairs(summary(engine, "day", day, split="app")) == [
        ("2026-03-01", "notes", 3, 75),
        ("2026-03-02", "mail", 1, 15),
        ("2026-03-02", None, 1, 0),
    ]
    # one key's own rows only
    assert _pairs(summary(engine, "day", day, key_id="k2", split="model")) == [
        ("2026-03-02", "m", 1, 15),
    ]
    # the other way round: per model, its days
    assert _pairs(summary(engine, "model", day, split="day"))[:2] == [
        ("qwen", "2026-03-01", 1, 45),
        ("m", "2026-03-01", 2, 30),
    ]
    # without split the answer is as before: no "split" column
    assert "split" not in summary(engine, "day", day)[0]
    with pytest.raises(ValueError):
        summary(engine, "day", day, split="day")
    with pytest.raises(ValueError):
        summary(engine, "day", day, split="colour")


def test_the_route_splits_and_keeps_a_plain_key_to_its_own(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    keys = KeyStore(open_for(settings))
    _, alice = keys.create("alice")
    _, bob = keys.create("bob")
    _, boss = keys.create("boss", Limits(admin=True))
    engine = ScriptedEngine("fake-model", context_length=4096)
    engine.enqueue(Reply(["a", "b"]), Reply(["c"]), Reply(["d", "e", "f"]))
    chat = {"model": "fake-model", "messages": [{"role": "user", "content": "Hi"}]}
    with serve_app(create_app(settings, EnginePool([engine]))) as url:
        spent: dict[str, int] = {"notes": 0, "mail": 0}
        for secret, app in ((alice, "notes"), (alice, "notes"), (bob, "mail")):
            reply = httpx.post(url + "/v1/chat/completions", json=chat,
                               headers={"x-api-key": secret, "x-title": app})  # fmt: skip
            assert reply.status_code == 200, reply.text
            spent[app] += reply.json()["usage"]["total_tokens"]
        today = datetime.now(UTC).date().isoformat()

        def usage(secret: str, **query: str) -> httpx.Response:
            return httpx.get(url + "/v1/usage", params=query, headers={"x-api-key": secret})

        everyone = usage(boss, by="day", split="app", days="7")
        assert everyone.status_code == 200, everyone.text
        answer = everyone.json()
        assert answer["by"] == "day" and answer["split"] == "app"
        assert (answer["key"], answer["admin"], answer["everyone"]) == ("boss", True, True)
        tokens = {(r["group"], r["split"]): r["prompt_tokens"] + r["completion_tokens"]
                  for r in answer["data"]}  # fmt: skip
        assert tokens[(today, "notes")] == spent["notes"]
        assert tokens[(today, "mail")] == spent["mail"]
        by_key = {
            r["split"]: r["requests"] for r in usage(boss, by="day", split="key").json()["data"]
        }
        assert by_key["alice"] == 2 and by_key["bob"] == 1
        mine = usage(alice, by="day", split="app").json()
        assert (mine["key"], mine["admin"], mine["everyone"]) == ("alice", False, False)
        own = mine["data"]
        assert {r["split"] for r in own} <= {"notes", None}  # the GETs are rows too (no app)
        assert [r["requests"] for r in own if r["split"] == "notes"] == [2]
        models = usage(bob, by="app", split="model").json()["data"]
        assert [
            (r["group"], r["split"], r["requests"]) for r in models if r["group"] == "mail"
        ] == [("mail", "fake-model", 1)]
        same = usage(boss, by="day", split="day")
        assert same.status_code == 400 and same.json()["error"]["param"] == "split"
        assert usage(boss, by="day", split="colour").status_code == 400
        assert "split" not in usage(boss, by="day").json()


def test_an_open_server_shows_everyones_usage_to_anyone(tmp_path: Path) -> None:
    app = create_app(Settings(home=tmp_path), EnginePool([ScriptedEngine("fake-model")]))
    chat = {"model": "fake-model", "messages": [{"role": "user", "content": "Hi"}]}
    with serve_app(app) as url:
        assert httpx.post(url + "/v1/chat/completions", json=chat).status_code == 200
        answer = httpx.get(url + "/v1/usage", params={"by": "day", "split": "model"}).json()
        assert (answer["key"], answer["admin"], answer["everyone"]) == (None, False, True)
        assert "fake-model" in {r["split"] for r in answer["data"]}
