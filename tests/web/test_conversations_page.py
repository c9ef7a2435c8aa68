"""Conversations kept on the server, from the browser: a chat survives a reload; search,
rename and delete in the sidebar; export and import round-trip; with keys, each key sees its
own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from kaiyuan.config import Settings
from kaiyuan.engines.pool import EnginePool
from kaiyuan.server.app import create_app
from tests.fakes import Reply, ScriptedEngine
from tests.harness import serve_app
from tests.web.conftest import ready


@pytest.fixture
def scripted(tmp_path: Path) -> Iterator[tuple[str, ScriptedEngine]]:
    engine = ScriptedEngine("fake-model", context_length=4096)
    with serve_app(create_app(Settings(home=tmp_path), EnginePool([engine]))) as url:
        yield url, engine


def send(page: Page, text: str) -> None:
    page.fill("#composer-input", text)
    page.keyboard.press("Enter")


def test_a_conversation_survives_a_reload(page: Page, scripted: tuple[str, ScriptedEngine]) -> None:
    url, engine = scripted
    engine.enqueue(Reply(["Paris", " is the capital."]))
    ready(page, url)
    send(page, "Capital of France?")
    expect(page.locator(".message.assistant .content")).to_have_text("Paris is the capital.")
    expect(page.locator("#conversations li")).to_have_count(1)
    expect(page.locator("#conversations a[aria-current='true']")).to_have_text("Capital of France?")
    assert "#/chat/conv_" in page.url
    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    expect(page.locator(".message.user .content")).to_have_text("Capital of France?")
    expect(page.locator(".message.assistant .content")).to_have_text("Paris is the capital.")
    expect(page.locator(".message.assistant .stats")).to_contain_text("tokens/s")
    # The next turn goes on in the same stored conversation.
    engine.enqueue(Reply(["Berlin."]))
    send(page, "And Germany?")
    expect(page.locator(".message.assistant .content").last).to_have_text("Berlin.")
    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    expect(page.locator(".message")).to_have_count(4)
    expect(page.locator("#conversations li")).to_have_count(1)
    assert not page.errors  # type: ignore[attr-defined]


def test_search_rename_delete(page: Page, scripted: tuple[str, ScriptedEngine]) -> None:
    url, engine = scripted
    engine.enqueue(Reply(["one"]), Reply(["two"]))
    ready(page, url)
    send(page, "about lighthouses")
    expect(page.locator(".message.assistant .content")).to_have_text("one")
    page.click("#new-chat")
    send(page, "about volcanoes")
    expect(page.locator(".message.assistant .content")).to_have_text("two")
    expect(page.locator("#conversations li")).to_have_count(2)
    page.fill("#search", "volcano")
    expect(page.locator("#conversations li")).to_have_count(1)
    page.fill("#search", "")
    expect(page.locator("#conversations li")).to_have_count(2)
    page.once("dialog", lambda dialog: dialog.accept("Volcano notes"))
    page.get_by_role("button", name="Rename: about volcanoes").click()
    expect(page.locator("#conversations")).to_contain_text("Volcano notes")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete: Volcano notes").click()
    expect(page.locator("#conversations li")).to_have_count(1)
    expect(page.locator("#conversations")).not_to_contain_text("Volcano")


def test_export_and_import_round_trip(
    page: Page, scripted: tuple[str, ScriptedEngine], tmp_path: Path
) -> None:
    url, engine = scripted
    engine.enqueue(Reply(["**kept**"]))
    ready(page, url)
    send(page, "keep this")
    expect(page.locator(".message.assistant strong")).to_have_text("kept")
    with page.expect_download() as download:
        page.click("#export")
    saved = tmp_path / "export.json"
    download.value.save_as(saved)
    exported = json.loads(saved.read_text())
    assert [m["content"] for m in exported["messages"]] == ["keep this", "**kept**"]
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete: keep this").click()
    expect(page.locator("#conversations li")).to_have_count(0)
    page.set_input_files("#import-file", str(saved))
    expect(page.locator("#notice")).to_contain_text("Imported")
    expect(page.locator("#conversations li")).to_have_count(1)
    expect(page.locator(".message.assistant strong")).to_have_text("kept")
    # Something else is refused with a readable line, and nothing is added.
    bad = tmp_path / "bad.json"
    bad.write_text('{"messages": "not a list"}')
    page.set_input_files("#import-file", str(bad))
    expect(page.locator("#notice")).to_contain_text("not a conversation exported by kaiyuan")
    expect(page.locator("#conversations li")).to_have_count(1)


def test_with_keys_each_key_sees_its_own(browser: Browser, tmp_path: Path) -> None:
    from kaiyuan.db import open_for
    from kaiyuan.db.keys import KeyStore

    settings = Settings(home=tmp_path)
    store = KeyStore(open_for(settings))
    _, alice = store.create("alice")
    _, bob = store.create("bob")
    engine = ScriptedEngine("fake-model", context_length=4096)
    engine.enqueue(Reply(["hi alice"]))
    with serve_app(create_app(settings, EnginePool([engine]))) as url:
        first = browser.new_context()
        page = first.new_page()
        page.goto(url)
        expect(page.locator("#key-dialog")).to_be_visible()  # the app asks for a key
        page.fill("#key-input", alice)
        page.click("#key-dialog button[value='ok']")
        page.wait_for_selector("body[data-ready='true']")
        send(page, "alice's secret")
        expect(page.locator(".message.assistant .content")).to_have_text("hi alice")
        expect(page.locator("#conversations li")).to_have_count(1)
        first.close()
        second = browser.new_context()
        page = second.new_page()
        page.goto(url)
        page.fill("#key-input", bob)
        page.click("#key-dialog button[value='ok']")
        page.wait_for_selector("body[data-ready='true']")
        expect(page.locator("#conversations li")).to_have_count(0)
        # a wrong key is refused with the server's reason, in the dialog
        page.click("#key-button")
        page.fill("#key-input", "ky-wrong")
        page.click("#key-dialog button[value='ok']")
        expect(page.locator("#key-dialog")).to_be_visible()
        expect(page.locator("#key-dialog p")).to_contain_text("refused")
        second.close()
