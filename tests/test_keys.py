"""API keys: `kaiyuan keys` and the server's door, through each surface's official client."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anthropic
import httpx
import ollama
import openai
import pytest

from kaiyuan.db import open_database
from kaiyuan.db.keys import ApiKey, KeyStore, Limits
from kaiyuan.errors import InvalidRequest, NotFound
from kaiyuan.server.limits import Limiter, RateLimited
from tests.conftest import MODEL
from tests.harness import KaiyuanServer, free_port, wait_for

KAIYUAN = str(Path(sys.executable).with_name("kaiyuan"))
HI = [{"role": "user", "content": "Hi"}]


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAIYUAN_HOME": str(home)}
    return subprocess.run([KAIYUAN, *args], capture_output=True, text=True, env=env, timeout=60)


# --- the CLI and the store -----------------------------------------------------------------------
def test_cli_shows_a_secret_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    made = cli(tmp_path, "keys", "create", "alice", "--models", "a,b", "--rpm", "60",
               "--budget-tokens", "1000", "--period", "day")  # fmt: skip
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("ky-") and len(secret) > 50
    assert "shown only now" in made.stderr
    listed = cli(tmp_path, "keys", "list")
    assert "alice" in listed.stdout and "models=a,b" in listed.stdout and "rpm=60" in listed.stdout
    assert secret not in listed.stdout + listed.stderr
    as_json = cli(tmp_path, "keys", "list", "--json").stdout
    assert secret not in as_json and "secret" not in as_json
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("kaiyuan.db*"))
    assert secret.encode() not in stored
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in stored
    again = cli(tmp_path, "keys", "create", "alice")
    assert again.returncode == 1 and again.stderr.startswith("error: a key named 'alice'")
    bad = cli(tmp_path, "keys", "create", "alice", "--budget-tokens", "5", "--budget-usd", "1")
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1


def test_store_verifies_rotates_revokes_and_expires(tmp_path: Path, database_url: str) -> None:
    keys = KeyStore(open_database(tmp_path, database_url))
    key, secret = keys.create("svc", Limits(models=("m",)))
    assert keys.verify(secret) == key
    assert keys.verify(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert keys.verify("ky-000000000000-" + "x" * 43) is None and keys.verify("") is None
    rotated, new = keys.rotate("svc")
    assert keys.verify(secret) is None and keys.verify(new) == rotated
    assert rotated.models == ("m",) and rotated.id != key.id
    assert keys.revoke("svc").revoked_at is not None
    assert keys.count_usable() == 0
    soon = datetime.now(UTC) + timedelta(seconds=1)
    short, _ = keys.create("short", Limits(expires_at=soon))
    assert short.usable()
    assert not short.usable(now=soon + timedelta(seconds=1))


def test_store_keeps_every_limit_as_given(tmp_path: Path, database_url: str) -> None:
    keys = KeyStore(open_database(tmp_path, database_url))
    expires = datetime(2031, 1, 2, 23, 30, 15, 123456, tzinfo=UTC)
    limits = Limits(models=("a", "b"), rpm=60, tpm=2**40, parallel=2, budget_tokens=10**12,
                    budget_usd=12.5, period="day", expires_at=expires, admin=True,
                    model_limits={"a": {"rpm": 5, "parallel": 1}})  # fmt: skip
    made, secret = keys.create("full", limits)
    again = keys.get("full")
    assert again == made == keys.verify(secret)
    assert (again.models, again.rpm, again.tpm, again.parallel) == (("a", "b"), 60, 2**40, 2)
    assert (again.budget_tokens, again.budget_usd, again.period) == (10**12, 12.5, "day")
    assert again.expires_at == expires and again.expires_at.utcoffset() is not None
    assert again.admin and again.model_limits == {"a": {"rpm": 5, "parallel": 1}}
    assert again.created_at.utcoffset() is not None
    assert abs(again.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    plain, _ = keys.create("plain")
    assert (plain.models, plain.model_limits, plain.admin, plain.period) == (None, None, False,
                                                                             "month")  # fmt: skip
    assert [k.name for k in keys.list()] == ["full", "plain"]
    with pytest.raises(InvalidRequest, match="exists already"):
        keys.create("plain")
    keys.remove("full")
    assert [k.name for k in keys.list()] == ["plain"] and keys.count_usable() == 1
    with pytest.raises(NotFound):
        keys.get("full")


# --- the server ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keyed(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[KaiyuanServer, dict[str, str]]]:
    home = tmp_path_factory.mktemp("keyed")
    keys = KeyStore(open_database(home))
    secrets = {
        "all": keys.create("all")[1],
        "limited": keys.create("limited", Limits(models=("other-model",)))[1],
        "old": keys.create("old")[1],
    }
    keys.revoke("old")
    with KaiyuanServer(home=home) as server:
        yield server, secrets


@pytest.mark.slow
def test_every_surface_needs_a_key_in_its_own_envelope(
    keyed: tuple[KaiyuanServer, dict[str, str]],
) -> None:
    server, _ = keyed
    assert httpx.get(server.url + "/health").status_code == 200  # probes stay open
    openai_side = httpx.get(server.url + "/v1/models")
    assert openai_side.status_code == 401
    assert openai_side.json()["error"]["code"] == "invalid_api_key"
    assert openai_side.headers["www-authenticate"] == "Bearer"
    anthropic_side = httpx.post(server.url + "/v1/messages", json={})
    assert anthropic_side.status_code == 401
    assert anthropic_side.json()["error"]["type"] == "authentication_error"
    ollama_side = httpx.get(server.url + "/api/tags")
    assert ollama_side.status_code == 401 and set(ollama_side.json()) == {"error"}
    wrong = httpx.get(server.url + "/v1/models", headers={"authorization": "Bearer ky-nope"})
    assert wrong.status_code == 401 and "not valid" in wrong.json()["error"]["message"]


@pytest.mark.slow
def test_official_clients_pass_with_a_key(keyed: tuple[KaiyuanServer, dict[str, str]]) -> None:
    server, secrets = keyed
    key = secrets["all"]
    chat = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    assert chat.chat.completions.create(model=MODEL, messages=HI, max_tokens=2).choices  # type: ignore[arg-type]
    claude = anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0)  # x-api-key
    assert claude.messages.create(model=MODEL, max_tokens=2, messages=HI).content is not None  # type: ignore[arg-type]
    local = ollama.Client(host=server.url, headers={"Authorization": f"Bearer {key}"})
    assert MODEL + ":latest" in [m.model for m in local.list().models]
    assert key not in server.log()
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="nope", max_retries=0).models.list()


@pytest.mark.slow
def test_a_limited_key_sees_and_uses_only_its_models(
    keyed: tuple[KaiyuanServer, dict[str, str]],
) -> None:
    server, secrets = keyed
    headers = {"authorization": f"Bearer {secrets['limited']}"}
    listed = httpx.get(server.url + "/v1/models", headers=headers).json()["data"]
    assert [m["id"] for m in listed] == []  # other-model is not installed: nothing to show
    assert httpx.get(server.url + "/api/tags", headers=headers).json()["models"] == []
    body = {"model": MODEL, "messages": HI, "max_tokens": 2}
    refused = httpx.post(server.url + "/v1/chat/completions", json=body, headers=headers)
    assert refused.status_code == 403 and refused.json()["error"]["param"] == "model"
    claude = httpx.post(server.url + "/v1/messages", json=body, headers=headers)
    assert claude.status_code == 403 and claude.json()["error"]["type"] == "permission_error"
    local = httpx.post(server.url + "/api/chat", json={"model": MODEL, "messages": HI},
                       headers=headers)  # fmt: skip
    assert local.status_code == 403 and "may not use model" in local.json()["error"]
    direct = httpx.get(f"{server.url}/v1/models/{MODEL}", headers=headers)
    assert direct.status_code == 404


@pytest.mark.slow
def test_revoked_and_new_keys_count_within_seconds(
    keyed: tuple[KaiyuanServer, dict[str, str]],
) -> None:
    server, secrets = keyed
    old = httpx.get(server.url + "/v1/models", headers={"x-api-key": secrets["old"]})
    assert old.status_code == 401 and "revoked" in old.json()["error"]["message"]
    made = cli(server.home, "keys", "create", "late")
    late = made.stdout.strip()
    assert wait_for(
        lambda: (
            httpx.get(server.url + "/v1/models", headers={"x-api-key": late}).status_code == 200
        ),
        5,
    )
    cli(server.home, "keys", "revoke", "late")
    assert wait_for(
        lambda: (
            httpx.get(server.url + "/v1/models", headers={"x-api-key": late}).status_code == 401
        ),
        5,
    )


# --- serving a network ---------------------------------------------------------------------------
def test_an_open_network_address_without_keys_is_refused(tmp_path: Path) -> None:
    started = time.monotonic()
    done = cli(tmp_path, "serve", "--host", "0.0.0.0", "--port", str(free_port()))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: refusing to serve 0.0.0.0 without API keys")
    assert "kaiyuan keys create" in lines[-1] and "--no-auth" in lines[-1]
    assert time.monotonic() - started < 30  # refused before loading a model


@pytest.mark.slow
def test_no_auth_serves_the_network_on_purpose(tmp_path: Path) -> None:
    with KaiyuanServer(home=tmp_path, args=["--host", "0.0.0.0", "--no-auth"]) as server:
        assert httpx.get(server.url + "/v1/models").status_code == 200


# --- limits --------------------------------------------------------------------------------------
def _key(**limits: object) -> ApiKey:
    now = datetime.now(UTC)
    fields = {"models": None, "rpm": None, "tpm": None, "parallel": None, "budget_tokens": None,
              "budget_usd": None, "period": "month", "expires_at": None, "admin": False,
              "created_at": now, "revoked_at": None, **limits}  # fmt: skip
    return ApiKey(id="k1", name="k", **fields)  # type: ignore[arg-type]


def test_requests_per_minute_slide_over_sixty_seconds() -> None:
    limiter, key = Limiter(), _key(rpm=3)
    tickets = [limiter.admit(key, now=t) for t in (0.0, 10.0, 20.0)]
    assert tickets[0].headers["x-ratelimit-remaining-requests"] == "2"
    assert tickets[2].headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(RateLimited) as over:
        limiter.admit(key, now=30.0)
    assert over.value.retry_after == 30  # the first request leaves the window at 60 s
    assert over.value.headers["x-ratelimit-reset-requests"] == "30.000s"
    assert limiter.admit(key, now=60.0).headers["x-ratelimit-remaining-requests"] == "0"


def test_parallel_slots_free_when_released() -> None:
    limiter, key = Limiter(), _key(parallel=1)
    first = limiter.admit(key)
    with pytest.raises(RateLimited, match="already has 1 requests running"):
        limiter.admit(key)
    first.release()
    first.release()  # twice is once
    limiter.admit(key).release()
    assert limiter.admit(key) is not None


@pytest.mark.slow
def test_over_a_limit_is_a_429_with_headers_on_each_surface(tmp_path: Path) -> None:
    keys = KeyStore(open_database(tmp_path))
    _, fast = keys.create("fast", Limits(rpm=2))
    _, single = keys.create("single", Limits(parallel=1))
    with KaiyuanServer(home=tmp_path) as server:
        auth = {"authorization": f"Bearer {fast}"}
        ok = httpx.get(server.url + "/v1/models", headers=auth)
        assert ok.status_code == 200 and ok.headers["x-ratelimit-limit-requests"] == "2"
        assert ok.headers["x-ratelimit-remaining-requests"] == "1"
        httpx.get(server.url + "/v1/models", headers=auth)
        over = httpx.get(server.url + "/v1/models", headers=auth)
        assert over.status_code == 429 and int(over.headers["retry-after"]) >= 1
        assert over.json()["error"]["code"] == "rate_limit_exceeded"
        claude = httpx.post(server.url + "/v1/messages", json={}, headers={"x-api-key": fast})
        assert claude.status_code == 429 and claude.json()["error"]["type"] == "rate_limit_error"
        # one stream open: a second request of the same key waits its turn
        body = {"model": MODEL, "messages": HI, "max_tokens": 1000, "stream": True,
                "logit_bias": {"0": -100, "2": -100}}  # fmt: skip
        solo = {"authorization": f"Bearer {single}"}
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body,
                          headers=solo, timeout=60) as stream:  # fmt: skip
            lines = stream.iter_lines()  # kept: a dropped iterator closes the connection
            next(lines)
            second = httpx.get(server.url + "/v1/models", headers=solo)
            assert second.status_code == 429 and "requests running" in second.text
        # the client left: its slot frees once the server sees it gone
        assert wait_for(
            lambda: httpx.get(server.url + "/v1/models", headers=solo).status_code == 200, 10
        )
