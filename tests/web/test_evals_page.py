"""The evals page in a real browser against `kaiyuan serve` with the bundled model: a past run
listed with each score's interval and bar, its items one click away (model text stays text),
its HTML report; a two-item eval started from the page, its progress shown live until it
finishes; the page in Chinese; with keys, an admin key's (the report fetched with it)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from kaiyuan.config import Settings
from kaiyuan.engines.pool import EnginePool
from kaiyuan.server.app import create_app
from kaiyuan.web.app import STATIC
from tests.fakes import ScriptedEngine
from tests.harness import KaiyuanServer, serve_app
from tests.test_evals_api import past_run
from tests.web.conftest import ready

pytestmark = pytest.mark.slow
INTERVAL = "25% ± 16 (95% CI 7–59%, n=8)"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("evals-page")
    past_run(home, "nightly")
    with KaiyuanServer(home=home) as running:
        yield running.url


def test_a_past_run_its_intervals_items_and_report(page: Page, server: str) -> None:
    ready(page, server)
    page.click("#pages a[data-page='evals']")
    row = page.locator("#evals-runs tr", has_text="m · bilingual")
    expect(row).to_contain_text(INTERVAL)
    expect(row).to_contain_text("Completed")
    # the bar: the score filled to 25% of the 0–100% track, the band over its 95% interval
    assert "width: 25%" in (row.locator(".ev-fill").get_attribute("style") or "")
    band = row.locator(".ev-ci").get_attribute("style") or ""
    left, width = (float(x) for x in re.findall(r"(?:left|width): ([\d.]+)%", band))
    assert left == pytest.approx(7.15, abs=0.01) and left + width == pytest.approx(59.07, abs=0.01)
    row.locator("a").click()
    expect(page).to_have_url(re.compile(r"#/evals/nightly$"))
    expect(page.locator("#evals-scores")).to_contain_text(INTERVAL)
    expect(page.locator("#evals-items-count")).to_have_text("8 of 8")
    items = page.locator("#evals-items > li")
    expect(items).to_have_count(8)
    expect(page.locator("#evals-items li.ev-right")).to_have_count(2)
    # one click: the prompt, the answer (as text, not HTML) and the verdict
    wrong = items.filter(has_text="zh-007")
    wrong.locator("summary").click()
    expect(wrong.locator(".ev-prompt")).to_be_visible()
    assert wrong.locator(".ev-prompt").inner_text().strip()
    expect(wrong.locator(".ev-answer")).to_have_text("I <b>do not</b> know")
    expect(wrong.locator(".ev-answer b")).to_have_count(0)
    expect(wrong.locator(".ev-verdict-text")).to_contain_text("Wrong")
    failed = items.filter(has_text="zh-008")
    failed.locator("summary").click()
    expect(failed.locator(".error")).to_have_text("503: overloaded")
    expect(failed.locator("summary")).to_contain_text("Failed")
    with page.expect_popup() as popup:
        page.click("#evals-report")
    report = popup.value
    report.wait_for_load_state()
    expect(report.locator("h1")).to_have_text("kaiyuan eval")
    expect(report.locator("body")).to_contain_text("25.0% ± 16.4 (95% CI 7.1–59.1%, n=8)")
    assert not page.errors  # type: ignore[attr-defined]


def test_start_a_two_item_eval_and_watch_it_finish(page: Page, server: str) -> None:
    ready(page, server + "/#/evals")
    expect(page.locator("#evals-suites input[value='bilingual']")).to_be_checked()
    expect(page.locator("#evals-suites input[value='math']")).to_be_disabled()  # not fetched
    expect(page.locator("#evals-models input").first).to_be_checked()
    page.fill("#evals-limit", "2")
    page.fill("#evals-max-tokens", "24")
    page.evaluate("""() => {
        window.progressSeen = [];
        const text = document.getElementById("evals-progress-text");
        const shown = () => !document.getElementById("evals-progress").hidden;
        new MutationObserver(() => {
            if (shown()) window.progressSeen.push(text.textContent);
        }).observe(text, { childList: true, characterData: true, subtree: true });
    }""")
    page.click("#evals-start")
    expect(page).to_have_url(re.compile(r"#/evals/\d{8}-\d{6}-eval-[0-9a-f]{6}$"))
    status = page.locator("#evals-status")
    expect(status).to_have_text("Completed", timeout=120_000)
    expect(page.locator("#evals-progress")).to_be_hidden()
    seen = page.evaluate("window.progressSeen")
    assert seen and seen[0].startswith("0 of 2"), seen  # shown at once, then polled
    expect(page.locator("#evals-scores")).to_contain_text("n=2)")
    expect(page.locator("#evals-items-count")).to_have_text("2 of 2")
    first = page.locator("#evals-items > li").first
    first.locator("summary").click()
    assert first.locator(".ev-prompt").inner_text().strip()
    expect(first.locator(".ev-answer")).to_be_visible()
    expect(first.locator(".ev-verdict-text")).to_contain_text(re.compile("Right|Wrong"))
    # Chinese: the frame and the page's own strings, the scores' intervals too
    page.select_option("#language", "zh-CN")
    expect(page.locator("#evals-title")).to_have_text("评测")
    expect(status).to_have_text("已完成")
    expect(page.locator("#evals-scores")).to_contain_text("95% 置信区间")
    expect(page.locator("#evals-items-count")).to_have_text("2 / 2")
    expect(page.locator("#evals-items summary").first).to_contain_text(re.compile("正确|错误"))
    page.click("text=全部运行记录")
    expect(page.locator("#evals-runs")).to_contain_text("25% ± 16（95% 置信区间 7–59%，n=8）")
    expect(page.locator("#evals-start")).to_have_text("开始")
    assert not page.errors  # type: ignore[attr-defined]


def test_every_string_of_the_page_is_in_both_languages() -> None:
    """evals.js builds its markup, so its keys are checked here (test_serving.py reads only
    t("...") and the page's data-i18n), the ones it composes too."""
    source = (STATIC / "evals.js").read_text()
    used = set(re.findall(r'"(evals(?:_[a-z0-9_]+)?)"', source))
    used |= {f"evals_status_{s}" for s in ("running", "completed", "failed", "cancelled",
                                            "interrupted")}  # fmt: skip
    used |= {f"evals_kind_{k}" for k in ("eval", "bench")}
    settings = re.search(r"const SETTINGS = \[(.*?)\]", source)
    assert settings
    used |= {f"evals_setting_{k}" for k in re.findall(r'"(\w+)"', settings.group(1))}
    for language in ("en", "zh-CN"):
        strings = json.loads((STATIC / "i18n" / f"evals.{language}.json").read_text())
        assert used <= strings.keys(), (language, used - strings.keys())


def test_with_keys_an_admin_runs_evals_and_reads_reports(browser: Browser, tmp_path: Path) -> None:
    """A scripted model (this is about keys): the run's requests and the report carry the
    admin's key (a link cannot, so the report is fetched with it); another key is told why."""
    from kaiyuan.db import open_for
    from kaiyuan.db.keys import KeyStore, Limits

    settings = Settings(home=tmp_path)
    store = KeyStore(open_for(settings))
    _, user = store.create("user")
    _, admin = store.create("boss", Limits(admin=True))
    engine = ScriptedEngine(context_length=4096)
    with serve_app(create_app(settings, EnginePool([engine]))) as url:
        context = browser.new_context(locale="en-US")
        page = context.new_page()
        errors: list[Any] = []
        page.on("pageerror", lambda error: errors.append(error))
        page.goto(url + "/#/evals")
        page.fill("#key-input", user)
        page.click("#key-dialog button[value='ok']")
        expect(page.locator("#evals-notice")).to_contain_text("not an admin key")
        page.click("#key-button")
        page.fill("#key-input", admin)
        page.click("#key-dialog button[value='ok']")
        expect(page.locator("#evals-suites input[value='bilingual']")).to_be_checked()
        page.fill("#evals-limit", "1")
        page.fill("#evals-max-tokens", "8")
        page.click("#evals-start")
        expect(page.locator("#evals-status")).to_have_text("Completed", timeout=60_000)
        expect(page.locator("#evals-scores")).to_contain_text("n=1)")
        expect(page.locator("#evals-items-count")).to_have_text("1 of 1")
        with page.expect_popup() as popup:
            page.click("#evals-report")
        report = popup.value
        report.wait_for_load_state()
        assert report.url.startswith("blob:")
        expect(report.locator("h1")).to_have_text("kaiyuan eval")
        context.close()
        assert not errors
