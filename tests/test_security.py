"""Security and reliability cases T4–T11 (see the security guide).

Most run against a real ``kaiyuan serve`` (the bundled model, a small context, a queue of one);
the failure modes a real model cannot be made to show (a crashing, hanging or malicious engine)
use the scripted fake engine behind a real loopback socket.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from kaiyuan.chat.template import ChatTemplate
from kaiyuan.config import Settings
from kaiyuan.engines.pool import EnginePool
from kaiyuan.errors import TemplateError
from kaiyuan.server import create_app
from tests.conftest import MODEL
from tests.fakes import CHATML, Reply, ScriptedEngine
from tests.harness import KaiyuanServer, serve_app, wait_for

CONTEXT = 512
SSTI = "{{ cycler.__init__.__globals__.os.popen('id').read() }}"
# SmolLM2's end-of-generation tokens (<|endoftext|>, <|im_start|>, <|im_end|>): biased away so
# the real model generates exactly max_tokens.
NO_EOS = {"0": -100, "1": -100, "2": -100}
LEAKS = ("/secret", "0x", "Traceback", "model.gguf", "RuntimeError", 'File "', "deadbeef")
FAST = 2.0  # seconds: "fast" rejections (generous for a busy 2-core box)
FAKE = "fake-model"
USER = [{"role": "user", "content": "hi"}]

slow = pytest.mark.slow


# --- helpers ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KaiyuanServer]:
    """The bundled model with a small context and room for one running + one queued request.

    One thread: on a busy 2-core box, oversubscribed llama.cpp threads slow down by orders of
    magnitude. A context of 512 leaves T9 a long enough generation to tell "aborted" apart.
    """
    home = tmp_path_factory.mktemp("security-home")
    args = [
        "--context-length", str(CONTEXT), "--parallel", "1", "--max-queue", "1", "--threads", "1",
    ]  # fmt: skip
    with KaiyuanServer(home=home, args=args) as running:
        yield running


@contextlib.contextmanager
def fake_server(engine: ScriptedEngine, **settings: Any) -> Iterator[str]:
    with serve_app(create_app(Settings(**settings), EnginePool([engine]))) as url:
        yield url


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = call()
    return response, time.monotonic() - start


def assert_envelope(response: httpx.Response, status: int, code: str | None = None) -> str:
    """The OpenAI error envelope with ``status`` (and ``code``); returns the message."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == code, error
    assert_no_leak(response.text)
    return str(error["message"])


def assert_no_leak(text: str) -> None:
    for needle in LEAKS:
        assert needle not in text, f"{needle!r} leaked in {text!r}"


def sse_events(response: httpx.Response) -> list[Any]:
    events: list[Any] = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def stream_chat(url: str, body: dict[str, Any], timeout: float = 10) -> tuple[int, list[Any]]:
    with (
        httpx.Client(timeout=timeout) as client,
        client.stream("POST", url + "/v1/chat/completions", json=body) as response,
    ):
        if response.status_code != 200:
            response.read()
            return response.status_code, [response.json()]
        return 200, sse_events(response)


def still_serves(url: str) -> None:
    """A normal 1-token request still succeeds."""
    response = httpx.post(
        url + "/v1/completions",
        json={"model": MODEL, "prompt": "Hello", "max_tokens": 1},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 1


def raw_http(url: str, head: bytes, body: bytes = b"", timeout: float = 10) -> tuple[int, bytes]:
    """Send ``head`` and the start of a body over a bare socket; the status and reply body.

    The socket read times out (failing the test) if the server waits for a body never sent.
    """
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname or "", parts.port or 80), timeout) as sock:
        sock.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 1 << 62


# --- T4: context boundaries -----------------------------------------------------------------------
@slow
def test_t4_prompt_of_context_minus_one_tokens_fits(real: KaiyuanServer) -> None:
    response = httpx.post(
        real.url + "/v1/completions",
        json={"model": MODEL, "prompt": [28] * (CONTEXT - 1), "max_tokens": 1},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    assert usage["prompt_tokens"] == CONTEXT - 1
    assert usage["completion_tokens"] == 1


@slow
def test_t4_prompt_of_exactly_the_context_is_400_naming_the_numbers(real: KaiyuanServer) -> None:
    response, elapsed = timed(
        lambda: httpx.post(
            real.url + "/v1/completions",
            json={"model": MODEL, "prompt": [28] * CONTEXT, "max_tokens": 1},
            timeout=60,
        )
    )
    message = assert_envelope(response, 400, "context_length_exceeded")
    assert str(CONTEXT) in message
    assert str(CONTEXT + 1) in message
    assert elapsed < FAST
    still_serves(real.url)


@slow
def test_t4_chat_over_the_context_is_400(real: KaiyuanServer) -> None:
    long = [{"role": "user", "content": "hello " * (CONTEXT + 50)}]
    response = httpx.post(
        real.url + "/v1/chat/completions",
        json={"model": MODEL, "messages": long, "max_tokens": 1},
        timeout=60,
    )
    message = assert_envelope(response, 400, "context_length_exceeded")
    assert str(CONTEXT) in message
    # A prompt that fits, with max_tokens that do not: the message gives prompt and total.
    response = httpx.post(
        real.url + "/v1/chat/completions",
        json={"model": MODEL, "messages": USER, "max_tokens": CONTEXT},
        timeout=60,
    )
    message = assert_envelope(response, 400, "context_length_exceeded")
    assert str(CONTEXT) in message
    still_serves(real.url)


# --- T5: parameter abuse --------------------------------------------------------------------------
ABUSE: list[tuple[str, dict[str, Any], str | None]] = [
    ("chat/completions", {"n": 1000}, "n"),
    ("completions", {"n": 1000}, "n"),
    ("completions", {"prompt": ["x"] * 100, "n": 1}, "n"),  # prompts x n over the server limit
    ("chat/completions", {"max_tokens": 0}, "max_tokens"),
    ("chat/completions", {"max_tokens": -1}, "max_tokens"),
    ("completions", {"max_tokens": 0}, "max_tokens"),
    ("chat/completions", {"max_completion_tokens": -1}, "max_completion_tokens"),
    ("chat/completions", {"max_tokens": 10**9}, None),
    ("chat/completions", {"max_completion_tokens": 10**9}, None),
    ("completions", {"max_tokens": 10**9}, None),
    ("chat/completions", {"stop": [f"s{i}" for i in range(100)]}, None),
    (
        "chat/completions",
        {"logit_bias": {str(i): 1 for i in range(5)} | {"99999999999": 1}},
        "logit_bias",
    ),
    ("chat/completions", {"top_logprobs": 10**6, "logprobs": True}, "top_logprobs"),
]


@slow
@pytest.mark.parametrize(("route", "fields", "param"), ABUSE)
def test_t5_parameter_abuse_is_a_fast_400(
    real: KaiyuanServer, route: str, fields: dict[str, Any], param: str | None
) -> None:
    base: dict[str, Any] = {"model": MODEL}
    base |= {"messages": USER} if route == "chat/completions" else {"prompt": "hi"}
    response, elapsed = timed(
        lambda: httpx.post(f"{real.url}/v1/{route}", json=base | fields, timeout=30)
    )
    assert_envelope(response, 400)
    if param is not None:
        assert response.json()["error"]["param"] == param
    if "max_tokens" in fields or "max_completion_tokens" in fields:
        value = fields.get("max_tokens", fields.get("max_completion_tokens"))
        if value == 10**9:
            assert response.json()["error"]["code"] == "context_length_exceeded"
    assert elapsed < FAST


@slow
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_t5_non_finite_temperature_is_400(real: KaiyuanServer, value: str) -> None:
    body = f'{{"model": "{MODEL}", "messages": [{{"role": "user", "content": "hi"}}], '
    body += f'"max_tokens": 1, "temperature": {value}}}'
    response, elapsed = timed(
        lambda: httpx.post(
            real.url + "/v1/chat/completions",
            content=body.encode(),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
    )
    assert_envelope(response, 400)
    assert response.json()["error"]["param"] == "temperature"
    assert elapsed < FAST


@slow
def test_t5_server_still_serves_after_abuse(real: KaiyuanServer) -> None:
    with httpx.Client(timeout=30) as client:
        for _ in range(3):
            for route, fields, _param in ABUSE:
                base: dict[str, Any] = {"model": MODEL}
                base |= {"messages": USER} if route == "chat/completions" else {"prompt": "hi"}
                assert client.post(f"{real.url}/v1/{route}", json=base | fields).status_code == 400
    still_serves(real.url)


# --- T6: oversized and pathological bodies --------------------------------------------------------
FIFTY_MB = 50 * 1024 * 1024


@slow
def test_t6_fifty_megabyte_body_is_413(real: KaiyuanServer) -> None:
    response, elapsed = timed(
        lambda: httpx.post(
            real.url + "/v1/chat/completions",
            content=b"x" * FIFTY_MB,
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
    )
    assert_envelope(response, 413, "payload_too_large")
    assert elapsed < 10
    still_serves(real.url)


@slow
def test_t6_declared_length_over_the_cap_is_refused_before_the_body(real: KaiyuanServer) -> None:
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\n" + f"Content-Length: {FIFTY_MB}\r\n\r\n".encode()
    )
    start = time.monotonic()
    status, body = raw_http(real.url, head, b'{"model": "', timeout=10)
    assert status == 413
    assert json.loads(body)["error"]["code"] == "payload_too_large"
    assert time.monotonic() - start < 5  # answered without waiting for 50 MB that never come
    still_serves(real.url)


@slow
def test_t6_chunked_body_over_the_cap_is_413(real: KaiyuanServer) -> None:
    def chunks() -> Iterator[bytes]:
        block = b"x" * (1024 * 1024)
        for _ in range(50):
            yield block

    response = httpx.post(
        real.url + "/v1/chat/completions",
        content=chunks(),  # no Content-Length: the cap must count what arrives
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert_envelope(response, 413, "payload_too_large")
    still_serves(real.url)


@slow
def test_t6_twenty_megabyte_prompt_is_rejected(real: KaiyuanServer) -> None:
    response = httpx.post(
        real.url + "/v1/completions",
        json={"model": MODEL, "prompt": "a" * (20 * 1024 * 1024), "max_tokens": 1},
        timeout=60,
    )
    assert response.status_code in (400, 413), response.text
    assert_envelope(response, response.status_code)
    still_serves(real.url)


@slow
@pytest.mark.parametrize("shape", ["array", "object"])
def test_t6_deeply_nested_json_is_400(real: KaiyuanServer, shape: str) -> None:
    depth = 100_000
    nested = "[" * depth + "]" * depth if shape == "array" else '{"a":' * depth + "1" + "}" * depth
    body = f'{{"model": "{MODEL}", "messages": {nested}}}'
    response, elapsed = timed(
        lambda: httpx.post(
            real.url + "/v1/chat/completions",
            content=body.encode(),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
    )
    assert_envelope(response, 400)
    assert elapsed < 5
    still_serves(real.url)


# --- T7: template injection -----------------------------------------------------------------------
def test_t7_jinja_in_message_content_is_plain_text() -> None:
    rendered = ChatTemplate(CHATML).render([{"role": "user", "content": SSTI}])
    assert SSTI in rendered
    assert "uid=" not in rendered


def test_t7_jinja_in_message_reaches_the_model_literally() -> None:
    engine = ScriptedEngine()
    with fake_server(engine) as url:
        response = httpx.post(
            url + "/v1/chat/completions",
            json={"model": FAKE, "messages": [{"role": "user", "content": SSTI}]},
            timeout=10,
        )
    assert response.status_code == 200, response.text
    prompt = "".join(map(chr, engine.records[0].prompt))
    assert f"<|im_start|>user\n{SSTI}<|im_end|>" in prompt
    assert "uid=" not in prompt


@slow
def test_t7_request_chat_template_is_rejected(real: KaiyuanServer) -> None:
    for route, base in [
        ("chat/completions", {"messages": USER}),
        ("completions", {"prompt": "hi"}),
    ]:
        for field in ("chat_template", "chat_template_kwargs"):
            value: Any = SSTI if field == "chat_template" else {"x": SSTI}
            response = httpx.post(
                f"{real.url}/v1/{route}",
                json={"model": MODEL, "max_tokens": 1, field: value, **base},
                timeout=30,
            )
            assert "uid=" not in response.text
            if route == "completions" and field == "chat_template_kwargs":
                # no template there at all: an unknown field, ignored with a log warning
                assert response.status_code == 200, response.text
                continue
            assert_envelope(response, 400)
            # chat takes chat_template_kwargs, but only known data-only keys (enable_thinking):
            # the unknown key is what gets named there.
            assert response.json()["error"]["param"] in (field, f"{field}.x")
    response = httpx.post(
        f"{real.url}/v1/chat/completions",
        json={
            "model": MODEL,
            "max_tokens": 1,
            "messages": USER,
            "chat_template_kwargs": {"enable_thinking": False},
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text


@slow
def test_t7_jinja_payload_in_a_real_request_is_just_text(real: KaiyuanServer) -> None:
    response = httpx.post(
        real.url + "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": SSTI}], "max_tokens": 4},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert "uid=" not in response.text


def test_t7_malicious_model_template_raises_in_the_sandbox() -> None:
    template = ChatTemplate(SSTI)
    with pytest.raises(TemplateError) as caught:
        template.render([{"role": "user", "content": "hi"}])
    assert "uid=" not in caught.value.message


@pytest.mark.parametrize("stream", [False, True])
def test_t7_malicious_model_template_served_is_a_clean_500(stream: bool) -> None:
    engine = ScriptedEngine(chat_template=SSTI + "{{ messages[0]['content'] }}")
    with fake_server(engine) as url:
        response = httpx.post(
            url + "/v1/chat/completions",
            json={"model": FAKE, "messages": USER, "stream": stream},
            timeout=10,
        )
        health = httpx.get(url + "/health", timeout=10)
    assert_envelope(response, 500, "chat_template_error")
    assert "uid=" not in response.text
    assert "cycler" not in response.text
    assert engine.records == []
    assert health.status_code == 200


# --- T8: internal errors never leak ---------------------------------------------------------------
def test_t8_engine_crash_non_stream_is_a_clean_500() -> None:
    engine = ScriptedEngine(replies=[Reply(list("abcdef"), die_after=2)])
    with fake_server(engine) as url:
        response = httpx.post(
            url + "/v1/chat/completions", json={"model": FAKE, "messages": USER}, timeout=10
        )
    assert_envelope(response, 500)
    assert response.json()["error"]["type"] == "server_error"
    assert engine.admitted == 0


def test_t8_engine_crash_mid_stream_ends_with_a_clean_error_event() -> None:
    engine = ScriptedEngine(replies=[Reply(list("abcdef"), die_after=2)])
    with fake_server(engine) as url:
        status, events = stream_chat(url, {"model": FAKE, "messages": USER, "stream": True})
    assert status == 200
    assert "[DONE]" not in events
    last = events[-1]
    assert set(last) == {"error"}
    assert last["error"]["type"] == "server_error"
    assert_no_leak(json.dumps(events))
    text = "".join(
        e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e.get("choices")
    )
    assert text == "ab"
    assert engine.admitted == 0


@slow
def test_t8_unknown_route_and_wrong_method_give_the_envelope(real: KaiyuanServer) -> None:
    with httpx.Client(base_url=real.url, timeout=10) as client:
        assert_envelope(client.get("/v1/nope"), 404)
        assert_envelope(client.post("/admin/../../etc/passwd"), 404)
        assert_envelope(client.get("/v1/chat/completions"), 405)
        assert_envelope(client.delete("/v1/models"), 405)
        assert_envelope(client.get(f"/v1/models/{'x' * 300}"), 404, "model_not_found")


@pytest.mark.parametrize(
    ("path", "name"),
    [
        # one path segment: the route hands it to the guard, which must refuse it
        ("..", ".."),
        ("%2e%2e", ".."),
        ("%2E%2E", ".."),
        ("..%5csecret.png", "..\\secret.png"),
        ("secret.txt", "secret.txt"),  # a file in the media folder kaiyuan did not write
        # more than one segment, raw or encoded: no route takes it; it must not reach the file
        ("../secret.png", None),
        ("..%2fsecret.png", None),
        ("%2e%2e%2fsecret.png", None),
        ("%2e%2e/%2e%2e/etc/passwd", None),
        ("../../etc/passwd", None),
    ],
)
def test_t8_media_path_traversal_sent_raw_is_refused(
    tmp_path: Path, path: str, name: str | None
) -> None:
    """GET /v1/media/NAME with the path as written: HTTP clients (httpx, browsers) remove
    ``..`` segments before sending, so only a bare socket shows what the server does."""
    media = tmp_path / "media"
    media.mkdir()
    image = "0123456789abcdef" * 2 + ".png"
    (media / image).write_bytes(b"PNG-BYTES")
    (media / "secret.txt").write_text("TOP-SECRET")
    (tmp_path / "secret.png").write_text("TOP-SECRET")
    with fake_server(ScriptedEngine(), home=tmp_path) as url:
        get = b"GET /v1/media/%s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        # the same socket request for a file kaiyuan wrote is served
        assert raw_http(url, get % image.encode()) == (200, b"PNG-BYTES")
        status, body = raw_http(url, get % path.encode())
    assert status == 404 and b"TOP-SECRET" not in body, body
    error = json.loads(body)["error"]
    assert error["code"] == "not_found"
    if name is not None:  # the media guard's own answer, naming what was asked for
        assert error["param"] == "name" and error["message"] == f"no media '{name}'", error


# --- T9: client disconnects -----------------------------------------------------------------------
def test_t9_stream_disconnect_aborts_the_generation() -> None:
    engine = ScriptedEngine(replies=[Reply(["x"] * 400, delay=0.05)])
    with fake_server(engine) as url:
        with (
            httpx.Client(timeout=10) as client,
            client.stream(
                "POST",
                url + "/v1/chat/completions",
                json={"model": FAKE, "messages": USER, "stream": True},
            ) as response,
        ):
            for line in response.iter_lines():
                if '"content":"x"' in line:
                    break
        assert wait_for(lambda: engine.records[0].closed, 2.0), "generation not aborted"
        emitted = engine.records[0].emitted
        time.sleep(0.5)
        assert engine.records[0].emitted <= emitted + 1
        assert engine.records[0].emitted < 100
        assert engine.admitted == 0
        # The slot is free: the next request is served normally.
        response = httpx.post(
            url + "/v1/chat/completions", json={"model": FAKE, "messages": USER}, timeout=10
        )
    assert response.status_code == 200


def test_t9_non_stream_disconnect_aborts_the_generation() -> None:
    engine = ScriptedEngine(replies=[Reply(["x"] * 400, delay=0.05)])
    with fake_server(engine) as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                url + "/v1/chat/completions",
                json={"model": FAKE, "messages": USER},
                timeout=httpx.Timeout(10, read=0.5),
            )
        assert wait_for(lambda: bool(engine.records) and engine.records[0].closed, 2.5)
        emitted = engine.records[0].emitted
        time.sleep(0.5)
        assert engine.records[0].emitted <= emitted + 1
        assert engine.admitted == 0


def test_t9_disconnect_aborts_every_choice() -> None:
    engine = ScriptedEngine(replies=[Reply(["x"] * 400, delay=0.05) for _ in range(3)])
    body = {"model": FAKE, "messages": USER, "stream": True, "n": 3}
    with fake_server(engine) as url:
        with (
            httpx.Client(timeout=10) as client,
            client.stream("POST", url + "/v1/chat/completions", json=body) as response,
        ):
            for line in response.iter_lines():
                if '"content":"x"' in line:
                    break
        assert wait_for(lambda: all(r.closed for r in engine.records), 2.0)
        assert len(engine.records) == 3
        assert engine.admitted == 0
        assert all(r.emitted < 100 for r in engine.records)


@slow
def test_t9_real_stream_disconnect_frees_the_model(real: KaiyuanServer) -> None:
    budget = CONTEXT - 16
    body = {
        "model": MODEL,
        "prompt": "Once upon a time",
        "max_tokens": budget,
        "logit_bias": NO_EOS,
        "stream": True,
    }
    arrivals: list[float] = []
    with (
        httpx.Client(timeout=60) as client,
        client.stream("POST", real.url + "/v1/completions", json=body) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                arrivals.append(time.monotonic())
                if len(arrivals) == 9:
                    break
    assert len(arrivals) == 9
    # The follow-up waits behind the first generation unless it was aborted; measure this
    # machine's speed right now to know how long that wait would be.
    per_token = (arrivals[-1] - arrivals[0]) / 8
    left_if_not_aborted = (budget - 9) * per_token
    response, elapsed = timed(
        lambda: httpx.post(
            real.url + "/v1/completions",
            json={"model": MODEL, "prompt": "Hi", "max_tokens": 1},
            timeout=120,
        )
    )
    assert response.status_code == 200, response.text
    assert elapsed < max(1.5, 0.4 * left_if_not_aborted), (elapsed, left_if_not_aborted)


# --- T10: overload --------------------------------------------------------------------------------
def test_t10_overflow_gets_fast_503_and_admitted_ones_finish() -> None:
    engine = ScriptedEngine(capacity=2)
    engine.enqueue(*(Reply(list("abcdefghij"), delay=0.1) for _ in range(6)))
    barrier = threading.Barrier(6)

    def call(_: int) -> tuple[httpx.Response, float]:
        barrier.wait()
        return timed(
            lambda: httpx.post(
                url + "/v1/chat/completions",
                json={"model": FAKE, "messages": USER},
                timeout=20,
            )
        )

    with fake_server(engine, retry_after=2) as url, ThreadPoolExecutor(6) as pool:
        results = list(pool.map(call, range(6)))
    ok = [r for r, _ in results if r.status_code == 200]
    rejected = [(r, t) for r, t in results if r.status_code != 200]
    assert len(ok) == 2
    assert len(rejected) == 4
    answered = min(t for r, t in results if r.status_code == 200)  # 10 pieces 0.1 s apart
    for response, elapsed in rejected:
        assert_envelope(response, 503, "server_overloaded")
        assert response.headers["Retry-After"] == "2"
        assert elapsed < answered  # refused at once, not queued behind an admitted one
    for response in ok:
        assert response.json()["choices"][0]["message"]["content"] == "abcdefghij"
    assert engine.admitted == 0
    assert len(engine.records) == 2


@slow
def test_t10_real_server_queue_of_one(real: KaiyuanServer) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Tell me a story."}],
        "max_tokens": 32,
        "logit_bias": NO_EOS,
        "stream": True,
    }
    barrier = threading.Barrier(4)

    def call(_: int) -> tuple[int, float, dict[str, str], list[Any]]:
        with httpx.Client(timeout=120) as client:
            barrier.wait()
            start = time.monotonic()
            with client.stream("POST", real.url + "/v1/chat/completions", json=body) as response:
                elapsed = time.monotonic() - start
                if response.status_code != 200:
                    response.read()
                    return response.status_code, elapsed, dict(response.headers), [response]
                return 200, elapsed, dict(response.headers), sse_events(response)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(call, range(4)))
    admitted = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] != 200]
    assert len(admitted) == 2, [r[0] for r in results]
    assert len(refused) == 2
    for status, elapsed, headers, (response,) in refused:
        assert status == 503
        assert_envelope(response, 503, "server_overloaded")
        assert int(headers["retry-after"]) >= 1
        assert elapsed < FAST
    for _, _, _, events in admitted:
        assert events[-1] == "[DONE]"
        chunks = events[:-1]
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        assert sum(1 for c in chunks if c["choices"][0]["delta"].get("content")) >= 16
    still_serves(real.url)


# --- T11: dead and silent engines -----------------------------------------------------------------
def test_t11_silent_engine_non_stream_is_504() -> None:
    engine = ScriptedEngine(replies=[Reply(list("abc"), hang_after=1)])
    with fake_server(engine, stall_timeout=0.5) as url:
        response, elapsed = timed(
            lambda: httpx.post(
                url + "/v1/chat/completions", json={"model": FAKE, "messages": USER}, timeout=10
            )
        )
    assert_envelope(response, 504, "engine_timeout")
    assert elapsed < 5
    assert engine.admitted == 0
    assert engine.records[0].closed


def test_t11_silent_engine_stream_ends_with_an_error_event() -> None:
    engine = ScriptedEngine(replies=[Reply(list("abc"), hang_after=1)])
    with fake_server(engine, stall_timeout=0.5) as url:
        start = time.monotonic()
        status, events = stream_chat(url, {"model": FAKE, "messages": USER, "stream": True})
        elapsed = time.monotonic() - start
    assert status == 200
    assert elapsed < 5
    assert "[DONE]" not in events
    assert events[-1]["error"]["code"] == "engine_timeout"
    assert_no_leak(json.dumps(events[-1]))
    assert engine.admitted == 0


def test_t11_one_silent_choice_fails_the_request_and_frees_all() -> None:
    per_request = [Reply(list("abc")), Reply(list("abc"), hang_after=1), Reply(list("abc"))]
    engine = ScriptedEngine(replies=per_request * 2)  # the same script for both requests
    with fake_server(engine, stall_timeout=0.5) as url:
        response, elapsed = timed(
            lambda: httpx.post(
                url + "/v1/chat/completions",
                json={"model": FAKE, "messages": USER, "n": 3},
                timeout=10,
            )
        )
        status, events = stream_chat(url, {"model": FAKE, "messages": USER, "n": 3, "stream": True})
    assert_envelope(response, 504, "engine_timeout")
    assert elapsed < 5
    assert status == 200
    assert events[-1]["error"]["code"] == "engine_timeout"
    assert engine.admitted == 0
    assert all(r.closed for r in engine.records)


def test_t11_engine_death_mid_stream_turns_health_503() -> None:
    engine = ScriptedEngine(replies=[Reply(list("abcdef"), die_after=3)])
    with fake_server(engine) as url:
        before = httpx.get(url + "/health", timeout=10)
        status, events = stream_chat(url, {"model": FAKE, "messages": USER, "stream": True})
        after = httpx.get(url + "/health", timeout=10)
    assert before.status_code == 200
    assert before.json() == {"status": "ok", "models": {FAKE: "ok"}}
    assert status == 200
    assert "error" in events[-1] and "[DONE]" not in events
    assert after.status_code == 503
    assert after.json() == {"status": "unavailable", "models": {FAKE: "dead"}}


@slow
def test_t11_ready_does_a_real_generation(real: KaiyuanServer) -> None:
    response = httpx.get(real.url + "/ready", timeout=60)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "models": {MODEL: "ok"}}
    health = httpx.get(real.url + "/health", timeout=10)
    assert health.json() == {"status": "ok", "models": {MODEL: "ok"}}


def test_t11_ready_is_503_when_the_engine_hangs() -> None:
    engine = ScriptedEngine(replies=[Reply(["x"], hang_after=0)])
    with fake_server(engine, ready_timeout=0.5) as url:
        response, elapsed = timed(lambda: httpx.get(url + "/ready", timeout=10))
        health = httpx.get(url + "/health", timeout=10)
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["models"][FAKE] != "ok"
    assert elapsed < 5
    assert engine.admitted == 0  # the probe gave its slot back
    assert health.status_code == 200  # alive, merely not generating


def test_t11_ready_with_a_working_fake_is_200_and_generates_one_token() -> None:
    engine = ScriptedEngine()
    with fake_server(engine, ready_timeout=0.5) as url:
        response = httpx.get(url + "/ready", timeout=10)
    assert response.status_code == 200, response.text
    assert [r.params.max_tokens for r in engine.records] == [1]


def test_t11_ready_is_503_when_the_engine_is_dead() -> None:
    # The engine dies mid-stream; like a real dead engine, its next generation fails too.
    engine = ScriptedEngine(replies=[Reply(list("abc"), die_after=1), Reply(["x"], die_after=0)])
    with fake_server(engine, ready_timeout=0.5) as url:
        stream_chat(url, {"model": FAKE, "messages": USER, "stream": True})
        assert not engine.alive
        response = httpx.get(url + "/ready", timeout=10)
    assert response.status_code == 503, response.text
    assert response.json()["models"][FAKE] != "ok"
    assert_no_leak(response.text)
