"""The media page in a real browser. Against `kaiyuan serve` with tiny random diffusers
pipelines (tests/diffusion_models.py): an image generated from the form lands in the gallery
with its settings and is still there after a reload; a video job shows its progress, can be
cancelled, and plays when done; polling stops when the page is left. Against an app in this
process: a server with no image model says what to do, the page in Chinese, and with API keys
the gallery's files are fetched with the key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect

from kaiyuan.config import Settings
from kaiyuan.engines.pool import EnginePool
from kaiyuan.server.app import create_app
from kaiyuan.store.store import Store
from tests import diffusion_models
from tests.fakes import ScriptedEngine
from tests.harness import KaiyuanServer, serve_app
from tests.test_media_gallery import Painter
from tests.web.conftest import ready, serious_violations

SD, WAN = "tiny-sd", "tiny-wan"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("media-page")
    store = Store(home)
    sd = diffusion_models.stable_diffusion(tmp_path_factory.mktemp("sd"))
    assert store.install(SD, [sd], move=False, source="test").capabilities == ["image"]
    wan = diffusion_models.wan(tmp_path_factory.mktemp("wan"))
    assert store.install(WAN, [wan], move=False, source="test").capabilities == ["video"]
    with KaiyuanServer(home=home, args=["--threads", "1"]) as running:
        yield running.url


def fill(page: Page, kind: str, **fields: str) -> None:
    for name, value in fields.items():
        page.fill(f"#{kind}-{name}", value)


def open_media(page: Page, url: str) -> None:
    ready(page, url + "/#/media")
    expect(page.locator("#media-title")).to_be_visible()


@pytest.mark.slow
def test_an_image_goes_into_the_gallery_with_its_settings_and_stays(
    page: Page, server: str
) -> None:
    open_media(page, server)
    expect(page.locator("#image-model option")).to_have_text([SD])
    expect(page.locator("#gallery-empty")).to_be_visible()
    fill(page, "image", prompt="a red fox", negative="blurry", size="32x32", steps="2", seed="7")
    # The request is held until the working state has been seen.
    held: list[Route] = []
    page.route("**/v1/images/generations", lambda route: held.append(route))
    with page.expect_request("**/v1/images/generations") as sent:
        page.click("#image-submit")
    assert sent.value.post_data_json == {
        "model": SD, "prompt": "a red fox", "negative_prompt": "blurry", "size": "32x32",
        "steps": 2, "seed": 7, "n": 1, "response_format": "url",
    }  # fmt: skip
    expect(page.locator("#image-working")).to_be_visible()
    expect(page.locator("#image-submit")).to_be_disabled()
    expect(page.locator("#image-status")).to_contain_text("Generating")
    assert len(held) == 1
    held[0].continue_()
    page.unroute("**/v1/images/generations")
    expect(page.locator("#image-status")).to_contain_text("Done in", timeout=60_000)
    expect(page.locator("#image-working")).to_be_hidden()
    card = page.locator("#gallery li").first
    expect(card.locator(".media-prompt")).to_have_text("a red fox")
    expect(card.locator(".media-settings")).to_have_text(f"{SD} · 32x32 · 2 steps · seed 7")
    expect(card).to_contain_text("Not: blurry")
    image = card.locator("img")
    page.wait_for_function(
        "img => img.complete && img.naturalWidth === 32", arg=image.element_handle()
    )
    listed = httpx.get(server + "/v1/kaiyuan/media").json()["data"]
    assert listed[0]["prompt"] == "a red fox" and listed[0]["seed"] == 7
    assert image.get_attribute("src") == f"/v1/media/{listed[0]['id']}"

    # A second image, no seed given: the newest comes first and shows the seed the server drew.
    fill(page, "image", prompt="green hills", negative="", seed="")
    page.click("#image-submit")
    expect(page.locator("#gallery li")).to_have_count(2, timeout=60_000)
    newest = httpx.get(server + "/v1/kaiyuan/media").json()["data"][0]
    expect(page.locator("#gallery li").first).to_contain_text(f"seed {newest['seed']}")
    # An error is one readable line from the server.
    fill(page, "image", size="33x32")
    page.click("#image-submit")
    expect(page.locator("#image-status")).to_have_text(
        "Error: size 33x32 is not allowed: this pipeline needs width and height divisible by 2"
    )
    expect(page.locator("#image-status")).to_have_class("error")

    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    expect(page.locator("#gallery li")).to_have_count(2)
    first = page.locator("#gallery li").nth(1)
    expect(first.locator(".media-prompt")).to_have_text("a red fox")
    first.get_by_role("button", name="Use these settings").click()
    expect(page.locator("#image-seed")).to_have_value("7")
    expect(page.locator("#image-negative")).to_have_value("blurry")
    assert not page.errors  # type: ignore[attr-defined]


def job_id(page: Page) -> str:
    return page.locator("#jobs li").first.get_attribute("id").removeprefix("job-")  # type: ignore[union-attr]


@pytest.mark.slow
def test_a_video_job_finishes_and_plays(page: Page, server: str) -> None:
    open_media(page, server)
    expect(page.locator("#video-model option")).to_have_text([WAN])
    fill(page, "video", prompt="a fox in the snow", size="32x16", frames="9", fps="8",
         steps="2", seed="3")  # fmt: skip
    page.click("#video-submit")
    card = page.locator("#jobs li").first
    expect(card.locator(".media-prompt")).to_have_text("a fox in the snow", timeout=60_000)
    expect(card.locator(".job-status")).to_contain_text("Finished", timeout=60_000)
    expect(card.locator(".media-settings")).to_have_text(
        f"{WAN} · 32x16 · 9 frames at 8 a second (1.12 s)"
    )
    video = card.locator("video")
    handle = video.element_handle()
    page.wait_for_function("v => v.readyState >= 1 && v.duration > 0", arg=handle)
    duration = video.evaluate("v => v.duration")
    assert abs(duration - 9 / 8) < 0.2, duration
    assert video.evaluate("v => [v.videoWidth, v.videoHeight]") == [32, 16]
    video.evaluate("v => { v.muted = true; return v.play(); }")
    page.wait_for_function("v => v.currentTime > 0", arg=handle)
    assert video.get_attribute("src") == f"/v1/videos/{job_id(page)}/content"
    # Delete the finished video: the card and the job are gone.
    made = job_id(page)
    page.once("dialog", lambda dialog: dialog.accept())
    card.get_by_role("button", name="Delete: a fox in the snow").click()
    expect(page.locator(f"#job-{made}")).to_have_count(0)
    assert httpx.get(f"{server}/v1/videos/{made}").status_code == 404
    assert not page.errors  # type: ignore[attr-defined]


@pytest.mark.slow
def test_a_running_job_shows_progress_polls_only_when_shown_and_cancels(
    page: Page, server: str
) -> None:
    open_media(page, server)
    # Large enough to run for many seconds on a CPU (the check is one step at most).
    fill(page, "video", prompt="a long one", size="256x256", frames="81", steps="150", seed="1")
    page.click("#video-submit")
    card = page.locator("#jobs li").first
    expect(card).to_be_visible(timeout=60_000)  # the first job of a model loads it
    expect(card.locator("progress")).to_be_visible()
    # (the card is rebuilt when the job goes from queued to running: no element handle here)
    page.wait_for_function("() => document.querySelector('#jobs progress')?.value > 0",
                           timeout=60_000)  # fmt: skip
    expect(card.locator(".job-status")).to_contain_text("Generating: ")
    made = job_id(page)
    section = page.locator("#media")
    expect(section).to_have_attribute("data-polling", "true")

    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if f"/v1/videos/{made}" in r.url else None)
    page.click("#pages a[data-page='chat']")
    expect(section).to_have_attribute("data-polling", "false")
    seen = len(polls)
    page.wait_for_timeout(2500)  # an observation window: two and a half poll intervals
    assert len(polls) == seen, polls
    assert httpx.get(f"{server}/v1/videos/{made}").json()["status"] == "in_progress"

    with page.expect_request(lambda r: f"/v1/videos/{made}" in r.url):  # polling again
        page.click("#pages a[data-page='media']")
    expect(section).to_have_attribute("data-polling", "true")
    card.get_by_role("button", name="Cancel: a long one").click()
    expect(page.locator(f"#job-{made}")).to_have_count(0)
    expect(section).to_have_attribute("data-polling", "false")
    assert httpx.get(f"{server}/v1/videos/{made}").status_code == 404
    assert not page.errors  # type: ignore[attr-defined]


def test_a_server_without_image_models_says_how_to_get_one(page: Page, tmp_path: Path) -> None:
    app = create_app(Settings(home=tmp_path), EnginePool([ScriptedEngine()]))
    with serve_app(app) as url:
        open_media(page, url)
        none = page.locator("#image-none")
        expect(none).to_be_visible()
        expect(none).to_contain_text("This server has no image model.")
        expect(none).to_contain_text("kaiyuan models --catalog")
        expect(none).to_contain_text("kaiyuan pull qwen-image")  # the catalogue's image model
        expect(page.locator("#image-submit")).to_be_disabled()
        expect(page.locator("#video-none")).to_contain_text("This server has no video model.")
        expect(page.locator("#video-submit")).to_be_disabled()
        none.get_by_role("link", name="Open the models page").click()
        expect(page.locator("#models")).to_be_visible()
        assert not page.errors  # type: ignore[attr-defined]


def test_videos_failing_leave_the_images_working(page: Page, tmp_path: Path) -> None:
    """A server that cannot list video jobs (no diffusion extra) says why on the video side."""
    app = create_app(Settings(home=tmp_path), EnginePool([ScriptedEngine(), Painter()]))
    with serve_app(app) as url:
        refusal = '{"error": {"message": "video generation needs the diffusion extra"}}'
        page.route("**/v1/videos", lambda route: route.fulfill(status=400, body=refusal))
        open_media(page, url)
        expect(page.locator("#video-status")).to_have_text(
            "Error: video generation needs the diffusion extra"
        )
        fill(page, "image", prompt="still works", size="16x16", steps="1")
        page.click("#image-submit")
        expect(page.locator("#gallery li .media-prompt")).to_have_text(["still works"])
        assert not page.errors  # type: ignore[attr-defined]


def test_the_media_page_in_chinese(page: Page, tmp_path: Path) -> None:
    app = create_app(Settings(home=tmp_path), EnginePool([ScriptedEngine(), Painter()]))
    with serve_app(app) as url:
        open_media(page, url)
        page.select_option("#language", "zh-CN")
        expect(page.locator("#media-title")).to_have_text("媒体")
        expect(page.locator("label[for='image-prompt']")).to_have_text("提示词")
        expect(page.locator("#image-submit")).to_have_text("生成")
        expect(page.locator("#jobs-empty")).to_have_text("还没有视频任务。")
        expect(page.locator("#video-none")).to_contain_text("此服务器没有视频模型")
        fill(page, "image", prompt="狐狸", size="16x16", steps="3", seed="5")
        page.click("#image-submit")
        card = page.locator("#gallery li").first
        expect(card.locator(".media-settings")).to_have_text("painter · 16x16 · 3 步 · 种子 5")
        expect(page.locator("#image-status")).to_contain_text("完成")
        page.select_option("#language", "en")  # what the page built is translated again
        expect(card.locator(".media-settings")).to_have_text("painter · 16x16 · 3 steps · seed 5")
        expect(page.locator("#video-none")).to_contain_text("This server has no video model.")
        assert not page.errors  # type: ignore[attr-defined]


def test_with_a_key_the_gallery_fetches_its_files_with_it(browser: Browser, tmp_path: Path) -> None:
    from kaiyuan.db import open_for
    from kaiyuan.db.keys import KeyStore

    settings = Settings(home=tmp_path)
    _, secret = KeyStore(open_for(settings)).create("alice")
    app = create_app(settings, EnginePool([ScriptedEngine(), Painter()]))
    with serve_app(app) as url:
        context = browser.new_context()
        page = context.new_page()
        errors: list[Any] = []
        page.on("pageerror", lambda error: errors.append(error))
        page.goto(url + "/#/media")
        page.fill("#key-input", secret)
        page.click("#key-dialog button[value='ok']")
        page.wait_for_selector("body[data-ready='true']")
        fill(page, "image", prompt="a kept fox", size="16x16", steps="1")
        page.click("#image-submit")
        image = page.locator("#gallery li img").first
        page.wait_for_function(
            "img => img.src.startsWith('blob:') && img.complete && img.naturalWidth === 16",
            arg=image.element_handle(),
        )
        assert httpx.get(url + "/v1/kaiyuan/media").status_code == 401
        context.close()
        assert not errors


def test_no_serious_accessibility_violations(browser: Browser, tmp_path: Path) -> None:
    app = create_app(Settings(home=tmp_path), EnginePool([ScriptedEngine(), Painter()]))
    with serve_app(app) as url:
        context = browser.new_context(bypass_csp=True)  # axe is injected past the page's CSP
        page = context.new_page()
        open_media(page, url)
        fill(page, "image", prompt="a fox", negative="rain", size="16x16", steps="2", seed="1")
        page.click("#image-submit")
        expect(page.locator("#gallery li")).to_have_count(1)
        for theme in ("light", "dark"):
            page.evaluate(f"localStorage.setItem('kaiyuan.theme', '{theme}')")
            page.reload()
            page.wait_for_selector("body[data-ready='true']")
            expect(page.locator("#gallery li img")).to_have_count(1)
            bad = serious_violations(page)
            assert not bad, (theme, bad)
        context.close()
