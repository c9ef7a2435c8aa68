"""The usage page in a real browser: tokens per day by model, app or key (bars and a table of
the same numbers); for an admin key the keys too (create with the secret shown once, rotate,
revoke), for another key its own usage only; an open server says what keys would add."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from kaiyuan.config import Settings
from kaiyuan.db import open_for
from kaiyuan.db.keys import KeyStore, Limits
from kaiyuan.engines.pool import EnginePool
from kaiyuan.server.app import create_app
from tests.fakes import Reply, ScriptedEngine
from tests.harness import serve_app
from tests.web.conftest import ready, serious_violations


@dataclass
class Team:
    url: str
    boss: str  # an admin key
    alice: str
    bob: str
    tokens: dict[tuple[str, str], int]  # (model, app) -> tokens spent
    day: str  # the UTC day they were spent on


def chat(url: str, secret: str | None, model: str, app: str, pieces: list[str]) -> int:
    """One chat request as `app` would send it; the tokens it used."""
    headers = {"x-title": app} | ({"authorization": f"Bearer {secret}"} if secret else {})
    body = {"model": model, "messages": [{"role": "user", "content": "".join(pieces)}]}
    reply = httpx.post(url + "/v1/chat/completions", json=body, headers=headers)
    assert reply.status_code == 200, reply.text
    return int(reply.json()["usage"]["total_tokens"])


@pytest.fixture
def team(tmp_path: Path) -> Iterator[Team]:
    settings = Settings(home=tmp_path)
    keys = KeyStore(open_for(settings))
    _, boss = keys.create("boss", Limits(admin=True))
    _, alice = keys.create("alice")
    _, bob = keys.create("bob")
    small = ScriptedEngine("small-model", context_length=4096)
    large = ScriptedEngine("large-model", context_length=4096)
    small.enqueue(Reply(list("abc")), Reply(list("de")))
    large.enqueue(Reply(list("a long answer")))
    with serve_app(create_app(settings, EnginePool([small, large]))) as url:
        tokens: dict[tuple[str, str], int] = {}
        # Every request's usage row is committed before its answer ends: no waiting after.
        asked = [
            (alice, "small-model", "notes", ["hi"]),
            (alice, "small-model", "notes", ["again"]),
            (bob, "large-model", "mail", ["write to Li"]),
        ]
        for secret, model, app, pieces in asked:
            spent = chat(url, secret, model, app, pieces)
            tokens[(model, app)] = tokens.get((model, app), 0) + spent
        yield Team(url, boss, alice, bob, tokens, datetime.now(UTC).date().isoformat())


def sign_in(page: Page, url: str, secret: str) -> None:
    page.goto(url)
    expect(page.locator("#key-dialog")).to_be_visible()
    page.fill("#key-input", secret)
    page.click("#key-dialog button[value='ok']")
    page.wait_for_selector("body[data-ready='true']", timeout=15_000)
    page.click("#pages a[data-page='usage']")


def row(page: Page, day: str, group: str) -> list[str]:
    """The table's row for ``day`` and ``group``: its cells' text."""
    found = page.locator("#usage-rows tr").filter(has=page.locator(f"td:text-is('{day}')"))
    cells = found.filter(has=page.locator(f"th:text-is('{group}')")).locator("th, td")
    expect(cells).to_have_count(8)
    return [str(c) for c in cells.all_inner_texts()]


def test_an_admin_sees_usage_by_model_app_and_key(page: Page, team: Team) -> None:
    sign_in(page, team.url, team.boss)
    expect(page.locator("#usage-scope")).to_contain_text("Everyone's usage")
    expect(page.locator("#usage-open")).to_be_hidden()
    legend = page.locator("#usage-legend li")
    expect(legend).to_have_count(2)
    small = team.tokens[("small-model", "notes")]
    large = team.tokens[("large-model", "mail")]
    biggest = "large-model" if large > small else "small-model"
    expect(legend.first).to_contain_text(biggest)  # the most tokens first
    expect(page.locator("#usage-legend")).to_contain_text(f"small-model {small:,} tokens")
    # one bar piece per model today, each saying its numbers on hover
    bars = page.locator("#usage-chart rect")
    expect(bars).to_have_count(2)
    titles = bars.locator("title").all_text_contents()
    assert any(f"small-model: {small:,} tokens (" in title for title in titles), titles
    requests, prompt, completion, total = row(page, team.day, "small-model")[2:6]
    assert (requests, total) == ("2", f"{small:,}")
    assert int(prompt.replace(",", "")) + int(completion.replace(",", "")) == small
    # by app, then by key
    page.get_by_label("App").check()
    expect(page.locator("#usage-legend")).to_contain_text(f"notes {small:,} tokens")
    expect(page.locator("#usage-legend")).to_contain_text(f"mail {large:,} tokens")
    expect(page.locator("#usage-col-group")).to_have_text("App")
    assert row(page, team.day, "mail")[5] == f"{large:,}"
    page.get_by_label("Key", exact=True).check()
    expect(page.locator("#usage-legend")).to_contain_text(f"alice {small:,} tokens")
    expect(page.locator("#usage-legend")).to_contain_text(f"bob {large:,} tokens")
    # shares of each day: the axis tops at 100%, the two pieces fill the day
    page.check("#usage-share")
    expect(page.locator("#usage-caption")).to_contain_text("Share of each day's tokens by key")
    expect(page.locator("#usage-chart text").filter(has_text="100%")).to_have_count(1)
    expect(page.locator("#usage-table-caption")).to_contain_text("by key, last 30 days")
    # and in Chinese
    page.select_option("#language", "zh-CN")
    expect(page.locator("#usage-title")).to_have_text("用量")
    expect(page.locator("#usage-caption")).to_contain_text("每天令牌的占比（按密钥）")
    expect(page.locator("#usage-scope")).to_contain_text("所有人的用量")
    expect(page.locator("#keys-title")).to_have_text("API 密钥")
    expect(page.locator("#keys-rows")).to_contain_text("有效，管理员")
    expect(page.get_by_role("button", name="吊销: alice")).to_be_visible()
    assert not page.errors  # type: ignore[attr-defined]


def test_an_admin_creates_rotates_and_revokes_keys(page: Page, team: Team) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(page, team.url, team.boss)
    names = page.locator("#keys-rows th")
    expect(names).to_have_text(["boss", "alice", "bob"])
    expect(page.locator("#key-secret")).to_be_hidden()
    page.fill("#key-name", "carol")
    page.locator("#key-models").get_by_label("small-model").check()
    page.fill("#key-rpm", "5")
    page.fill("#key-budget", "1000")
    page.select_option("#key-period", "day")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#key-secret")).to_be_visible()
    expect(page.locator("#key-secret")).to_contain_text("shown only this once")
    expect(page.locator("#key-secret-label")).to_have_text("Secret of the key “carol”")
    secret = page.input_value("#key-secret-value")
    assert secret.startswith("ky-")
    page.click("#key-secret-copy")
    expect(page.locator("#key-secret-status")).to_have_text("Copied to the clipboard.")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    expect(names).to_have_text(["boss", "alice", "bob", "carol"])
    carol = page.locator("#keys-rows tr").filter(has=page.locator("th:text-is('carol')"))
    expect(carol).to_contain_text("small-model")
    expect(carol).to_contain_text("5 requests/min")
    expect(carol).to_contain_text("1,000 tokens per day")
    expect(page.locator("#key-name")).to_have_value("")  # the form is ready for the next one
    # the shown secret works, limited to its model
    as_carol = {"authorization": f"Bearer {secret}"}
    listed = httpx.get(team.url + "/v1/models", headers=as_carol)
    assert listed.status_code == 200
    assert [m["id"] for m in listed.json()["data"]] == ["small-model"]
    page.click("#key-secret-done")
    expect(page.locator("#key-secret")).to_be_hidden()
    assert page.input_value("#key-secret-value") == ""  # gone from the page
    # a refusal is one readable line: the name is taken
    page.fill("#key-name", "carol")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#keys-notice")).to_contain_text("carol")
    expect(page.locator("#key-secret")).to_be_hidden()
    # rotate: a new secret, shown once; the old one is refused at once
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Rotate: carol").click()
    expect(page.locator("#key-secret-label")).to_have_text("Secret of the key “carol”")
    expect(page.locator("#key-secret-value")).not_to_have_value(secret)
    rotated = page.input_value("#key-secret-value")
    assert httpx.get(team.url + "/v1/models", headers=as_carol).status_code == 401
    as_carol = {"authorization": f"Bearer {rotated}"}
    assert httpx.get(team.url + "/v1/models", headers=as_carol).status_code == 200
    # revoke: refused from then on, and the row says so
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke: carol").click()
    expect(carol).to_contain_text("revoked")
    expect(carol.locator("button")).to_have_count(0)
    assert httpx.get(team.url + "/v1/models", headers=as_carol).status_code == 401
    # an admin key with a dollar budget and an end date
    page.fill("#key-name", "dave")
    page.fill("#key-budget", "2.5")
    page.select_option("#key-budget-unit", "usd")
    page.fill("#key-expires", "2099-12-31")
    page.check("#key-admin")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#key-secret-label")).to_have_text("Secret of the key “dave”")
    as_dave = {"authorization": f"Bearer {page.input_value('#key-secret-value')}"}
    assert httpx.get(team.url + "/v1/keys", headers=as_dave).status_code == 200  # an admin
    dave = page.locator("#keys-rows tr").filter(has=page.locator("th:text-is('dave')"))
    expect(dave).to_contain_text("active, admin")
    expect(dave).to_contain_text("$2.50 per month")
    expect(dave).to_contain_text("12/31/2099")
    assert not page.errors  # type: ignore[attr-defined]


def test_a_plain_key_sees_its_own_usage_and_no_keys(page: Page, team: Team) -> None:
    sign_in(page, team.url, team.alice)
    expect(page.locator("#usage-scope")).to_contain_text("The usage of the key “alice” only")
    expect(page.locator("#usage-legend li")).to_have_count(1)
    expect(page.locator("#usage-legend")).to_contain_text("small-model")
    page.get_by_label("App").check()
    expect(page.locator("#usage-legend")).to_contain_text("notes")
    expect(page.locator("#usage-legend")).not_to_contain_text("mail")
    expect(page.locator("#usage-table")).not_to_contain_text("large-model")
    expect(page.locator("#keys-admin")).to_be_hidden()
    expect(page.locator("#usage-open")).to_be_hidden()
    assert not page.errors  # type: ignore[attr-defined]


def test_an_open_server_explains_keys_and_still_shows_usage(
    page: Page, browser: Browser, tmp_path: Path
) -> None:
    engine = ScriptedEngine("small-model", context_length=4096)
    with serve_app(create_app(Settings(home=tmp_path), EnginePool([engine]))) as url:
        spent = chat(url, None, "small-model", "notes", ["hello"])
        ready(page, url)
        page.click("#pages a[data-page='usage']")
        expect(page.locator("#usage-open")).to_be_visible()
        expect(page.locator("#usage-open")).to_contain_text("kaiyuan keys create NAME --admin")
        expect(page.locator("#usage-scope")).to_contain_text("this server has no keys")
        expect(page.locator("#usage-legend")).to_contain_text(f"small-model {spent:,} tokens")
        expect(page.locator("#keys-admin")).to_be_hidden()
        page.select_option("#language", "zh-CN")
        expect(page.locator("#usage-open")).to_contain_text("此服务器尚无 API 密钥")
        expect(page.locator("#usage-legend")).to_contain_text("个令牌")
        assert not page.errors  # type: ignore[attr-defined]


def test_no_serious_accessibility_violation(browser: Browser, team: Team) -> None:
    context = browser.new_context(
        bypass_csp=True
    )  # to inject axe; the page allows no inline script
    page = context.new_page()
    sign_in(page, team.url, team.boss)
    page.fill("#key-name", "carol")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#key-secret")).to_be_visible()
    for theme in ("light", "dark"):
        if theme == "dark":
            page.evaluate("localStorage.setItem('kaiyuan.theme', 'dark')")
            page.reload()  # the key stays in this tab; the page opens on #/usage again
            expect(page.locator("#keys-rows tr")).to_have_count(4)
        expect(page.locator("#usage-chart rect")).not_to_have_count(0)
        bad = serious_violations(page)
        assert not bad, (theme, bad)
    context.close()
