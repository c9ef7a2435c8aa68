"""What a new user meets in the first hour, beyond the CLI (tests/test_cli.py): /docs that
work offline, a suggestion for a mistyped model id from the API, and docs/settings.md listing
every setting as the code defines it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kaiyuan.config import Settings
from kaiyuan.engines.pool import EnginePool
from kaiyuan.errors import closest, did_you_mean
from kaiyuan.server import create_app
from kaiyuan.store.store import Store
from tests.conftest import MODEL
from tests.fakes import ScriptedEngine
from tests.harness import serve_app

REPO = Path(__file__).resolve().parent.parent
TYPO = "smollm2-135m-instruc"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A server over a store holding only the bundled models; none is loaded. One for the
    module: the bundled models' records are inspected (seconds) once per home."""
    settings = Settings(home=tmp_path_factory.mktemp("home"))
    pool = EnginePool(store=Store(settings.home), settings=settings)
    with serve_app(create_app(settings, pool)) as url, httpx.Client(base_url=url) as http:
        yield http


# --- /docs and /redoc without a network ------------------------------------------------------
URL_ATTRIBUTE = re.compile(r"""(?:src|href|spec-url)=["']([^"']+)["']|url: ?'([^']+)'""")


@pytest.mark.parametrize(
    ("page", "assets"),
    [
        ("/docs", {"text/javascript": 1, "text/css": 1}),
        ("/redoc", {"text/javascript": 1}),
    ],
)
def test_docs_pages_load_only_what_kaiyuan_serves(
    client: httpx.Client, page: str, assets: dict[str, int]
) -> None:
    html = client.get(page)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "http://" not in html.text and "https://" not in html.text  # no CDN, no fonts
    urls = [a or b for a, b in URL_ATTRIBUTE.findall(html.text)]
    assert "/openapi.json" in urls
    kinds: dict[str, int] = {}
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        response = client.get(url)
        assert response.status_code == 200, url
        kind = response.headers["content-type"].split(";")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
        if kind in ("text/javascript", "text/css"):
            assert len(response.content) > 10_000, url  # the real bundle, not a stub
    for kind, count in assets.items():
        assert kinds.get(kind, 0) >= count, kinds


def test_swagger_ui_reads_openapi_3_1(client: httpx.Client) -> None:
    """FastAPI writes OpenAPI 3.1, which Swagger UI renders only from version 5 on."""
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
    html = client.get("/docs").text
    (script,) = [a for a, _ in URL_ATTRIBUTE.findall(html) if a.endswith(".js")]
    assert "isOAS31" in client.get(script).text  # Swagger UI 5's 3.1 support (4.x lacks it)


# --- did you mean, from the API --------------------------------------------------------------
def test_unknown_model_on_the_api_suggests_the_served_one(client: httpx.Client) -> None:
    chat = client.post(
        "/v1/chat/completions",
        json={"model": TYPO, "messages": [{"role": "user", "content": "hi"}]},
    )
    retrieve = client.get(f"/v1/models/{TYPO}")
    for response in (chat, retrieve):
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["code"] == "model_not_found" and error["param"] == "model"
        assert error["type"] == "invalid_request_error"
        assert error["message"].endswith(f"did you mean '{MODEL}'?"), error
    assert retrieve.json()["error"]["message"] == (
        f"model '{TYPO}' does not exist; did you mean '{MODEL}'?"
    )
    unrelated = client.get("/v1/models/gpt-4o").json()["error"]["message"]
    assert unrelated == "model 'gpt-4o' does not exist"


def test_unknown_model_without_a_store_suggests_a_served_one() -> None:
    pool = EnginePool([ScriptedEngine("qwen2.5-7b-instruct")])
    with serve_app(create_app(Settings(), pool)) as url:
        body = {"model": "qwen2.5-7b-instrcut", "messages": [{"role": "user", "content": "x"}]}
        response = httpx.post(f"{url}/v1/chat/completions", json=body)
    assert response.status_code == 404
    assert response.json()["error"]["message"] == (
        "model 'qwen2.5-7b-instrcut' does not exist or is not served here; "
        "did you mean 'qwen2.5-7b-instruct'?"
    )


def test_closest_matches_typos_and_case_not_unrelated_names() -> None:
    ids = ["smollm2-135m-instruct", "all-minilm-l6-v2", "qwen3-8b"]
    assert closest(TYPO, ids) == "smollm2-135m-instruct"
    assert closest("SmolLM2-135M-Instruct", ids) == "smollm2-135m-instruct"
    assert closest("qwen3-8B", ids) == "qwen3-8b"
    assert closest("gpt-4o", ids) is None
    assert closest("x" * 10_000, ids) is None
    assert did_you_mean("all-minilm", ids) == "; did you mean 'all-minilm-l6-v2'?"
    assert did_you_mean("llama", []) == ""


# --- docs/settings.md --------------------------------------------------------------------------
SCRIPT = REPO / "scripts" / "settings_table.py"


def settings_table(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60
    )


def test_settings_doc_is_current() -> None:
    result = settings_table("--check")
    assert result.returncode == 0, result.stderr  # says how to regenerate it


def test_settings_doc_lists_every_setting_with_variable_and_default() -> None:
    text = (REPO / "docs" / "settings.md").read_text(encoding="utf-8")
    for name in Settings.model_fields:
        assert re.search(rf"^\| `{name}` \| `KAIYUAN_{name.upper()}`", text, re.M), name
    assert "| `port` | `KAIYUAN_PORT` | int, ≥ 0, ≤ 65535 | `8000` |" in text
    assert "| `home` | `KAIYUAN_HOME` | path | `~/.kaiyuan` |" in text
    assert "config.toml" in text and "KAIYUAN_CONFIG" in text


def test_settings_check_fails_on_a_stale_doc_and_says_how_to_fix_it(tmp_path: Path) -> None:
    stale = tmp_path / "settings.md"
    shutil.copy(REPO / "docs" / "settings.md", stale)
    assert settings_table("--doc", str(stale)).returncode == 0
    current = stale.read_text(encoding="utf-8")
    stale.write_text(re.sub(r"^\| `port` .*\n", "", current, flags=re.M), encoding="utf-8")
    result = settings_table("--check", "--doc", str(stale))
    assert result.returncode == 1
    assert "out of date" in result.stderr
    assert ".venv/bin/python scripts/settings_table.py" in result.stderr
    assert settings_table("--doc", str(stale)).returncode == 0  # regenerating fixes it
    assert stale.read_text(encoding="utf-8") == current
    assert settings_table("--check", "--doc", str(stale)).returncode == 0
