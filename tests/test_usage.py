"""Usage rows for every request, token limits and budgets, `kaiyuan usage`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from kaiyuan.db import open_database
from kaiyuan.db.keys import KeyStore, Limits
from kaiyuan.db.usage import UsageRow, UsageStore, period_start, summary
from tests.conftest import MODEL
from tests.harness import KaiyuanServer, wait_for

pytestmark = pytest.mark.slow

KAIYUAN = str(Path(sys.executable).with_name("kaiyuan"))
HI = [{"role": "user", "content": "Hi"}]
NO_EOS = {"0": -100, "2": -100}


def rows(home: Path) -> list:
    return UsageStore(open_database(home)).rows()


def test_every_surface_leaves_a_usage_row(tmp_path: Path) -> None:
    keys = KeyStore(open_database(tmp_path))
    _, secret = keys.create("team")
    with KaiyuanServer(home=tmp_path) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=secret, max_retries=0,
                               default_headers={"X-Title": "notes-app"})  # fmt: skip
        reply = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=5)  # type: ignore[arg-type]
        assert wait_for(lambda: len(rows(tmp_path)) == 1, 5)
        row = rows(tmp_path)[0]
        assert (row.key_name, row.model, row.endpoint, row.app) == (
            "team",
            MODEL,
            "/v1/chat/completions",
            "notes-app",
        )
        assert row.prompt_tokens == reply.usage.prompt_tokens  # type: ignore[union-attr]
        assert row.completion_tokens == reply.usage.completion_tokens  # type: ignore[union-attr]
        assert row.status == 200 and not row.cancelled and row.ttft_ms is not None
        claude = anthropic.Anthropic(base_url=server.url, api_key=secret, max_retries=0)
        claude.messages.create(model=MODEL, max_tokens=3, messages=HI)  # type: ignore[arg-type]
        httpx.post(server.url + "/api/chat", headers={"authorization": f"Bearer {secret}"},
                   json={"model": MODEL, "messages": HI, "stream": False,
                         "options": {"num_predict": 3}})  # fmt: skip
        httpx.post(server.url + "/v1/chat/completions", headers={"x-api-key": secret},
                   json={"model": "no-such-model", "messages": HI})  # fmt: skip
        assert wait_for(lambda: len(rows(tmp_path)) == 4, 5)
        by_endpoint = {r.endpoint: r for r in rows(tmp_path)}
        assert by_endpoint["/v1/messages"].completion_tokens == 3
        assert by_endpoint["/api/chat"].completion_tokens == 3
        assert by_endpoint["/v1/chat/completions"].status in (200, 404)
        assert any(r.status == 404 and r.completion_tokens == 0 for r in rows(tmp_path))
        # a stream the client leaves early is a cancelled row with what was generated
        body = {"model": MODEL, "messages": HI, "max_tokens": 400, "stream": True,
                "logit_bias": NO_EOS}  # fmt: skip
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body,
                          headers={"x-api-key": secret}, timeout=60) as stream:  # fmt: skip
            lines = stream.iter_lines()
            for _ in range(6):
                next(lines)
        assert wait_for(lambda: len(rows(tmp_path)) == 5, 10)
        left = rows(tmp_path)[0]
        assert left.cancelled and left.completion_tokens < 400
        env = {**os.environ, "KAIYUAN_HOME": str(tmp_path)}
        done = subprocess.run([KAIYUAN, "usage", "--by", "endpoint", "--json"], text=True,
                              capture_output=True, env=env)  # fmt: skip
        summary = {r["group"]: r for r in json.loads(done.stdout)}
        assert summary["/v1/messages"]["completion_tokens"] == 3
        assert summary["/v1/chat/completions"]["cancelled"] == 1
        table = subprocess.run([KAIYUAN, "usage", "--by", "app"], text=True, capture_output=True,
                               env=env)  # fmt: skip
        assert "notes-app" in table.stdout and "share" in table.stdout


def test_tokens_per_minute_and_budgets_are_enforced(tmp_path: Path) -> None:
    keys = KeyStore(open_database(tmp_path))
    _, per_minute = keys.create("tpm", Limits(tpm=20))
    _, budget = keys.create("budget", Limits(budget_tokens=20, period="day"))
    with KaiyuanServer(home=tmp_path) as server:
        body = {"model": MODEL, "messages": HI, "max_tokens": 4}
        url = server.url + "/v1/chat/completions"
        first = httpx.post(url, json=body, headers={"x-api-key": per_minute})
        assert first.status_code == 200 and first.headers["x-ratelimit-limit-tokens"] == "20"
        assert first.json()["usage"]["total_tokens"] > 20
        over = httpx.post(url, json=body, headers={"x-api-key": per_minute})
        assert over.status_code == 429
        assert over.headers["x-ratelimit-remaining-tokens"] == "0"
        assert over.json()["error"]["code"] == "rate_limit_exceeded"
        assert httpx.post(url, json=body, headers={"x-api-key": budget}).status_code == 200
        spent = httpx.post(url, json=body, headers={"x-api-key": budget})
        assert spent.status_code == 429
        assert spent.json()["error"]["code"] == "insufficient_quota"
        assert spent.json()["error"]["type"] == "insufficient_quota"


def test_budget_periods_start_at_midnight_and_the_first_of_the_month() -> None:
    moment = datetime(2026, 12, 3, 20, 15, tzinfo=UTC)
    assert period_start("day", moment) == datetime(2026, 12, 3, tzinfo=UTC)
    assert period_start("month", moment) == datetime(2026, 12, 1, tzinfo=UTC)
    assert period_start("day", moment + timedelta(hours=4)) == datetime(2026, 12, 4, tzinfo=UTC)


def test_usage_route_shows_a_key_its_own_and_an_admin_everyones(tmp_path: Path) -> None:
    keys = KeyStore(open_database(tmp_path))
    _, alice = keys.create("alice")
    _, bob = keys.create("bob")
    _, boss = keys.create("boss", Limits(admin=True))
    with KaiyuanServer(home=tmp_path) as server:
        for secret in (alice, bob, bob):
            httpx.post(server.url + "/v1/chat/completions", headers={"x-api-key": secret},
                       json={"model": MODEL, "messages": HI, "max_tokens": 2})  # fmt: skip
        assert wait_for(lambda: len(rows(tmp_path)) >= 3, 5)

        def seen(secret: str) -> dict[str, int]:
            reply = httpx.get(server.url + "/v1/usage?by=key", headers={"x-api-key": secret})
            return {r["group"]: r["requests"] for r in reply.json()["data"]}

        assert seen(alice) == {"alice": 1}
        assert seen(bob) == {"bob": 2}
        everyone = seen(boss)  # every request is a row: the GETs above too
        assert everyone["alice"] >= 1 and everyone["bob"] >= 2 and set(everyone) >= {"alice", "bob"}
        bad = httpx.get(server.url + "/v1/usage?by=colour", headers={"x-api-key": boss})
        assert bad.status_code == 400


def _usage(at: datetime, **fields: object) -> UsageRow:
    row = {"at": at, "key_id": "k1", "key_name": "team", "model": "m",
           "endpoint": "/v1/chat/completions", "app": "notes", "status": 200,
           "prompt_tokens": 10, "cached_tokens": 2, "completion_tokens": 5, "ttft_ms": 12.5,
           "duration_ms": 40.0, "finish_reason": "stop", "cancelled": False, "publisher": "HF",
           "origin": "US", "licence": "apache-2.0", "cost_usd": 0.25, **fields}  # fmt: skip
    return UsageRow(**row)  # type: ignore[arg-type]


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def test_usage_store_records_sums_rolls_up_and_summarises(
    tmp_path: Path, database_url: str
) -> None:
    engine = open_database(tmp_path, database_url)
    store = UsageStore(engine)
    late = datetime(2026, 12, 3, 20, 15, tzinfo=UTC)  # already the 4th east of UTC+4
    store.record(_usage(late))
    store.record(_usage(late + timedelta(minutes=1)))
    store.record(_usage(late + timedelta(minutes=2), model="n", cancelled=True,
                        completion_tokens=1, cost_usd=0.0))  # fmt: skip
    store.record(_usage(late + timedelta(hours=5), key_id="k2", key_name="other", cost_usd=1.0))
    refused = {"key_id": None, "key_name": None, "model": None, "app": None, "ttft_ms": None,
               "finish_reason": None, "status": 404, "prompt_tokens": 0, "cached_tokens": 0,
               "completion_tokens": 0, "cost_usd": 0.0}  # fmt: skip
    store.record(_usage(late + timedelta(hours=6), **refused))
    assert store.spent_since("k1", late) == (41, 0.5)
    assert store.spent_since("k1", late + timedelta(seconds=30)) == (26, 0.25)
    assert store.spent_since("k1", period_start("day", late + timedelta(hours=5))) == (0, 0.0)
    assert store.spent_since("k2", period_start("month", late)) == (15, 1.0)
    assert store.tokens_since("nobody", late) == 0
    days = sorted(
        (d["day"], d["key_id"], d["model"], d["requests"], d["prompt_tokens"],
         d["completion_tokens"], d["cost_usd"])
        for d in store.daily(late)
    )  # fmt: skip
    assert days == [
        ("2026-12-03", "k1", "m", 2, 20, 10, 0.5),
        ("2026-12-03", "k1", "n", 1, 10, 1, 0.0),
        ("2026-12-04", "", "", 1, 0, 0, 0.0),
        ("2026-12-04", "k2", "m", 1, 10, 5, 1.0),
    ]
    assert [d["day"] for d in store.daily(late + timedelta(hours=5), key_id="k2")] == ["2026-12-04"]
    found = store.rows()
    assert [r.key_name for r in found] == [None, "other", "team", "team", "team"]  # newest first
    assert _utc(found[1].at) == late + timedelta(hours=5)
    assert found[0] == _usage(found[0].at, **refused)
    assert found[2].cancelled is True and found[3].cancelled is False
    assert len(store.rows(key_id="k1")) == 3 and len(store.rows(limit=2)) == 2
    by_day = summary(engine, "day", late)
    assert [(r["group"], r["requests"]) for r in by_day] == [("2026-12-03", 3), ("2026-12-04", 2)]
    by_model = summary(engine, "model", late)
    assert [(r["group"], r["requests"], r["cancelled"]) for r in by_model] == [
        ("m", 3, 0), ("n", 1, 1), (None, 1, 0)]  # fmt: skip
    mine = summary(engine, "key", late, key_id="k1")
    assert mine == [{"group": "team", "requests": 3, "prompt_tokens": 30, "cached_tokens": 6,
                     "completion_tokens": 11, "cancelled": 1, "cost_usd": 0.5}]  # fmt: skip
    assert json.loads(json.dumps(mine)) == mine  # plain ints and floats, as the CLI prints
    assert summary(engine, "origin", late + timedelta(hours=7)) == []


def test_a_server_on_postgresql_keeps_its_keys_and_usage_there(
    tmp_path: Path, postgres_database: str
) -> None:
    env = {"KAIYUAN_DATABASE_URL": postgres_database}
    cli_env = {**os.environ, "KAIYUAN_HOME": str(tmp_path), **env}
    made = subprocess.run([KAIYUAN, "keys", "create", "pg-team"], text=True, capture_output=True,
                          env=cli_env, timeout=60)  # fmt: skip
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    store = UsageStore(open_database(tmp_path, postgres_database))
    with KaiyuanServer(home=tmp_path, env=env) as server:
        assert httpx.get(server.url + "/v1/models").status_code == 401  # the key in PG counts
        reply = httpx.post(server.url + "/v1/chat/completions", headers={"x-api-key": secret},
                           json={"model": MODEL, "messages": HI, "max_tokens": 3})  # fmt: skip
        assert reply.status_code == 200, reply.text

        def served() -> list[UsageRow]:
            return [r for r in store.rows() if r.endpoint == "/v1/chat/completions"]

        assert wait_for(lambda: len(served()) == 1, 5)
        row = served()[0]
        assert (row.key_name, row.model, row.status) == ("pg-team", MODEL, 200)
        assert row.completion_tokens == reply.json()["usage"]["completion_tokens"]
        assert abs(_utc(row.at) - datetime.now(UTC)) < timedelta(minutes=5)
        assert postgres_database not in server.log()
    done = subprocess.run([KAIYUAN, "usage", "--by", "key", "--json"], text=True,
                          capture_output=True, env=cli_env, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert {r["group"]: r["requests"] for r in json.loads(done.stdout)}["pg-team"] == 1
    assert list(tmp_path.glob("kaiyuan.db*")) == []  # nothing went to SQLite


def test_metrics_parse_and_count_what_was_served(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    with KaiyuanServer(home=tmp_path) as server:
        client = server.client()
        replies = [
            client.chat.completions.create(model=MODEL, messages=HI, max_tokens=4, stream=False)  # type: ignore[arg-type]
            for _ in range(2)
        ]
        for _ in client.chat.completions.create(
            model=MODEL, messages=HI, max_tokens=3, stream=True
        ):  # type: ignore[arg-type]
            pass
        httpx.get(server.url + "/v1/models/nope")

        def scrape() -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
            reply = httpx.get(server.url + "/metrics")
            assert reply.status_code == 200
            assert reply.headers["content-type"].startswith("text/plain")
            out: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
            for family in text_string_to_metric_families(reply.text):
                for s in family.samples:
                    key = (s.name, tuple(sorted(s.labels.items())))
                    out.setdefault(family.name, {})[key] = s.value
            return out

        generated = sum(r.usage.completion_tokens for r in replies) + 3  # type: ignore[union-attr]
        model = (("model_name", MODEL),)
        assert wait_for(
            lambda: scrape()["kaiyuan:generation_tokens"].get(
                ("kaiyuan:generation_tokens_total", model)) == generated, 5)  # fmt: skip
        metrics = scrape()
        ttft = metrics["kaiyuan:time_to_first_token_seconds"]
        assert ttft[("kaiyuan:time_to_first_token_seconds_count", model)] == 3
        assert metrics["kaiyuan:inter_token_latency_seconds"][
            ("kaiyuan:inter_token_latency_seconds_count", model)] >= 3  # fmt: skip
        assert metrics["kaiyuan:num_requests_running"][("kaiyuan:num_requests_running", model)] == 0
        assert metrics["kaiyuan:model_loaded"][("kaiyuan:model_loaded", model)] == 1
        http = metrics["kaiyuan:http_requests"]
        ok = (("route", "/v1/chat/completions"), ("status", "200"))
        assert http[("kaiyuan:http_requests_total", ok)] == 3
        missing = (("route", "/v1/models/{model_id:path}"), ("status", "404"))
        assert http[("kaiyuan:http_requests_total", missing)] == 1
        prompts = sum(r.usage.prompt_tokens for r in replies)  # type: ignore[union-attr]
        queries = metrics["kaiyuan:prefix_cache_queries"][
            ("kaiyuan:prefix_cache_queries_total", model)
        ]
        assert queries > prompts
