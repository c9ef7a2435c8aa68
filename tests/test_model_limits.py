"""Limits per key × model: `keys create --model-limit MODEL:rpm=N,tpm=N,parallel=N`, counted
apart from the key's own limits once the body names the model."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from kaiyuan.cli.keys import model_limits
from kaiyuan.db import open_database
from kaiyuan.db.keys import ApiKey, KeyStore, Limits
from kaiyuan.errors import InvalidRequest
from kaiyuan.server.limits import Limiter, RateLimited
from tests.conftest import MODEL
from tests.harness import KaiyuanServer

KAIYUAN = str(Path(sys.executable).with_name("kaiyuan"))
HI = [{"role": "user", "content": "Hi"}]
NO_EOS = {"0": -100, "2": -100}


def key(**limits: dict[str, int]) -> ApiKey:
    return ApiKey(id="k1", name="team", models=None, rpm=None, tpm=None, parallel=None,
                  budget_tokens=None, budget_usd=None, period="month", expires_at=None,
                  admin=False, created_at=datetime.now(UTC), revoked_at=None,
                  model_limits=limits)  # fmt: skip


def test_limits_on_a_model_are_counted_apart() -> None:
    limiter = Limiter()
    team = key(big={"rpm": 2, "parallel": 1})
    first = limiter.admit_model(team, "big", now=0.0)
    assert first is not None and first.headers["x-ratelimit-limit-requests"] == "2"
    with pytest.raises(RateLimited, match="on model 'big' already has 1 requests running"):
        limiter.admit_model(team, "big", now=1.0)
    assert limiter.admit_model(team, "small", now=1.0) is None  # no limits on that one
    limiter.admit(team, now=1.0)  # the key itself is not limited
    first.release(10)
    limiter.admit_model(team, "big", now=2.0)
    with pytest.raises(RateLimited, match="on model 'big' is over its limit of 2 requests") as e:
        limiter.admit_model(team, "big", now=3.0)
    assert e.value.headers["retry-after"] == "57"  # the first request leaves the window at 60 s


def test_model_limit_flags_parse_or_say_what_is_wrong(tmp_path: Path) -> None:
    assert model_limits("qwen3:8b:rpm=2,parallel=1") == ("qwen3:8b", {"rpm": 2, "parallel": 1})
    for bad in ("qwen3", ":rpm=1", "m:rpm", "m:rpm=0", "m:rps=3", "m:tpm=-1", "m:rpm=1e3"):
        with pytest.raises(InvalidRequest, match="--model-limit"):
            model_limits(bad)
    env = {**os.environ, "KAIYUAN_HOME": str(tmp_path)}
    create = [KAIYUAN, "keys", "create", "alice", "--model-limit", "m:rpm=1", "--model-limit",
              "n:tpm=500"]  # fmt: skip
    made = subprocess.run(create, capture_output=True, text=True, env=env)
    assert made.returncode == 0, made.stderr
    listed = subprocess.run([KAIYUAN, "keys", "list"], capture_output=True, text=True, env=env)
    assert "on m: rpm=1" in listed.stdout and "on n: tpm=500" in listed.stdout
    wrong = subprocess.run([KAIYUAN, "keys", "create", "bob", "--model-limit", "m:rpm=x"],
                           capture_output=True, text=True, env=env)  # fmt: skip
    assert wrong.returncode != 0 and "Traceback" not in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1 and "--model-limit" in wrong.stderr


@pytest.mark.slow
def test_a_served_key_is_limited_on_its_model_only(tmp_path: Path) -> None:
    keys = KeyStore(open_database(tmp_path))
    limits = Limits(model_limits={MODEL: {"rpm": 2, "parallel": 1}})
    _, secret = keys.create("team", limits)
    auth = {"authorization": f"Bearer {secret}"}
    with KaiyuanServer(home=tmp_path) as server:
        url = server.url + "/v1/chat/completions"
        body = {"model": MODEL, "messages": HI, "max_tokens": 200, "stream": True,
                "logit_bias": NO_EOS}  # fmt: skip
        with httpx.stream("POST", url, json=body, headers=auth, timeout=60) as running:
            lines = running.iter_lines()
            next(line for line in lines if line.startswith("data: {"))
            busy = httpx.post(url, json={**body, "stream": False}, headers=auth, timeout=60)
            assert busy.status_code == 429, busy.text
            assert busy.headers["retry-after"] == "1"
            assert f"on model '{MODEL}'" in busy.json()["error"]["message"]
            for _ in lines:  # to its end: the slot on the model is given back
                pass
        short = {"model": MODEL, "messages": HI, "max_tokens": 2}
        assert httpx.post(url, json=short, headers=auth, timeout=60).status_code == 200
        over = httpx.post(url, json=short, headers=auth, timeout=60)
        assert (
            over.status_code == 429 and "2 requests per minute" in over.json()["error"]["message"]
        )
        assert over.headers["x-ratelimit-remaining-requests"] == "0"
        other = httpx.post(url, json={**short, "model": "another-model"}, headers=auth)
        assert other.status_code == 404  # not limited: it only does not exist
