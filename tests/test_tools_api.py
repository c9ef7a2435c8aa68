"""/v1/kaiyuan/tools: the tools a Responses request can enable here, with the MCP servers by
label only: their commands, arguments, env, headers, credentials and URL paths never leave."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from kaiyuan.config import Settings
from kaiyuan.engines.pool import EnginePool
from kaiyuan.server.app import create_app
from tests.fakes import ScriptedEngine
from tests.harness import serve_app

SECRETS = ["hunter2-env", "Bearer tok-header", "s3cret-pass", "path-token-77", "q-token-88",
           "--api-key=arg-secret", "/opt/secret/bin/mcp-notes"]  # fmt: skip
SERVERS: dict[str, Any] = {
    "notes": {
        "command": "/opt/secret/bin/mcp-notes",
        "args": ["--api-key=arg-secret"],
        "env": {"NOTES_TOKEN": "hunter2-env"},
    },
    "tickets": {
        "url": "https://bot:s3cret-pass@tickets.example.org:8443/path-token-77/mcp?key=q-token-88",
        "headers": {"Authorization": "Bearer tok-header"},
    },
    "v6": {"url": "http://[::1]/mcp"},
}


def listing(settings: Settings) -> httpx.Response:
    with serve_app(create_app(settings, EnginePool([ScriptedEngine()]))) as url:
        return httpx.get(f"{url}/v1/kaiyuan/tools", timeout=30)


def test_mcp_servers_by_label_without_secrets(tmp_path: Path) -> None:
    answer = listing(Settings(home=tmp_path, mcp_servers=SERVERS))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["object"] == "list"
    assert body["mcp"] == [
        {"label": "notes", "transport": "stdio", "origin": None},
        {"label": "tickets", "transport": "http", "origin": "https://tickets.example.org:8443"},
        {"label": "v6", "transport": "http", "origin": "http://[::1]"},
    ]
    for secret in [*SECRETS, "NOTES_TOKEN", "Authorization"]:
        assert secret not in answer.text


def test_builtin_tools_as_this_server_can_run_them(tmp_path: Path) -> None:
    body = listing(Settings(home=tmp_path)).json()
    sandboxed = shutil.which("bwrap") is not None
    assert body["mcp"] == []
    expected = ["web_search", "code_interpreter", "file_search"]
    if not sandboxed:
        expected.remove("code_interpreter")
    assert body["builtin"] == expected
    assert [u["type"] for u in body["unavailable"]] == ([] if sandboxed else ["code_interpreter"])


def test_searxng_without_its_url_is_unavailable_and_says_why(tmp_path: Path) -> None:
    body = listing(Settings(home=tmp_path, search_provider="searxng")).json()
    assert "web_search" not in body["builtin"]
    [why] = [u for u in body["unavailable"] if u["type"] == "web_search"]
    assert "searxng_url" in why["reason"]
    searx = Settings(home=tmp_path, search_provider="searxng", searxng_url="http://127.0.0.1:9")
    assert "web_search" in listing(searx).json()["builtin"]


@pytest.mark.parametrize("secret", ["", "wrong"])
def test_with_keys_a_key_is_needed(tmp_path: Path, secret: str) -> None:
    from kaiyuan.db import open_for
    from kaiyuan.db.keys import KeyStore

    settings = Settings(home=tmp_path, mcp_servers=SERVERS)
    _, secret_of_alice = KeyStore(open_for(settings)).create("alice")
    with serve_app(create_app(settings, EnginePool([ScriptedEngine()]))) as url:
        wrong = {"authorization": f"Bearer {secret}"} if secret else {}
        refused = httpx.get(f"{url}/v1/kaiyuan/tools", headers=wrong)
        assert refused.status_code == 401
        assert "tickets" not in refused.text
        alice = {"authorization": f"Bearer {secret_of_alice}"}
        plain = httpx.get(f"{url}/v1/kaiyuan/tools", headers=alice)
        assert plain.status_code == 200  # any key may see what it can enable
        assert [m["label"] for m in plain.json()["mcp"]] == ["notes", "tickets", "v6"]
