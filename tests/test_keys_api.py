"""/v1/keys: an admin key lists, creates, revokes and rotates keys over HTTP; nobody else may
(403 in the surface's envelope), and a secret appears only in the answer that made it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from kaiyuan.db import open_database
from kaiyuan.db.keys import KeyStore, Limits
from tests.conftest import MODEL
from tests.harness import KaiyuanServer

pytestmark = pytest.mark.slow


def test_open_server_refuses_key_routes(tmp_path: Path) -> None:
    with KaiyuanServer(home=tmp_path) as server:
        reply = httpx.post(server.url + "/v1/keys", json={"name": "x"})
        assert reply.status_code == 403
        error = reply.json()["error"]
        assert error["code"] == "admin_required" and "--admin" in error["message"]
        assert KeyStore(open_database(tmp_path)).list() == []  # nothing was made


def test_an_admin_key_manages_keys_and_others_may_not(tmp_path: Path) -> None:
    store = KeyStore(open_database(tmp_path))
    _, admin = store.create("root", Limits(admin=True))
    _, user = store.create("user")
    as_admin = {"authorization": f"Bearer {admin}"}
    with KaiyuanServer(home=tmp_path) as server:
        url = server.url + "/v1/keys"
        refused = httpx.get(url, headers={"authorization": f"Bearer {user}"})
        assert (
            refused.status_code == 403 and "not an admin key" in refused.json()["error"]["message"]
        )
        made = httpx.post(url, headers=as_admin, json={
            "name": "alice", "models": [MODEL], "rpm": 5, "period": "day",
            "model_limits": {MODEL: {"parallel": 1}}})  # fmt: skip
        assert made.status_code == 200, made.text
        alice = made.json()
        assert alice["secret"].startswith("ky-") and alice["model_limits"] == {
            MODEL: {"parallel": 1}
        }
        listed = httpx.get(url, headers=as_admin).json()
        assert [k["name"] for k in listed["data"]] == ["root", "user", "alice"]
        assert all("secret" not in k and "secret_sha256" not in k for k in listed["data"])
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        as_alice = {"authorization": f"Bearer {alice['secret']}"}
        completions = server.url + "/v1/chat/completions"
        assert httpx.post(completions, json=chat, headers=as_alice, timeout=60).status_code == 200
        rotated = httpx.post(f"{url}/alice/rotate", headers=as_admin).json()
        assert rotated["secret"] != alice["secret"]
        old = httpx.post(completions, json=chat, headers=as_alice, timeout=60)
        assert old.status_code == 401  # at once: the server forgot what it had cached
        as_new = {"authorization": f"Bearer {rotated['secret']}"}
        assert httpx.post(completions, json=chat, headers=as_new, timeout=60).status_code == 200
        revoked = httpx.delete(f"{url}/alice", headers=as_admin)
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
        assert httpx.post(completions, json=chat, headers=as_new, timeout=60).status_code == 401
        for bad in ({"name": "has space"}, {"name": "ok", "rpm": 0}, {"name": "ok", "extra": 1},
                    {"name": "ok", "budget_tokens": 5, "budget_usd": 1.0},
                    {"name": "root"}):  # fmt: skip
            reply = httpx.post(url, headers=as_admin, json=bad)
            assert reply.status_code == 400, (bad, reply.text)
            assert reply.json()["error"]["message"]
        missing = httpx.delete(f"{url}/nobody", headers=as_admin)
        assert missing.status_code == 404
