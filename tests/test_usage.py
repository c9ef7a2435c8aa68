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
from kaiyuan.db.usage import UsageStore, period_start
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
