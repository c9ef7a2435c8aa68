"""The web app's page and assets as served: CSP, compression, ETags, caching, --no-ui."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kaiyuan.config import Settings
from kaiyuan.engines.pool import EnginePool
from kaiyuan.server.app import create_app
from kaiyuan.web.app import STATIC
from tests.fakes import ScriptedEngine
from tests.harness import serve_app


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    app = create_app(Settings(home=tmp_path), EnginePool([ScriptedEngine()]))
    with serve_app(app) as base:
        yield base


def test_page_has_a_strict_policy_and_no_inline_script(url: str) -> None:
    page = httpx.get(url + "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-cache"
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page.text, re.S)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts)
    # Nothing from another origin: every URL in the page is on this server.
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text)
    assert httpx.head(url + "/").status_code == 200


def test_assets_are_compressed_cached_and_revalidated(url: str) -> None:
    build = re.search(r"/app/([0-9a-f]{12})/app\.js", httpx.get(url + "/").text)
    assert build is not None
    asset = f"{url}/app/{build.group(1)}/vendor/marked.esm.js"
    packed = httpx.get(asset, headers={"accept-encoding": "gzip"})
    assert packed.status_code == 200
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.headers["content-type"].startswith("text/javascript")
    assert packed.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert int(packed.headers["content-length"]) < len(packed.content)  # decoded by httpx
    assert packed.content == (STATIC / "vendor" / "marked.esm.js").read_bytes()
    again = httpx.get(asset, headers={"if-none-match": packed.headers["etag"]})
    assert again.status_code == 304 and not again.content
    # A page from an older build still gets its files, without being cached for a year.
    old = httpx.get(f"{url}/app/000000000000/app.js")
    assert old.status_code == 200 and old.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize(
    "name", ["../config.py", "..%2F..%2Fapp.py", "vendor/../../app.py", "nothing.js", ""]
)
def test_only_the_apps_own_files_are_served(url: str, name: str) -> None:
    response = httpx.get(f"{url}/app/000000000000/{name}", follow_redirects=True)
    assert response.status_code == 404
    assert b"import" not in response.content


def test_the_app_needs_no_key_but_the_api_still_does(tmp_path: Path) -> None:
    from kaiyuan.db import open_for
    from kaiyuan.db.keys import KeyStore

    settings = Settings(home=tmp_path)
    KeyStore(open_for(settings)).create("alice")
    app = create_app(settings, EnginePool([ScriptedEngine()]))
    with serve_app(app) as url:
        assert httpx.get(url + "/").status_code == 200
        assert httpx.get(url + "/v1/models").status_code == 401


def test_no_ui_leaves_only_the_api(tmp_path: Path) -> None:
    app = create_app(Settings(home=tmp_path, no_ui=True), EnginePool([ScriptedEngine()]))
    with serve_app(app) as url:
        assert httpx.get(url + "/").status_code == 404
        assert httpx.get(url + "/app/000000000000/app.js").status_code == 404
        assert httpx.get(url + "/v1/models").status_code == 200


def test_every_string_is_in_both_languages() -> None:
    """Each bundle (the frame's LANG.json, each page's PAGE.LANG.json) has the same keys in
    English and Chinese, and every key the code or the page uses exists."""
    import json

    folder = STATIC / "i18n"
    english = sorted(folder.glob("*en.json"))
    assert len(english) >= 5
    known: set[str] = set()
    for en_file in english:
        zh_file = en_file.with_name(en_file.name.replace("en.json", "zh-CN.json"))
        en, zh = json.loads(en_file.read_text()), json.loads(zh_file.read_text())
        assert en.keys() == zh.keys(), (en_file.name, en.keys() ^ zh.keys())
        assert all(isinstance(v, str) and v for v in (*en.values(), *zh.values()))
        known |= en.keys()
    used = {f"badge_{cap}" for cap in ("vision", "tools", "reasoning")}
    for source in [*STATIC.glob("*.js"), STATIC / "index.html"]:
        text = source.read_text()
        used |= set(re.findall(r"\bt\(\s*\"([a-z0-9_]+)\"", text))
        used |= set(re.findall(r"data-i18n(?:-placeholder|-label)?=\"([a-z0-9_]+)\"", text))
    assert used <= known, used - known
