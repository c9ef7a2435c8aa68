"""The models page in a real browser: what the server has, the catalogue with what fits here,
a pull with live progress from a local stand-in for Hugging Face, and removing a model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.harness import KaiyuanServer
from tests.hubserver import HubServer
from tests.tinymodels import write_tiny_gguf
from tests.web.conftest import ready

QWEN05_REPO = "Qwen/Qwen2.5-0.5B-Instruct-GGUF"  # the catalogue's qwen2.5-0.5b-instruct
QWEN05 = "qwen2.5-0.5b-instruct"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("hub")
    for label, n_vocab in (("Q4_K_M", 32), ("Q8_0", 64)):
        name = f"qwen2.5-0.5b-instruct-{label.lower()}.gguf"
        write_tiny_gguf(root / QWEN05_REPO / name, file_type=label, n_vocab=n_vocab)
    with HubServer(root) as hub:
        env = {
            "KAIYUAN_HF_ENDPOINT": hub.url,
            "KAIYUAN_MS_ENDPOINT": hub.url,
            "KAIYUAN_HF_HUB_OFFLINE": "false",
            "KAIYUAN_HUB_TIMEOUT": "5",
            # engines loaded earlier in this test process may have set the SDK offline
            "HF_HUB_OFFLINE": "0",
            "HF_ENDPOINT": hub.url,
        }
        home = tmp_path_factory.mktemp("models-page")
        with KaiyuanServer(home=home, env=env) as running:
            yield running.url


def test_the_catalogue_says_what_fits_here(server: str) -> None:
    catalog = httpx.get(server + "/v1/kaiyuan/catalog", timeout=60).json()
    assert catalog["machine"]["cpus"] >= 1 and catalog["machine"]["memory_bytes"] > 0
    entries = {e["id"]: e for e in catalog["data"]}
    small = entries[QWEN05]
    assert small["publisher"] and small["origin"] == "CN" and small["licence"]
    assert small["fit"] is not None and small["fit"]["pull"].startswith(QWEN05)
    assert small["fit"]["size_gb"] > 0 and not small["installed"]
    # Whatever fits is no larger than the machine's memory for models.
    for entry in entries.values():
        if entry["fit"]:
            assert entry["fit"]["size_gb"] * 1e9 <= catalog["machine"]["memory_bytes"]


def test_pull_with_progress_then_remove(page: Page, server: str) -> None:
    ready(page, server)
    page.click("#pages a[data-page='models']")
    installed = page.locator("#installed")
    expect(installed).to_contain_text("smollm2-135m-instruct")
    expect(installed.locator("tr", has_text="smollm2-135m-instruct")).to_contain_text("loaded")
    row = page.locator("#catalog tr", has=page.locator(f"th:text-is('{QWEN05}')"))
    row.get_by_role("button", name=f"Pull: {QWEN05}").click()
    expect(installed).to_contain_text(QWEN05, timeout=60_000)
    expect(row).to_contain_text("installed")
    models = httpx.get(server + "/v1/models").json()["data"]
    assert QWEN05 in {m["id"] for m in models}
    page.once("dialog", lambda dialog: dialog.accept())
    installed.get_by_role("button", name=f"Remove: {QWEN05}").click()
    expect(installed).not_to_contain_text(QWEN05)
    assert QWEN05 not in {m["id"] for m in httpx.get(server + "/v1/models").json()["data"]}


def test_the_models_page_in_chinese(page: Page, server: str) -> None:
    ready(page, server)
    page.select_option("#language", "zh-CN")
    page.click("#pages a[data-page='models']")
    expect(page.locator("#models-title")).to_have_text("模型")
    expect(page.locator("#installed")).to_contain_text("已加载")
    assert not page.errors  # type: ignore[attr-defined]


def test_an_unknown_page_falls_back_to_chat(page: Page, server: str, tmp_path: Path) -> None:
    page.goto(server + "/#/nowhere")
    page.wait_for_selector("body[data-ready='true']")
    expect(page.locator("#chat")).to_be_visible()
    expect(page.locator("#models")).to_be_hidden()
