"""The assistant page in a real browser (Debian's Chromium through Playwright): a scripted model
drives the agent through the Responses API, its tools run for real (code in the bubblewrap
sandbox, search against a local SearXNG stand-in, an MCP server over stdio); tool cards go
from running to done with their results as text, answers render as Markdown with citations
linked to their sources, payloads stay inert, documents are uploaded, listed and removed."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from kaiyuan.config import Settings
from kaiyuan.engines.pool import EnginePool
from kaiyuan.server.app import create_app
from tests.fakes import Reply, ScriptedEngine
from tests.harness import LocalWeb, Query, Route, serve_app
from tests.test_mcp import SERVER as MCP_SERVER
from tests.web.conftest import ready, serious_violations

pytestmark = pytest.mark.slow  # the agent runs code in the sandbox and starts MCP servers

ARTICLE_TITLE = "The Lighthouse Keepers of Skerryvore"
XSS = [
    '<img src=x onerror="window.__xss=1">',
    "<script>window.__xss=2</script>",
    "[click](javascript:window.__xss=3)",
    '<svg onload="window.__xss=5"></svg>',
]


def say(text: str) -> Reply:
    return Reply(list(text))


def call(name: str, **arguments: Any) -> Reply:
    """A Hermes-style tool call, as the default tool prompt asks the model to write it."""
    body = json.dumps({"name": name, "arguments": arguments})
    return Reply(list(f"<tool_call>\n{body}\n</tool_call>"))


class Web(LocalWeb):
    """A SearXNG-style ``/search`` JSON API answering with ``results``."""

    def __init__(self) -> None:
        super().__init__()
        self.results: list[dict[str, str]] = []

    def respond(self, path: str, query: Query) -> Route:
        if path == "/search":
            body = json.dumps({"results": self.results}).encode()
            return 200, {"Content-Type": "application/json"}, body
        return super().respond(path, query)


@dataclass
class Served:
    url: str
    engine: ScriptedEngine
    web: Web
    notes: Path

    def prompt(self, index: int = -1) -> str:
        return "".join(map(chr, self.engine.records[index].prompt))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    script = tmp_path / "notes_server.py"
    script.write_text(MCP_SERVER)
    notes = tmp_path / "notes.txt"
    mcp = {"notes": {"command": sys.executable, "args": [str(script), "stdio", str(notes)],
                     "env": {"NOTES_TOKEN": "never-shown"}}}  # fmt: skip
    web = Web()
    engine = ScriptedEngine(context_length=60_000)
    settings = Settings(home=tmp_path / "home", agent_max_tokens=2000, search_provider="searxng",
                        searxng_url=web.url, mcp_servers=mcp)  # fmt: skip
    try:
        with serve_app(create_app(settings, EnginePool([engine]))) as url:
            yield Served(url, engine, web, notes)
    finally:
        web.close()


def open_assistant(page: Page, served: Served, tools: tuple[str, ...] = ()) -> None:
    """The page, with only ``tools`` ticked (the values of the tool toggles)."""
    ready(page, served.url + "/#/assistant")
    expect(page.locator("#assistant-title")).to_have_text("Assistant")
    toggles = page.locator("#assistant-tool-list input")
    expect(toggles.first).to_be_visible()
    for toggle in toggles.all():
        toggle.set_checked(toggle.get_attribute("value") in tools)


def ask(page: Page, text: str) -> None:
    page.fill("#assistant-input", text)
    page.keyboard.press("Enter")


def test_a_tool_card_runs_then_shows_its_result_and_the_answer_streams(
    page: Page, served: Served
) -> None:
    code = "import time\ntime.sleep(1.5)\nprint(6 * 7)"
    served.engine.enqueue(call("code", code=code), say("Six times seven is **42**."))
    open_assistant(page, served, ("code_interpreter",))
    ask(page, "What is 6*7? Use Python.")
    card = page.locator(".tool-card[data-type='code_interpreter_call']")
    expect(card).to_have_attribute("data-state", "running", timeout=10_000)
    expect(card.locator(".badge.state")).to_have_text("running…")
    expect(card.locator(".tool-args pre")).to_have_text(code)
    expect(page.locator("#assistant-stop")).to_be_visible()
    expect(card).to_have_attribute("data-state", "done", timeout=20_000)
    expect(card.locator(".tool-result pre")).to_have_text("42\n")
    turn = page.locator(".turn").last
    expect(turn.locator(".answer strong")).to_have_text("42")
    expect(turn).to_have_attribute("data-status", "completed")
    expect(page.locator("#assistant-send")).to_be_visible()
    expect(turn.locator("a[href^='#/traces/']")).to_have_text("Every step of this run in Traces")
    # Only the tool ticked was offered to the model, as the Responses API's code_interpreter.
    first = served.prompt(0)
    assert '"name": "code"' in first and '"name": "search"' not in first
    # The next task continues the conversation (previous_response_id).
    served.engine.enqueue(say("Still 42."))
    ask(page, "And once more?")
    expect(page.locator(".turn")).to_have_count(2)
    expect(page.locator(".turn").last.locator(".answer")).to_have_text("Still 42.")
    last = served.prompt()
    assert (
        last.index("What is 6*7? Use Python.")
        < last.index("Six times seven")
        < last.index("And once more?")
    )
    # A new task starts afresh.
    page.click("#assistant-new")
    expect(page.locator(".turn")).to_have_count(0)
    served.engine.enqueue(say("Fresh."))
    ask(page, "Hello")
    expect(page.locator(".turn .answer")).to_have_text("Fresh.")
    assert "What is 6*7" not in served.prompt()
    # Each run links to its steps on the traces page.
    page.locator(".turn a[href^='#/traces/']").click()
    expect(page.locator("#run-title")).to_have_text("Hello")
    assert not page.errors  # type: ignore[attr-defined]


def test_web_search_citations_link_to_their_sources(page: Page, served: Served) -> None:
    article, ferry = f"{served.web.url}/article", f"{served.web.url}/ferry"
    served.web.results = [
        {"title": ARTICLE_TITLE, "url": article, "content": "Keepers of the light."},
        {"title": "Tiree ferry timetable", "url": ferry, "content": "Sailings to Tiree."},
    ]
    served.engine.enqueue(
        call("search", query="skerryvore keepers"),
        say("Keepers trimmed the wicks every four hours [1]. Ferries sail to Tiree [2]."),
    )
    open_assistant(page, served, ("web_search",))
    ask(page, "How often were the wicks trimmed?")
    card = page.locator(".tool-card[data-type='web_search_call']")
    expect(card).to_have_attribute("data-state", "done", timeout=20_000)
    expect(card.locator(".tool-args code")).to_have_text("skerryvore keepers")
    sources = page.locator(".turn .citations li a")
    expect(sources).to_have_count(2)
    expect(sources.nth(0)).to_have_text(ARTICLE_TITLE)
    expect(sources.nth(0)).to_have_attribute("href", article)
    expect(sources.nth(1)).to_have_attribute("href", ferry)
    for i in range(2):
        expect(sources.nth(i)).to_have_attribute("rel", "noopener noreferrer")
        expect(sources.nth(i)).to_have_attribute("target", "_blank")
    assert page.locator(".turn .citations li").evaluate_all(
        "(items) => items.map((i) => i.value)"
    ) == [1, 2]
    inline = page.locator(".turn .answer a.cite")
    expect(inline).to_have_count(2)
    expect(inline.nth(0)).to_have_text("[1]")
    expect(inline.nth(0)).to_have_attribute("href", article)
    expect(inline.nth(1)).to_have_attribute("href", ferry)
    assert served.web.requests[0].startswith("/search?")
    assert not page.errors  # type: ignore[attr-defined]


def test_payloads_in_tool_results_and_answers_stay_inert(page: Page, served: Served) -> None:
    payload = XSS[0]
    served.web.results = [
        {"title": payload, "url": "javascript:window.__xss=7", "content": payload}
    ]
    served.engine.enqueue(
        call("code", code=f"print({payload!r})"),
        call("search", query=payload),
        call("notes__add", a=1, b=2),
        say("\n\n".join(XSS) + "\n\nSee [1]."),
    )
    open_assistant(page, served, ("code_interpreter", "web_search", "mcp:notes"))
    ask(page, "<b>bold?</b>")
    expect(page.locator(".turn .task")).to_have_text("<b>bold?</b>")
    expect(page.locator(".turn")).to_have_attribute("data-status", "completed", timeout=30_000)
    code = page.locator(".tool-card[data-type='code_interpreter_call']")
    expect(code.locator(".tool-args pre")).to_have_text(f"print({payload!r})")
    expect(code.locator(".tool-result pre")).to_have_text(payload + "\n")
    search = page.locator(".tool-card[data-type='web_search_call']")
    expect(search.locator(".tool-args code")).to_have_text(payload)
    mcp = page.locator(".tool-card[data-type='mcp_call']")
    expect(mcp.locator(".tool-name")).to_have_text("notes · add")
    expect(mcp.locator(".tool-result pre")).to_have_text("3")
    # The cited source has a javascript: address: its title is text, not a link.
    expect(page.locator(".turn .citations li")).to_have_text(payload + " (your documents)")
    expect(page.locator(".turn .answer")).to_contain_text("click")
    assert page.evaluate("window.__xss") is None
    assert page.locator("#assistant [onerror], #assistant [onload], #assistant script").count() == 0
    assert page.locator("#assistant a[href^='javascript:']").count() == 0
    assert not page.errors  # type: ignore[attr-defined]


def test_a_call_with_side_effects_waits_for_approval(page: Page, served: Served) -> None:
    served.engine.enqueue(call("notes__write_note", text="buy <b>milk</b>"), say("Noted."))
    open_assistant(page, served, ("mcp:notes",))
    ask(page, "Note: buy milk.")
    request = page.locator(".tool-card[data-type='mcp_approval_request']")
    expect(request).to_have_attribute("data-state", "approval", timeout=20_000)
    expect(request.locator(".tool-name")).to_have_text("notes · write_note")
    expect(request.locator(".tool-args pre")).to_contain_text('"text": "buy <b>milk</b>"')
    assert not served.notes.exists()  # nothing ran before the answer
    request.get_by_role("button", name="Approve").click()
    expect(request).to_have_attribute("data-state", "approved")
    expect(request.get_by_role("button")).to_have_count(0)
    resumed = page.locator(".turn").last
    expect(resumed.locator(".task")).to_have_text("Approved: notes · write_note")
    ran = resumed.locator(".tool-card[data-type='mcp_call']")
    expect(ran).to_have_attribute("data-state", "done", timeout=20_000)
    expect(ran.locator(".tool-result pre")).to_have_text("saved")
    expect(resumed.locator(".answer")).to_have_text("Noted.")
    assert served.notes.read_text() == "buy <b>milk</b>\n"
    # Denied: not run, and the model is told.
    served.engine.enqueue(call("notes__write_note", text="sell the car"), say("I left it."))
    ask(page, "Note: sell the car.")
    second = page.locator(".tool-card[data-type='mcp_approval_request']").last
    second.get_by_role("button", name="Deny").click()
    expect(second).to_have_attribute("data-state", "denied")
    expect(page.locator(".turn").last.locator(".answer")).to_have_text("I left it.")
    assert "sell the car" not in served.notes.read_text()
    assert "the user did not approve this call" in served.prompt()
    # A request left unanswered is refused once the conversation goes on without it.
    served.engine.enqueue(call("notes__write_note", text="later"))
    ask(page, "Note: later.")
    third = page.locator(".tool-card[data-type='mcp_approval_request']").last
    expect(third).to_have_attribute("data-state", "approval")
    served.engine.enqueue(say("Fine."))
    ask(page, "Never mind.")
    expect(third).to_have_attribute("data-state", "unanswered")
    expect(page.locator(".turn").last.locator(".answer")).to_have_text("Fine.")
    expect(third.get_by_role("button")).to_have_count(0)
    assert "later" not in served.notes.read_text()
    assert not page.errors  # type: ignore[attr-defined]


def test_stop_aborts_the_run(page: Page, served: Served) -> None:
    served.engine.enqueue(Reply(list("Thinking about it" * 5), hang_after=2))
    open_assistant(page, served)
    ask(page, "Take your time.")
    expect(page.locator("#assistant-stop")).to_be_visible()
    expect(page.locator(".turn .working")).to_be_visible()
    page.click("#assistant-stop")
    expect(page.locator(".turn")).to_have_attribute("data-status", "stopped")
    expect(page.locator(".turn")).to_contain_text("Stopped.")
    expect(page.locator("#assistant-send")).to_be_visible()


def test_documents_upload_list_and_remove(page: Page, served: Served) -> None:
    open_assistant(page, served)
    expect(page.locator("#assistant-docs-empty")).to_be_visible()
    note = "# Ferry timetable\n\nThe ferry to Tiree leaves Oban at 07:15 on weekdays.\n"
    page.set_input_files("#assistant-upload", files=[
        {"name": "ferry notes.md", "mimeType": "text/markdown", "buffer": note.encode()},
    ])  # fmt: skip
    docs = page.locator("#assistant-doc-list .document")
    expect(docs).to_have_count(1, timeout=60_000)
    expect(docs.locator(".doc-title")).to_have_text("Ferry timetable")
    expect(docs).to_contain_text("ferry notes.md")
    expect(page.locator("#assistant-docs-notice")).to_contain_text("Added ferry notes.md")
    expect(page.locator("#assistant-docs-empty")).to_be_hidden()
    # A file kaiyuan cannot read: one readable line, nothing added.
    page.set_input_files("#assistant-upload", files=[
        {"name": "tool.exe", "mimeType": "application/octet-stream", "buffer": b"MZ"},
    ])  # fmt: skip
    expect(page.locator("#assistant-docs-notice")).to_contain_text(
        "Could not add tool.exe: 'tool.exe': kaiyuan reads"
    )
    expect(docs).to_have_count(1)
    page.get_by_role("button", name="Remove: ferry notes.md").click()
    expect(docs).to_have_count(0)
    expect(page.locator("#assistant-docs-notice")).to_have_text("Removed ferry notes.md.")
    expect(page.locator("#assistant-docs-empty")).to_be_visible()
    assert not page.errors  # type: ignore[attr-defined]


def test_chinese_strings_after_switching_language(page: Page, served: Served) -> None:
    served.engine.enqueue(call("code", code="print(1)"), say("好。"))
    open_assistant(page, served, ("code_interpreter",))
    ask(page, "run it")
    card = page.locator(".tool-card")
    expect(card).to_have_attribute("data-state", "done", timeout=20_000)
    expect(card.locator(".badge.state")).to_have_text("done")
    page.select_option("#language", "zh-CN")
    expect(page.locator("#assistant-title")).to_have_text("助手")
    expect(page.locator("#assistant-send")).to_have_text("发送")
    expect(page.locator("#assistant-docs-title")).to_have_text("你的文档")
    expect(page.locator("#assistant-tool-list")).to_contain_text("运行代码")
    expect(page.locator("#assistant-tool-list")).to_contain_text("MCP：notes")
    # what was drawn before the switch is drawn again in Chinese
    expect(card.locator(".badge.state")).to_have_text("完成")
    expect(card.locator(".tool-name")).to_have_text("运行代码")
    expect(page.locator("#assistant-docs-empty")).to_have_text("还没有文档。")
    expect(page.locator("#assistant-input")).to_have_attribute(
        "placeholder", "描述一个任务（Enter 发送，Shift+Enter 换行）"
    )


def test_no_serious_accessibility_violations(browser: Browser, served: Served) -> None:
    served.web.results = [{"title": ARTICLE_TITLE, "url": f"{served.web.url}/a", "content": "."}]
    served.engine.enqueue(
        call("notes__write_note", text="n"),
        call("search", query="keepers"),
        call("code", code="print(1)"),
        say("Trimmed every four hours [1]."),
    )
    # axe is injected past the page's CSP (the page itself allows no inline script).
    context = browser.new_context(bypass_csp=True, locale="en-US")
    page = context.new_page()
    open_assistant(page, served, ("web_search", "code_interpreter", "mcp:notes"))
    ask(page, "go")
    expect(page.locator(".tool-card[data-state='approval']")).to_be_visible(timeout=20_000)
    page.locator(".tool-card .approve").click()
    expect(page.locator(".turn").last.locator(".citations a")).to_have_count(1, timeout=20_000)
    for theme in ("light", "dark"):
        if page.evaluate("document.documentElement.dataset.theme") != theme:
            page.click("#theme")
        bad = serious_violations(page)
        assert not bad, (theme, bad)
    context.close()
