"""Browser fixtures: Playwright for Python driving Debian's Chromium (installed by `make`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = "/usr/lib/chromium/chromium"  # not /usr/bin/chromium, a wrapper that adds flags
AXE = Path(__file__).with_name("vendor") / "axe.min.js"


# Per module, not per session: sync Playwright keeps an event loop running in this thread while
# it is open, and a later test's asyncio.run would find it.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh context per test (its own storage), English; console errors are collected and a
    screenshot is kept beside the test's files."""
    context = browser.new_context(locale="en-US", viewport={"width": 1200, "height": 800})
    page = context.new_page()
    page.errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda error: page.errors.append(str(error)))  # type: ignore[attr-defined]
    yield page
    page.screenshot(path=str(tmp_path / f"{request.node.name}.png"), full_page=True)
    context.close()


def serious_violations(page: Page) -> list[tuple[str, list[object]]]:
    """axe-core's serious and critical findings on the page as it is now (the context must be
    made with ``bypass_csp=True``: the page itself runs no inline script)."""
    if not page.evaluate("typeof axe !== 'undefined'"):
        page.add_script_tag(content=AXE.read_text())
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        (v["id"], [n["target"] for n in v["nodes"]])
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def ready(page: Page, url: str) -> None:
    """Open the app and wait until it has loaded its models and conversations."""
    page.goto(url)
    page.wait_for_selector("body[data-ready='true']", timeout=15_000)
