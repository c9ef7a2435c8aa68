"""The traces page (the audit view) in a real browser: runs with filters and flags, one run as
a timeline of its steps, and its JSON export."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from kaiyuan.agent.traces import Traces
from kaiyuan.config import Settings
from kaiyuan.engines.pool import EnginePool
from kaiyuan.server.app import create_app
from tests.fakes import ScriptedEngine
from tests.harness import serve_app
from tests.test_traces_api import record
from tests.web.conftest import ready


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    with Traces(tmp_path) as traces:
        runs = {
            "plain": record(traces, "qwen", "what is 2+2", [("code", {"src": "2+2"}, None)]),
            "loop": record(
                traces, "qwen", "find the <b>page</b>", [("search", {"q": "x"}, None)] * 3
            ),
        }
    with serve_app(create_app(Settings(home=tmp_path), EnginePool([ScriptedEngine()]))) as url:
        yield url, runs


def test_runs_filters_timeline_and_export(
    page: Page, served: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, runs = served
    ready(page, url)
    page.click("#pages a[data-page='traces']")
    rows = page.locator("#runs tr")
    expect(rows).to_have_count(2)
    expect(page.locator("#runs tr.flagged")).to_have_count(1)
    expect(page.locator("#runs tr.flagged")).to_contain_text("repeated call")
    page.check("#filter-flagged")
    page.click("#run-filters button[type='submit']")
    expect(rows).to_have_count(1)
    page.uncheck("#filter-flagged")
    page.fill("#filter-tool", "code")
    page.click("#run-filters button[type='submit']")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("what is 2+2")
    page.fill("#filter-tool", "")
    page.click("#run-filters button[type='submit']")
    # One run: its steps in order, the flagged ones marked; the task is text, not HTML.
    page.click("text=find the <b>page</b>")
    expect(page.locator("#run-title")).to_have_text("find the <b>page</b>")
    steps = page.locator("#timeline li.step:not(.answer)")
    expect(steps).to_have_count(4)
    expect(page.locator("#timeline li.flagged")).to_have_count(3)
    expect(page.locator("#run-flags")).to_contain_text("steps 2, 3, 4")
    with page.expect_download() as download:
        page.click("#run-export")
    saved = tmp_path / "run.json"
    download.value.save_as(saved)
    exported = json.loads(saved.read_text())
    assert exported["id"] == runs["loop"] and len(exported["trace"]) == 4
    page.click("text=All runs")
    expect(rows).to_have_count(2)
    assert not page.errors  # type: ignore[attr-defined]


def test_no_runs_says_how_to_make_one(page: Page, tmp_path: Path) -> None:
    app = create_app(Settings(home=tmp_path), EnginePool([ScriptedEngine()]))
    with serve_app(app) as url:
        ready(page, url + "/#/traces")
        expect(page.locator("#runs-empty")).to_be_visible()
        expect(page.locator("#runs-empty")).to_contain_text("kaiyuan agent")


def test_a_refused_page_says_why(page: Page, tmp_path: Path) -> None:
    from kaiyuan.db import open_for
    from kaiyuan.db.keys import KeyStore

    settings = Settings(home=tmp_path)
    _, user = KeyStore(open_for(settings)).create("user")
    with serve_app(create_app(settings, EnginePool([ScriptedEngine()]))) as url:
        page.goto(url + "/#/traces")
        page.fill("#key-input", user)
        page.click("#key-dialog button[value='ok']")
        page.wait_for_selector("body[data-ready='true']")
        expect(page.locator("#page-notice")).to_be_visible()
        expect(page.locator("#page-notice")).to_contain_text("not an admin key")
        page.click("#pages a[data-page='chat']")
        expect(page.locator("#page-notice")).to_be_hidden()
