"""`kaiyuan bench`: the load generator, its failure handling, its report and its command line."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jinja2
import openai
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from kaiyuan.config import Settings
from kaiyuan.engines.pool import EnginePool
from kaiyuan.evals import bench, report
from kaiyuan.evals import client as chat
from kaiyuan.evals.metrics import Timing, percentiles, summarise
from kaiyuan.server import create_app
from tests.conftest import MODEL
from tests.fakes import CHATML, Reply, ScriptedEngine
from tests.harness import KAIYUAN, KaiyuanServer, free_port, serve_app

FAKE = "fake-model"
DELAY = 0.05  # seconds the scripted engine waits before each piece
PIECES = 5
PERCENTILE_KEYS = {"p50", "p90", "p99"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KaiyuanServer]:
    """This module's own `kaiyuan serve`: its concurrent requests leave the shared server's
    cached prefixes computed in other batch shapes, after which greedy output in other
    modules' determinism tests can differ (llama.cpp is not batch-invariant)."""
    with KaiyuanServer(home=tmp_path_factory.mktemp("bench-server")) as running:
        yield running


# --- the load generator against a scripted engine (deterministic timing) ---------------------
def test_sequential_level_measures_the_scripted_timing() -> None:
    engine = ScriptedEngine(FAKE, context_length=4096, capacity=4)
    engine.enqueue(*[paced() for _ in range(4)])
    calls: list[tuple[int, int, int]] = []
    with served(engine) as url:
        level = asyncio.run(
            level_at(url, concurrency=1, requests=4, progress=lambda *a: calls.append(a))
        )

    assert level["concurrency"] == 1
    assert level["requests"] == 4
    assert level["failures"] == 0
    assert level["failure_examples"] == []
    assert level["estimated_tokens"] is False  # the server reported usage
    assert level["completion_tokens"] == 4 * PIECES
    assert level["prompt_tokens"] == sum(len(r.prompt) for r in engine.records)
    # different prompts, taken in turn (a prefix cache cannot answer them all)
    assert len({tuple(r.prompt) for r in engine.records}) == 4

    ttft, tpot, itl = level["ttft"], level["tpot"], level["itl"]
    assert set(ttft) == set(tpot) == set(itl) == PERCENTILE_KEYS
    assert ttft["p50"] > 0
    assert ttft["p50"] >= 0.5 * DELAY  # the first piece is itself delayed
    # lower bounds from the engine's sleeps (halved: the client may read two pieces at once);
    # upper ones from the same requests' latencies, so a loaded machine that stretches every
    # sleep cannot fail them
    assert 0.5 * DELAY <= tpot["p50"] <= level["latency"]["p50"] / (PIECES - 1)
    assert 0.5 * DELAY <= itl["p50"] <= level["latency"]["p50"]
    assert ttft["p50"] <= ttft["p90"] <= ttft["p99"]
    assert level["latency"]["p50"] >= 0.8 * PIECES * DELAY

    busy = level["busy_seconds"]
    assert busy >= 0.8 * 4 * PIECES * DELAY  # one at a time: the requests add up
    assert level["output_tokens_per_second"] == pytest.approx(4 * PIECES / busy)
    assert level["requests_per_second"] == pytest.approx(4 / busy)

    assert [c[0] for c in calls] == [1] * 4
    assert [c[2] for c in calls] == [4] * 4
    assert [c[1] for c in calls] == [1, 2, 3, 4]


def test_concurrent_level_overlaps_requests() -> None:
    engine = ScriptedEngine(FAKE, context_length=4096, capacity=4)  # admits 4 at once
    engine.enqueue(*[paced() for _ in range(8)])
    with served(engine) as url:
        level = asyncio.run(level_at(url, concurrency=4, requests=8))

    assert level["concurrency"] == 4
    assert level["requests"] == 8
    assert level["failures"] == 0
    assert level["completion_tokens"] == 8 * PIECES
    single = level["latency"]["p50"]
    assert single >= 0.8 * PIECES * DELAY
    # one at a time would take about 8 latencies; four in flight, about 2
    assert level["busy_seconds"] < 0.6 * 8 * single
    assert level["busy_seconds"] >= 0.8 * 2 * PIECES * DELAY
    assert level["output_tokens_per_second"] == pytest.approx(8 * PIECES / level["busy_seconds"])
    assert 0.5 * DELAY <= level["tpot"]["p50"] <= single / (PIECES - 1)


def test_run_measures_each_level_in_order() -> None:
    engine = ScriptedEngine(FAKE, context_length=4096, capacity=4)
    engine.enqueue(*[Reply(list("xyz")) for _ in range(6)])
    with served(engine) as url:

        async def go() -> list[dict[str, Any]]:
            async with client_at(url) as client:
                return await bench.run(client, FAKE, [2, 1], 3, 64)

        levels = asyncio.run(go())
    assert [level["concurrency"] for level in levels] == [2, 1]
    assert [level["requests"] for level in levels] == [3, 3]
    assert [level["completion_tokens"] for level in levels] == [9, 9]
    assert [level["failures"] for level in levels] == [0, 0]


# --- failures ---------------------------------------------------------------------------------
def test_requests_that_do_not_fit_are_counted_not_fatal() -> None:
    prompts = bench.prompts()
    max_tokens = 8
    lengths = sorted(rendered_length(p) for p in prompts)
    context = lengths[len(lengths) // 2] + max_tokens  # about half the prompts fit
    fit = sum(length + max_tokens <= context for length in lengths)
    assert 0 < fit < len(prompts)
    engine = ScriptedEngine(FAKE, context_length=context, capacity=4)
    with served(engine) as url:
        level = asyncio.run(
            level_at(url, concurrency=4, requests=len(prompts), max_tokens=max_tokens)
        )

    assert level["requests"] == fit
    assert level["failures"] == len(prompts) - fit
    assert level["completion_tokens"] == 2 * fit  # the default reply is "o", "k"
    examples = level["failure_examples"]
    assert 1 <= len(examples) <= 5
    assert all(e.startswith("400: ") and "context length" in e for e in examples), examples
    assert len(set(examples)) == len(examples)


def test_a_level_where_every_request_fails() -> None:
    engine = ScriptedEngine(FAKE, context_length=8, capacity=4)  # no prompt fits
    with served(engine) as url:
        level = asyncio.run(level_at(url, concurrency=2, requests=5))

    assert level["failures"] == 5
    assert level["requests"] == 0
    assert level["completion_tokens"] == 0
    assert level["output_tokens_per_second"] is None
    assert level["ttft"] == {"p50": None, "p90": None, "p99": None}
    assert level["failure_examples"]
    assert "maximum context length is 8 tokens" in level["failure_examples"][0]
    assert engine.records == []


def test_unknown_model_stops_the_run() -> None:
    engine = ScriptedEngine(FAKE, context_length=4096, capacity=4)
    with served(engine) as url, pytest.raises(chat.EndpointError) as caught:
        asyncio.run(level_at(url, concurrency=2, requests=6, model="no-such-model"))
    assert "no-such-model" in caught.value.message
    assert engine.records == []


def test_unreachable_endpoint_stops_the_run() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(chat.EndpointError) as caught:
        asyncio.run(level_at(url, concurrency=2, requests=4))
    assert "cannot reach" in caught.value.message


def test_a_request_that_times_out_is_recorded_and_the_run_goes_on() -> None:
    engine = ScriptedEngine(FAKE, context_length=4096, capacity=4)
    engine.enqueue(Reply(list("abcde"), hang_after=2), Reply(list("abc")), Reply(list("abc")))
    with served(engine) as url:
        level = asyncio.run(level_at(url, concurrency=1, requests=3, client_timeout=1.0))
    assert level["failures"] == 1
    assert level["failure_examples"] == ["the request timed out"]
    assert level["requests"] == 2
    assert level["completion_tokens"] == 6


# --- a server that is not kaiyuan (no usage, a role-only first chunk) --------------------------
def test_server_without_usage_counts_output_chunks_as_an_estimate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Against a server that sends no usage and a role-only first chunk: tokens are estimated
    from output chunks, TTFT runs to the first chunk with output, and ITL is the gaps between
    consecutive output chunks as the client received them.

    No bound here is in seconds the machine must keep: the stub sends each word DELAY after
    the client has timestamped the previous one (it watches the client's clock), so every gap
    is at least DELAY however slow the machine is, and it records those timestamps, so the
    expected ITL is known exactly whatever the sleeps stretched to."""
    clock = ClientClock()
    monkeypatch.setattr(chat, "time", clock)
    stub = StubServer(role_pause=0.3, clock=clock)
    with serve_app(stub.app()) as url:
        level = asyncio.run(level_at(url, concurrency=1, requests=3, max_tokens=7, model="stub"))

    assert level["requests"] == 3
    assert level["failures"] == 0, level["failure_examples"]
    assert level["estimated_tokens"] is True
    assert level["completion_tokens"] == 3 * len(STUB_WORDS)
    assert level["prompt_tokens"] == 0
    # TTFT runs to the first chunk with output, not to the role-only chunk sent at once
    # (the stub sleeps role_pause + DELAY between them, after the request was sent)
    assert level["ttft"]["p50"] >= stub.role_pause
    # ITL: the pooled gaps between the words of each reply, as the client timestamped them;
    # not the pause after the role chunk, not a reply's whole time, not zero
    assert len(stub.word_times) == 3
    gaps = [b - a for times in stub.word_times for a, b in itertools.pairwise(times)]
    assert len(gaps) == 3 * (len(STUB_WORDS) - 1)
    assert min(gaps) >= DELAY  # the stub's pacing, measured on the client's side
    assert level["itl"] == pytest.approx(percentiles(gaps))
    assert level["itl"]["p50"] >= DELAY
    sent = stub.bodies[0]
    assert sent["model"] == "stub"
    assert sent["max_tokens"] == 7
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["messages"] == bench.prompts()[2]  # taken from the end of the list of work


def test_a_stream_cut_off_mid_answer_is_one_failed_request() -> None:
    """The server answered 200 and streamed output, then dropped the connection for one
    request: that request failed; the endpoint was reached and serves the others."""
    stub = StubServer(role_pause=0.0, cut=2)
    with serve_app(stub.app()) as url:
        level = asyncio.run(level_at(url, concurrency=1, requests=3, model="stub"))
    assert len(stub.bodies) == 3
    assert level["failures"] == 1
    assert level["requests"] == 2
    assert "cannot reach" not in " ".join(level["failure_examples"])


# --- the command line -------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_bench_against_the_bundled_model(server: KaiyuanServer, tmp_path: Path) -> None:
    out = tmp_path / "bench-out"
    result = kaiyuan_bench(
        "--url", server.url, "-m", MODEL, "-c", "1,2", "-n", "4", "--max-tokens", "16",
        "-o", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "bench.html" in result.stdout

    data = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    assert data["kind"] == "kaiyuan-bench"
    assert data["model"] == MODEL
    assert data["url"] == server.url
    assert data["requests"] == 4
    assert data["max_tokens"] == 16
    levels = data["levels"]
    assert [level["concurrency"] for level in levels] == [1, 2]
    for level in levels:
        assert level["requests"] == 4
        assert level["failures"] == 0
        assert level["failure_examples"] == []
        assert 0 < level["completion_tokens"] <= 4 * 16
        assert level["prompt_tokens"] > 0
        for key in ("ttft", "tpot", "itl", "latency"):
            assert set(level[key]) == PERCENTILE_KEYS
            assert all(isinstance(v, float) for v in level[key].values()), level[key]
        assert level["ttft"]["p50"] > 0
        assert level["output_tokens_per_second"] == pytest.approx(
            level["completion_tokens"] / level["busy_seconds"]
        )

    page = (out / "bench.html").read_text(encoding="utf-8")
    assert_self_contained(page)
    assert "<svg" in page
    assert f"<code>{MODEL}</code>" in page


def test_cli_bench_records_failed_requests_and_still_reports(tmp_path: Path) -> None:
    engine = ScriptedEngine(FAKE, context_length=8, capacity=4)  # no prompt fits
    out = tmp_path / "out"
    with served(engine) as url:
        result = kaiyuan_bench(
            "--url", url, "-m", FAKE, "-c", "2", "-n", "3", "--max-tokens", "4", "-o", str(out)
        )
    assert result.returncode == 0, result.stderr
    level = json.loads((out / "bench.json").read_text(encoding="utf-8"))["levels"][0]
    assert level["failures"] == 3
    assert level["requests"] == 0
    assert "context length" in level["failure_examples"][0]
    assert_self_contained((out / "bench.html").read_text(encoding="utf-8"))


@pytest.mark.parametrize("levels", ["1,0", "abc", "-2", ","])
def test_cli_rejects_bad_concurrency(levels: str, tmp_path: Path) -> None:
    result = kaiyuan_bench(
        "-m", "x", "--url", f"http://127.0.0.1:{free_port()}", "-c", levels,
        "-o", str(tmp_path / "out"),
    )  # fmt: skip
    line = one_line_error(result)
    assert "concurrency" in line
    assert not (tmp_path / "out").exists()


def test_cli_unreachable_url_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    result = kaiyuan_bench(
        "-m", "x", "--url", f"http://127.0.0.1:{port}", "-c", "1", "-n", "2",
        "-o", str(tmp_path / "out"),
    )  # fmt: skip
    line = one_line_error(result)
    assert "cannot reach" in line and str(port) in line
    assert not (tmp_path / "out").exists()


# --- the HTML report ----------------------------------------------------------------------------
def test_bench_html_escapes_what_came_from_outside() -> None:
    name = "<script>alert(1)</script>"
    page = report.bench_html(hand_built_report(name, url="http://x/?a=<b>&c"))
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>" not in page
    assert "a=&lt;b&gt;&amp;c" in page
    assert_self_contained(page)
    assert "<svg" in page


def test_bench_html_draws_a_level_with_no_answered_request() -> None:
    data = hand_built_report(MODEL)
    data["levels"].append(
        {"concurrency": 8, "failures": 4, "failure_examples": ["500: x"], "estimated_tokens": False}
        | summarise([])
    )
    page = report.bench_html(data)
    assert_self_contained(page)
    assert page.count("<svg") == 3


@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")  # the SVG keeps text as text
def test_write_puts_both_files_in_place(tmp_path: Path) -> None:
    data = hand_built_report("模型 <1>")
    page = report.write(tmp_path / "new", data, report.bench_html(data), stem="bench")
    assert page == tmp_path / "new" / "bench.html"
    assert json.loads((tmp_path / "new" / "bench.json").read_text(encoding="utf-8")) == data
    assert "模型 &lt;1&gt;" in page.read_text(encoding="utf-8")


# --- helpers --------------------------------------------------------------------------------------
def paced() -> Reply:
    return Reply([f"t{i} " for i in range(PIECES)], delay=DELAY)


@contextlib.contextmanager
def served(engine: ScriptedEngine) -> Iterator[str]:
    with serve_app(create_app(Settings(), EnginePool([engine]))) as url:
        yield url


def client_at(url: str, timeout: float = 30) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=timeout)


async def level_at(
    url: str,
    *,
    concurrency: int,
    requests: int,
    max_tokens: int = 64,
    model: str = FAKE,
    progress: bench.Progress | None = None,
    client_timeout: float = 30,
) -> dict[str, Any]:
    async with client_at(url, client_timeout) as client:
        return await bench.run_level(client, model, concurrency, requests, max_tokens, progress)


STUB_WORDS = ["one", " two", " three", " four"]


class ClientClock:
    """The ``time`` module as the bench's client (``kaiyuan.evals.client``) sees it in a test:
    the same clock, but every ``time.time()`` reading is kept, so a stub server can tell when
    the client has timestamped the chunk it was sent (the client reads its clock once per
    chunk received, and at a request's start and end)."""

    def __init__(self) -> None:
        self.readings: list[float] = []

    def time(self) -> float:
        now = time.time()
        self.readings.append(now)
        return now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


class StubServer:
    """A minimal OpenAI-style streaming server: a role-only chunk, a pause, then one chunk per
    word ``DELAY`` apart, no usage chunk; the ``cut``-th request is dropped after two words.

    With a ``clock`` (the client's, see :class:`ClientClock`) it paces itself by the client:
    after each chunk it waits until the client has timestamped it, and only then sleeps, so
    consecutive words reach the client at least ``DELAY`` apart on any machine; the client's
    timestamps of each reply's words are kept in ``word_times``."""

    def __init__(
        self, *, role_pause: float, cut: int | None = None, clock: ClientClock | None = None
    ) -> None:
        self.role_pause = role_pause
        self.cut = cut
        self.clock = clock
        self.bodies: list[dict[str, Any]] = []
        self.word_times: list[list[float]] = []

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def completions(body: dict[str, Any]) -> StreamingResponse:
            self.bodies.append(body)
            number = len(self.bodies)
            times: list[float] = []
            self.word_times.append(times)

            async def chunks() -> AsyncIterator[bytes]:
                seen = self._readings()
                yield stub_chunk({"role": "assistant", "content": ""})
                await self._timestamped(seen)
                await asyncio.sleep(self.role_pause)
                for i, word in enumerate(STUB_WORDS):
                    if number == self.cut and i == 2:
                        raise ConnectionAbortedError("the stub drops this stream")
                    await asyncio.sleep(DELAY)
                    seen = self._readings()
                    yield stub_chunk({"content": word})
                    if (stamp := await self._timestamped(seen)) is not None:
                        times.append(stamp)
                yield stub_chunk({}, "stop")
                yield b"data: [DONE]\n\n"

            return StreamingResponse(chunks(), media_type="text/event-stream")

        return app

    def _readings(self) -> int:
        return len(self.clock.readings) if self.clock else 0

    async def _timestamped(self, seen: int) -> float | None:
        """The client's timestamp of the chunk just sent: its first clock reading since
        ``seen`` (every earlier chunk has been timestamped already). Waits for it; the limit
        only keeps a broken client from hanging the test."""
        if self.clock is None:
            return None
        readings = self.clock.readings
        for _ in range(20_000):  # about 20 s
            if len(readings) > seen:
                return readings[seen]
            await asyncio.sleep(0.001)
        raise RuntimeError("the client never timestamped the chunk it was sent")


def stub_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    data = {
        "id": "chatcmpl-stub",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "stub",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(data)}\n\n".encode()


def rendered_length(messages: list[dict[str, Any]]) -> int:
    """Prompt tokens for the scripted engine: one per character of the ChatML prompt."""
    template = jinja2.Environment().from_string(CHATML)
    return len(template.render(messages=messages, add_generation_prompt=True))


def hand_built_report(model: str, url: str = "http://127.0.0.1:8000") -> dict[str, Any]:
    timings = [
        Timing(started=100.0, finished=101.0, chunk_times=[100.2, 100.6, 101.0],
               prompt_tokens=10, completion_tokens=3),
        Timing(started=100.5, finished=102.0, chunk_times=[100.9, 101.5, 102.0],
               prompt_tokens=12, completion_tokens=3),
    ]  # fmt: skip
    level = {"concurrency": 2, "failures": 1, "failure_examples": ["400: too long"]}
    return report.header("kaiyuan-bench") | {
        "url": url,
        "model": model,
        "requests": 3,
        "max_tokens": 16,
        "levels": [level | {"estimated_tokens": False} | summarise(timings)],
    }


def kaiyuan_bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KAIYUAN, "bench", *args],
        env={**os.environ, "NO_COLOR": "1"},  # KAIYUAN_HOME is the per-test home from conftest
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,  # the bundled model on a busy 2-core machine can be slow
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


EXTERNAL = re.compile(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def assert_self_contained(page: str) -> None:
    """One file: no scripts and nothing fetched from elsewhere (links, images, fonts, CSS)."""
    assert page.lstrip().lower().startswith("<!doctype html>")
    assert "<script" not in page.lower()
    assert not EXTERNAL.findall(page), EXTERNAL.findall(page)
    assert "<link" not in page.lower()
    assert "@import" not in page
    assert not re.search(r"url\(\s*['\"]?\s*(?:https?:)?//", page)
    assert page.rstrip().endswith("</html>")
