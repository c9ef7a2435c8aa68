"""What requests cost and whose models they used: prices and machine time, dollar budgets,
the daily roll-up, `kaiyuan usage --by origin` and its HTML report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from kaiyuan.config import Settings
from kaiyuan.db import open_database
from kaiyuan.db.keys import KeyStore, Limits
from kaiyuan.db.usage import UsageRow, UsageStore
from kaiyuan.server.pricing import Pricing
from kaiyuan.store.store import Store
from tests.conftest import MODEL
from tests.harness import KaiyuanServer, wait_for

KAIYUAN = str(Path(sys.executable).with_name("kaiyuan"))
HI = [{"role": "user", "content": "Hi"}]


def row(at: datetime, model: str, origin: str | None, tokens: int, cost: float, key: str = "k1"):
    return UsageRow(
        at=at, key_id=key, key_name=key, model=model, endpoint="/v1/chat/completions", app=None,
        status=200, prompt_tokens=tokens, cached_tokens=0, completion_tokens=tokens,
        ttft_ms=1.0, duration_ms=2.0, finish_reason="stop", cancelled=False,
        publisher=None if origin is None else f"maker-{origin}", origin=origin, licence="MIT",
        cost_usd=cost,
    )  # fmt: skip


def test_the_daily_roll_up_sums_what_the_rows_hold(tmp_path: Path) -> None:
    store = UsageStore(open_database(tmp_path))
    day1 = datetime(2026, 11, 30, 23, 59, tzinfo=UTC)
    day2 = day1 + timedelta(minutes=2)
    store.record(row(day1, "qwen3-8b", "CN", 10, 0.5))
    store.record(row(day1, "qwen3-8b", "CN", 5, 0.25))
    store.record(row(day1, "llama-3.1-8b", "US", 7, 0.0))
    store.record(row(day2, "qwen3-8b", "CN", 1, 0.125))
    store.record(row(day2, "qwen3-8b", "CN", 1, 0.125, key="k2"))
    daily = {(r["day"], r["key_id"], r["model"]): r for r in store.daily(day1 - timedelta(1))}
    assert set(daily) == {
        ("2026-11-30", "k1", "qwen3-8b"),
        ("2026-11-30", "k1", "llama-3.1-8b"),
        ("2026-12-01", "k1", "qwen3-8b"),
        ("2026-12-01", "k2", "qwen3-8b"),
    }
    first = daily[("2026-11-30", "k1", "qwen3-8b")]
    assert (first["requests"], first["prompt_tokens"], first["completion_tokens"]) == (2, 15, 15)
    assert first["cost_usd"] == pytest.approx(0.75) and first["origin"] == "CN"
    assert store.spent_since("k1", day1) == (15 + 15 + 14 + 2, pytest.approx(0.875))
    assert store.spent_since("k1", day2) == (2, pytest.approx(0.125))


def test_prices_per_model_else_a_share_of_the_machine(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, prices={"qwen3-8b": (0.5, 2.0)}, dollars_per_hour=3.6,
                        parallel=4, aliases={"gpt-4o": "qwen3-8b"})  # fmt: skip
    pool = SimpleNamespace(store=Store(tmp_path))
    pricing = Pricing(settings, SimpleNamespace(pool=pool))
    assert pricing.cost("qwen3-8b", 1_000_000, 500_000, 99.0) == pytest.approx(1.5)
    # no price: 10 s of a $3.60/h machine shared by 4 slots
    assert pricing.cost("other", 10, 10, 10.0) == pytest.approx(0.0025)
    assert pricing.cost("other", 0, 0, 10.0) == 0.0  # nothing ran
    assert pricing.maker("gpt-4o").model == "qwen3-8b"
    bundled = pricing.maker(MODEL)
    assert (bundled.publisher, bundled.origin, bundled.licence) == (
        "Hugging Face", "US", "Apache-2.0")  # fmt: skip
    assert pricing.maker("no-such-model").publisher is None


@pytest.mark.slow
def test_rows_carry_maker_and_cost_and_a_dollar_budget_is_enforced(tmp_path: Path) -> None:
    keys = KeyStore(open_database(tmp_path))
    _, secret = keys.create("team", Limits(budget_usd=0.01, period="month"))
    prices = json.dumps({MODEL: [2000.0, 4000.0]})  # $ per million: a few tokens spend a cent
    with KaiyuanServer(home=tmp_path, env={"KAIYUAN_PRICES": prices}) as server:
        url = server.url + "/v1/chat/completions"
        body = {"model": MODEL, "messages": HI, "max_tokens": 4}
        first = httpx.post(url, json=body, headers={"authorization": f"Bearer {secret}"})
        assert first.status_code == 200, first.text
        usage = first.json()["usage"]
        store = UsageStore(open_database(tmp_path))
        assert wait_for(lambda: len(store.rows()) == 1, 5)
        (made,) = store.rows()
        expected = (usage["prompt_tokens"] * 2000 + usage["completion_tokens"] * 4000) / 1e6
        assert made.cost_usd == pytest.approx(expected) and expected > 0.01
        assert (made.publisher, made.origin, made.licence) == ("Hugging Face", "US", "Apache-2.0")
        spent = httpx.post(url, json=body, headers={"authorization": f"Bearer {secret}"})
        assert spent.status_code == 429
        error = spent.json()["error"]
        assert error["code"] == "insufficient_quota" and "$0.01" in error["message"]
        listed = httpx.get(server.url + "/v1/usage?by=origin",
                           headers={"authorization": f"Bearer {secret}"}).json()  # fmt: skip
        # the refused request never reached a model: only the first is counted
        assert [(r["group"], r["requests"]) for r in listed["data"]] == [("US", 1)]


def test_usage_cli_by_origin_and_its_html_report(tmp_path: Path) -> None:
    store = UsageStore(open_database(tmp_path))
    now = datetime.now(UTC)
    store.record(row(now - timedelta(days=1), "qwen3-8b", "CN", 30, 0.25))
    store.record(row(now, "qwen3-8b", "CN", 10, 0.25))
    store.record(row(now, "llama-3.1-8b", "US", 10, 0.0))
    store.record(replace(row(now, "mystery", None, 5, 0.0), publisher=None))
    env = {**os.environ, "KAIYUAN_HOME": str(tmp_path)}
    run = subprocess.run([KAIYUAN, "usage", "--by", "origin", "--json"], text=True,
                         capture_output=True, env=env, check=True)  # fmt: skip
    shares = {r["group"]: (r["prompt_tokens"] + r["completion_tokens"], r["cost_usd"])
              for r in json.loads(run.stdout)}  # fmt: skip
    assert shares == {"CN": (80, pytest.approx(0.5)), "US": (20, 0.0), None: (10, 0.0)}
    report = tmp_path / "report.html"
    run = subprocess.run([KAIYUAN, "usage", "--by", "publisher", "--html", str(report)],
                         text=True, capture_output=True, env=env, check=True)  # fmt: skip
    assert "maker-CN" in run.stdout and "share" in run.stdout
    html = report.read_text()
    assert html.count("<svg") == 2 and "maker-CN" in html
    assert "qwen3-8b" in html and "CN" in html  # the legends of the two share plots
    bad = subprocess.run([KAIYUAN, "usage", "--since", "yesterday"], text=True,
                         capture_output=True, env=env)  # fmt: skip
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "--since 'yesterday'" in bad.stderr
