"""The chat page in a real browser (Debian's Chromium through Playwright).

A scripted engine answers where the words must be known (Markdown, an XSS payload); the real
bundled model answers where streaming itself is under test (stream, stop, stats)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from kaiyuan.config import Settings
from kaiyuan.engines.pool import EnginePool
from kaiyuan.server.app import create_app
from tests.fakes import Reply, ScriptedEngine
from tests.harness import KaiyuanServer, serve_app
from tests.web.conftest import ready, serious_violations


@pytest.fixture
def scripted(tmp_path: Path) -> Iterator[tuple[str, ScriptedEngine]]:
    engine = ScriptedEngine("fake-model", context_length=4096)
    with serve_app(create_app(Settings(home=tmp_path), EnginePool([engine]))) as url:
        yield url, engine


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`kaiyuan serve` with the bundled SmolLM2."""
    with KaiyuanServer(home=tmp_path_factory.mktemp("web-real")) as server:
        yield server.url


def send(page: Page, text: str) -> None:
    page.fill("#composer-input", text)
    page.keyboard.press("Enter")


def test_markdown_code_and_math_render(page: Page, scripted: tuple[str, ScriptedEngine]) -> None:
    url, engine = scripted
    answer = "Here is **bold**.\n\n```python\nprint('hi')\n```\n\nAnd $x^2$ inline."
    engine.enqueue(Reply(list(answer)))
    ready(page, url)
    send(page, "show me")
    reply = page.locator(".message.assistant .content").last
    expect(reply.locator("strong")).to_have_text("bold")
    expect(reply.locator("pre code.hljs")).to_contain_text("print('hi')")
    expect(reply.locator("pre .copy-code")).to_have_text("Copy code")
    expect(reply.locator(".katex")).to_have_count(1)
    expect(page.locator(".message.assistant .stats")).to_contain_text("tokens/s")
    assert not page.errors  # type: ignore[attr-defined]


PAYLOADS = [
    '<img src=x onerror="window.__xss=1">',
    "<script>window.__xss=2</script>",
    "[click](javascript:window.__xss=3)",
    '<a href="javascript:window.__xss=4">x</a>',
    '<svg onload="window.__xss=5"></svg>',
    '<iframe src="javascript:window.__xss=6"></iframe>',
    "$\\href{javascript:window.__xss=7}{x}$",
]


def test_an_xss_payload_in_an_answer_stays_inert(
    page: Page, scripted: tuple[str, ScriptedEngine]
) -> None:
    url, engine = scripted
    engine.enqueue(Reply(["\n\n".join(PAYLOADS)]))
    ready(page, url)
    send(page, "hello")
    reply = page.locator(".message.assistant .content").last
    expect(reply).to_contain_text("x")
    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss") is None
    html = reply.inner_html()
    assert "onerror" not in html and "<script" not in html and "javascript:" not in html
    assert page.locator(".message.assistant iframe").count() == 0
    # Links a model writes open elsewhere and send no referrer.
    engine.enqueue(Reply(["[site](https://example.org)"]))
    send(page, "a link")
    link = page.locator(".message.assistant .content a").last
    expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")


def test_the_user_text_is_text_not_html(page: Page, scripted: tuple[str, ScriptedEngine]) -> None:
    url, engine = scripted
    engine.enqueue(Reply(["ok"]))
    ready(page, url)
    send(page, '<img src=x onerror="window.__xss=9">')
    expect(page.locator(".message.user .content")).to_have_text(
        '<img src=x onerror="window.__xss=9">'
    )
    assert page.evaluate("window.__xss") is None


def test_chinese_and_english_switch(page: Page, scripted: tuple[str, ScriptedEngine]) -> None:
    url, _ = scripted
    ready(page, url)
    expect(page.locator("#send")).to_have_text("Send")
    page.select_option("#language", "zh-CN")
    expect(page.locator("#send")).to_have_text("发送")
    expect(page.locator("#new-chat")).to_have_text("新对话")
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    page.reload()  # the choice is remembered
    page.wait_for_selector("body[data-ready='true']")
    expect(page.locator("#send")).to_have_text("发送")
    page.select_option("#language", "en")
    expect(page.locator("#send")).to_have_text("Send")


def test_a_chinese_browser_gets_chinese(
    browser: Browser, scripted: tuple[str, ScriptedEngine]
) -> None:
    url, _ = scripted
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()
    ready(page, url)
    expect(page.locator("#send")).to_have_text("发送")
    context.close()


def test_an_image_for_a_text_only_model_is_refused(
    page: Page, scripted: tuple[str, ScriptedEngine], tmp_path: Path
) -> None:
    url, engine = scripted
    image = tmp_path / "dot.png"
    image.write_bytes(
        bytes.fromhex(
            "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
            "1f15c4890000000d49444154789c63f8cfc0f01f0005000201a5f0d5c50000000049454e44ae426082"
        )
    )
    ready(page, url)
    page.set_input_files("#image-input", str(image))
    expect(page.locator("#notice")).to_contain_text("reads text only")
    send(page, "what is this?")
    expect(page.locator("#notice")).to_contain_text("cannot take images")
    assert page.locator(".message").count() == 0  # nothing was sent
    assert not engine.records


def test_light_and_dark(page: Page, scripted: tuple[str, ScriptedEngine]) -> None:
    url, _ = scripted
    ready(page, url)
    before = page.evaluate("document.documentElement.dataset.theme")
    page.click("#theme")
    after = page.evaluate("document.documentElement.dataset.theme")
    assert {before, after} == {"light", "dark"}
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.click("#theme")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") != background


def test_phone_width(browser: Browser, scripted: tuple[str, ScriptedEngine]) -> None:
    url, engine = scripted
    context = browser.new_context(viewport={"width": 390, "height": 800}, is_mobile=True)
    page = context.new_page()
    ready(page, url)
    expect(page.locator("#sidebar")).to_be_hidden()  # folded away until asked for
    engine.enqueue(Reply(["fits"]))
    send(page, "hi")
    expect(page.locator(".message.assistant .content")).to_have_text("fits")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    page.click("#toggle-sidebar")
    expect(page.locator("#sidebar")).to_be_visible()
    context.close()


def test_no_serious_accessibility_violation(
    browser: Browser, scripted: tuple[str, ScriptedEngine]
) -> None:
    url, engine = scripted
    # axe is injected past the page's CSP (the page itself allows no inline script).
    context = browser.new_context(bypass_csp=True)
    page = context.new_page()
    engine.enqueue(Reply(["An answer with `code`."]))
    ready(page, url)
    send(page, "hello")
    expect(page.locator(".message.assistant .stats")).to_be_visible()
    for theme in ("light", "dark"):
        page.evaluate(f"localStorage.setItem('kaiyuan.theme', '{theme}')")
        page.reload()
        page.wait_for_selector("body[data-ready='true']")
        bad = serious_violations(page)
        assert not bad, (theme, bad)
    context.close()


def test_keyboard_only_chat(page: Page, scripted: tuple[str, ScriptedEngine]) -> None:
    url, engine = scripted
    engine.enqueue(Reply(["typed"]), Reply(["again"]))
    ready(page, url)
    expect(page.locator("#composer-input")).to_be_focused()  # type at once

    def tab_to(selector: str) -> None:
        target = page.locator(selector)
        for _ in range(40):
            page.keyboard.press("Tab")
            if target.evaluate("e => e === document.activeElement"):
                return
        raise AssertionError(f"Tab never reached {selector}")

    page.evaluate("document.activeElement.blur()")
    tab_to(".skip")  # the first stop: a link to the message box
    page.keyboard.press("Enter")
    tab_to("#composer-input")
    page.keyboard.type("hello by keyboard")
    page.keyboard.press("Enter")
    expect(page.locator(".message.assistant .content")).to_have_text("typed")
    expect(page.locator("#composer-input")).to_be_focused()
    tab_to(".message.assistant .regenerate")
    page.keyboard.press("Enter")
    expect(page.locator(".message.assistant .content")).to_have_text("again")
    assert page.locator(".message").count() == 2


# --- the real bundled model -----------------------------------------------------------------
def test_a_real_answer_streams_with_its_figures(page: Page, real: str) -> None:
    ready(page, real)
    expect(page.locator("#hint")).to_contain_text("very small model")
    send(page, "What is the capital of France?")
    stats = page.locator(".message.assistant .stats")
    expect(stats).to_contain_text("ms to first token", timeout=60_000)
    assert page.locator(".message.assistant .content").inner_text().strip()
    assert not page.errors  # type: ignore[attr-defined]


def test_stop_ends_a_long_answer(page: Page, real: str) -> None:
    ready(page, real)
    page.click("#settings-button")
    page.fill("#max-tokens", "4000")
    send(page, "Write a very long story about a lighthouse keeper.")
    reply = page.locator(".message.assistant .content").last
    expect(reply).not_to_be_empty(timeout=30_000)
    expect(page.locator("#stop")).to_be_visible()
    page.click("#stop")
    expect(page.locator(".message.assistant").last).to_contain_text("Stopped.")
    expect(page.locator("#send")).to_be_visible()
    length = len(reply.inner_text())
    page.wait_for_timeout(500)
    assert len(page.locator(".message.assistant .content").last.inner_text()) == length


def test_thinking_folds_and_edit_resends(page: Page, tmp_path: Path) -> None:
    from tests.test_tools import QWEN_LIKE

    engine = ScriptedEngine("qwen-like", chat_template=QWEN_LIKE, context_length=4096)
    engine.enqueue(Reply(["<think>", "Paris is in France.", "</think>", "Paris."]))
    with serve_app(create_app(Settings(home=tmp_path), EnginePool([engine]))) as url:
        ready(page, url)
        send(page, "Capital of France?")
        answer = page.locator(".message.assistant").last
        expect(answer.locator(".content")).to_have_text("Paris.")
        thinking = answer.locator("details.thinking")
        expect(thinking.locator(".reasoning")).to_have_text("Paris is in France.")
        expect(thinking).not_to_have_attribute("open", "")  # folded once the answer is in
        thinking.locator("summary").click()
        expect(thinking.locator(".reasoning")).to_be_visible()
        # Edit the question and send it again: the old answer goes, a new one comes.
        engine.enqueue(Reply(["Berlin."]))
        page.locator(".message.user .edit").click()
        page.fill(".message.user .edit-box", "Capital of Germany?")
        page.get_by_role("button", name="Send edited").click()
        expect(page.locator(".message.assistant .content")).to_have_text("Berlin.")
        expect(page.locator(".message.user .content")).to_have_text("Capital of Germany?")
        expect(page.locator(".message")).to_have_count(2)
        assert "Capital of Germany?" in "".join(map(chr, engine.records[-1].prompt))
        assert "Capital of France?" not in "".join(map(chr, engine.records[-1].prompt))
