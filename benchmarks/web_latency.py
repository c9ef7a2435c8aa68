"""The web app's speed on loopback (issue 20): how soon the chat page is interactive, and how
long a streamed token takes from leaving the server to being on the screen.

A real `create_app` (uvicorn in a thread) with a scripted engine that writes marker words
``w0 w1 ...`` at a steady pace; an ASGI wrapper notes the wall-clock time each SSE chunk is
handed to the socket, and a MutationObserver in the page notes when each marker appears in the
answer (both on this machine's clock). Latency = appeared - sent, per token. Long answers are
measured too: the whole answer is re-rendered as Markdown on each token.

Also reports the app's own code and CSS size, gzipped (vendored libraries apart).

    .venv/bin/python benchmarks/web_latency.py [--rounds 5] [--tokens 50,400]
"""

from __future__ import annotations

import argparse
import gzip
import platform
import re
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402
from tests.fakes import Reply, ScriptedEngine  # noqa: E402
from tests.harness import serve_app  # noqa: E402
from tests.web.conftest import CHROMIUM  # noqa: E402

from kaiyuan.config import Settings  # noqa: E402
from kaiyuan.engines.pool import EnginePool  # noqa: E402
from kaiyuan.server.app import create_app  # noqa: E402
from kaiyuan.web.app import STATIC  # noqa: E402

MARK = re.compile(rb"w(\d+)")
OBSERVE = """() => {
  window.__seen = {};
  const list = document.getElementById("messages");
  new MutationObserver(() => {
    const last = list.querySelector(".message.assistant:last-child .content");
    if (!last) return;
    const now = performance.timeOrigin + performance.now();
    for (const m of last.textContent.matchAll(/w(\\d+)/g)) window.__seen[m[1]] ??= now;
  }).observe(list, { childList: true, subtree: true, characterData: true });
}"""


class Stamped:
    """ASGI wrapper: the wall-clock time (ms) each marker's SSE chunk was sent."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sent: dict[str, float] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            await self.app(scope, receive, send)
            return

        async def stamped(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body":
                now = time.time() * 1000
                for number in MARK.findall(message.get("body", b"")):
                    self.sent.setdefault(number.decode(), now)

        await self.app(scope, receive, stamped)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def own_size() -> tuple[int, int]:
    """(raw, gzipped) bytes of the app's own JS, CSS, HTML and strings."""
    files = [p for p in STATIC.rglob("*") if p.is_file() and "vendor" not in p.parts]
    raw = sum(p.stat().st_size for p in files)
    packed = sum(len(gzip.compress(p.read_bytes(), 9)) for p in files)
    return raw, packed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", default="50,400")
    parser.add_argument("--pace", type=float, default=0.02, help="seconds between tokens")
    args = parser.parse_args()
    lengths = [int(n) for n in args.tokens.split(",")]
    engine = ScriptedEngine("fake-model", context_length=1 << 15)
    home = Path(tempfile.mkdtemp())
    app = Stamped(create_app(Settings(home=home), EnginePool([engine])))
    ready_ms: dict[str, list[float]] = {"cold": [], "warm": []}
    latency: dict[int, list[float]] = {n: [] for n in lengths}
    with serve_app(app) as url, sync_playwright() as p:  # type: ignore[arg-type]
        browser = p.chromium.launch(executable_path=CHROMIUM)
        for _ in range(args.rounds):
            context = browser.new_context()
            page = context.new_page()
            for kind in ("cold", "warm"):
                page.goto(url) if kind == "cold" else page.reload()
                page.wait_for_selector("body[data-ready='true']")
                ready_ms[kind].append(page.evaluate("performance.now()"))
            for n in lengths:
                page.click("#new-chat")
                page.evaluate(OBSERVE)
                app.sent.clear()
                pieces = [f"w{i} " for i in range(n)]
                engine.enqueue(Reply(pieces, delay=args.pace))
                page.fill("#composer-input", "go")
                page.keyboard.press("Enter")
                page.wait_for_function("last => window.__seen[last] !== undefined",
                                       arg=str(n - 1), timeout=120_000)  # fmt: skip
                seen = page.evaluate("window.__seen")
                latency[n] += [seen[k] - app.sent[k] for k in seen if k in app.sent]
            context.close()
        browser.close()
    raw, packed = own_size()
    print(f"{datetime.now(UTC):%Y-%m-%d}, {platform.machine()}, Chromium headless, loopback; "
          f"{args.rounds} rounds; a token every {args.pace * 1000:.0f} ms")  # fmt: skip
    print("| measure | p50 | p90 | max |")
    print("|---|---|---|---|")
    for kind, values in ready_ms.items():
        print(f"| page interactive, {kind} (ms) | {pct(values, .5):.0f} | {pct(values, .9):.0f} | "
              f"{max(values):.0f} |")  # fmt: skip
    for n, values in latency.items():
        print(f"| token to screen, {n}-token answers (ms) | {pct(values, .5):.1f} | "
              f"{pct(values, .9):.1f} | {max(values):.1f} |")  # fmt: skip
    print(f"app's own code, CSS, HTML and strings: {raw / 1024:.0f} KB, {packed / 1024:.0f} KB "
          "gzipped (vendored libraries apart)")  # fmt: skip


if __name__ == "__main__":
    main()
