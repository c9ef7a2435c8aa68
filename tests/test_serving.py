"""Serving-layer behaviour over real loopback sockets, with the scripted fake engine."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from kaiyuan.config import Settings
from kaiyuan.engines.base import (
    EventStream,
    MediaEngine,
    MediaRequest,
    ModelInfo,
    Rules,
    SamplingParams,
)
from kaiyuan.engines.pool import EnginePool
from kaiyuan.errors import Overloaded
from kaiyuan.server import create_app
from tests.fakes import Reply, ScriptedEngine
from tests.harness import serve_app

MODEL = "fake-model"
USER = [{"role": "user", "content": "hi"}]


@contextlib.contextmanager
def serving(*engines: ScriptedEngine, **settings: Any) -> Iterator[httpx.Client]:
    """An httpx client bound to a fresh app serving ``engines`` (default: one fake)."""
    app = create_app(Settings(**settings), EnginePool(engines or [ScriptedEngine()]))
    with serve_app(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def chat(client: httpx.Client, **fields: Any) -> httpx.Response:
    return client.post("/v1/chat/completions", json={"model": MODEL, "messages": USER, **fields})


def prompt_text(engine: ScriptedEngine, index: int = -1) -> str:
    """The fake tokenizes one token per character, so its prompt decodes exactly."""
    return "".join(map(chr, engine.records[index].prompt))


def assert_error(
    response: httpx.Response, status: int, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if status < 500:
        assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return dict(error)


def sse_events(response: httpx.Response) -> list[Any]:
    """The decoded ``data:`` payloads of a stream, with ``[DONE]`` kept as the string."""
    events: list[Any] = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


# --- validation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"n": 0}, "n"),
        ({"n": 129}, "n"),
        ({"stop": ""}, "stop"),
        ({"stop": ["a"] * 17}, "stop"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": -1}, "max_completion_tokens"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"model": ""}, "model"),
        ({"chat_template": "{{ 1 }}"}, "chat_template"),
        ({"chat_template_kwargs": {"tools": "{{ 1 }}"}}, "chat_template_kwargs.tools"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
    ],
)
def test_validation_errors_are_400_naming_the_field(fields: dict[str, Any], param: str) -> None:
    engine = ScriptedEngine()
    with serving(engine) as client:
        response = chat(client, **fields)
    error = assert_error(response, 400, param=param)
    assert param.split("[")[0] in error["message"]
    assert engine.records == []


def test_missing_required_field_names_it() -> None:
    with serving() as client:
        response = client.post("/v1/chat/completions", json={"model": MODEL})
    assert_error(response, 400, param="messages")


def test_logit_bias_key_must_be_a_token_id() -> None:
    engine = ScriptedEngine()
    with serving(engine) as client:
        response = chat(client, logit_bias={"banana": 5})
    assert_error(response, 400, param="logit_bias")
    assert engine.records == []


@pytest.mark.parametrize(
    "body",
    [b'{"model": "fake-model", "messages": [', b"not json at all", b'{"model": NaN}', b"\xff\xfe"],
)
def test_malformed_json_is_400(body: bytes) -> None:
    with serving() as client:
        response = client.post(
            "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"}
        )
    assert_error(response, 400)


def test_empty_body_is_400() -> None:
    with serving() as client:
        response = client.post(
            "/v1/chat/completions", content=b"", headers={"Content-Type": "application/json"}
        )
        assert_error(response, 400)
        response = client.post("/v1/completions")
        assert_error(response, 400)


def test_json_array_body_is_400() -> None:
    with serving() as client:
        response = client.post("/v1/chat/completions", json=[{"model": MODEL}])
    assert_error(response, 400)


# --- models ---------------------------------------------------------------------------------------
def test_unknown_model_is_404_and_never_falls_back() -> None:
    engine = ScriptedEngine()
    with serving(engine) as client:
        response = chat(client, model="gpt-4o")
        assert_error(response, 404, param="model", code="model_not_found")
        assert "gpt-4o" in response.json()["error"]["message"]
        response = client.post("/v1/completions", json={"model": "gpt-4o", "prompt": "x"})
        assert_error(response, 404, code="model_not_found")
        response = client.get("/v1/models/gpt-4o")
        assert_error(response, 404, code="model_not_found")
    assert engine.records == []


def test_models_listing_and_lookup() -> None:
    with serving(ScriptedEngine(), ScriptedEngine("other/model", context_length=999)) as client:
        listing = client.get("/v1/models").json()
        assert listing["object"] == "list"
        assert [m["id"] for m in listing["data"]] == [MODEL, "other/model"]
        one = client.get("/v1/models/other/model").json()
    assert one["id"] == "other/model"
    assert one["object"] == "model"
    assert one["context_length"] == 999


def test_model_without_chat_template_refuses_chat_but_completes() -> None:
    engine = ScriptedEngine(chat_template=None)
    with serving(engine) as client:
        assert_error(chat(client), 400, param="model")
        response = client.post("/v1/completions", json={"model": MODEL, "prompt": "x"})
    assert response.status_code == 200, response.text


# --- messages -------------------------------------------------------------------------------------
def test_developer_role_is_mapped_to_system() -> None:
    engine = ScriptedEngine()
    messages = [
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": "hi"},
    ]
    with serving(engine) as client:
        response = chat(client, messages=messages)
    assert response.status_code == 200, response.text
    prompt = prompt_text(engine)
    assert "<|im_start|>system\nAnswer in French.<|im_end|>" in prompt
    assert "developer" not in prompt


def test_text_content_parts_are_joined() -> None:
    engine = ScriptedEngine()
    content = [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]
    with serving(engine) as client:
        response = chat(client, messages=[{"role": "user", "content": content}])
    assert response.status_code == 200, response.text
    assert "<|im_start|>user\nfirst\nsecond<|im_end|>" in prompt_text(engine)


def test_image_part_is_400_naming_the_models_capabilities() -> None:
    engine = ScriptedEngine()
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    with serving(engine) as client:
        response = chat(client, messages=[{"role": "user", "content": content}])
    error = assert_error(response, 400, param="messages[0].content[1]")
    assert "image" in error["message"]
    assert "chat, completion" in error["message"]
    assert engine.records == []


# --- sampling parameters reach the engine ---------------------------------------------------
def test_n_choices_each_get_their_own_generation_and_seed() -> None:
    engine = ScriptedEngine(replies=[Reply(list("one")), Reply(list("two")), Reply(list("three"))])
    with serving(engine) as client:
        response = chat(client, n=3, seed=7, max_tokens=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert sorted(c["message"]["content"] for c in body["choices"]) == ["one", "three", "two"]
    assert [r.params.seed for r in engine.records] == [7, 8, 9]
    assert body["usage"]["completion_tokens"] == 3 + 3 + 5
    assert body["usage"]["prompt_tokens"] == len(engine.records[0].prompt)
    assert all(r.closed for r in engine.records)
    assert engine.admitted == 0


def test_n_without_seed_leaves_seeds_unset() -> None:
    engine = ScriptedEngine()
    with serving(engine) as client:
        response = chat(client, n=2)
    assert response.status_code == 200, response.text
    assert [r.params.seed for r in engine.records] == [None, None]


def test_completions_n_seeds() -> None:
    engine = ScriptedEngine()
    with serving(engine) as client:
        response = client.post(
            "/v1/completions", json={"model": MODEL, "prompt": "x", "n": 2, "seed": 40}
        )
    assert response.status_code == 200, response.text
    assert [r.params.seed for r in engine.records] == [40, 41]


def test_n_over_server_limit_is_400_and_admits_nothing() -> None:
    engine = ScriptedEngine()
    with serving(engine, max_n=2) as client:
        error = assert_error(chat(client, n=3), 400, param="n")
    assert "2" in error["message"]
    assert engine.records == []


def test_n_over_engine_capacity_admits_none() -> None:
    engine = ScriptedEngine(capacity=2)
    with serving(engine) as client:
        response = chat(client, n=3)
    assert_error(response, 503, code="server_overloaded")
    assert "Retry-After" in response.headers
    assert engine.admitted == 0
    assert all(r.closed for r in engine.records)


def test_sampling_params_are_passed_through() -> None:
    engine = ScriptedEngine()
    with serving(engine) as client:
        response = chat(
            client,
            temperature=0.3,
            top_p=0.9,
            presence_penalty=0.5,
            frequency_penalty=-0.5,
            logit_bias={"65": 10},
            max_tokens=5,
        )
    assert response.status_code == 200, response.text
    params = engine.records[0].params
    assert (params.temperature, params.top_p) == (0.3, 0.9)
    assert (params.presence_penalty, params.frequency_penalty) == (0.5, -0.5)
    assert params.logit_bias == ((65, 10.0),)
    assert params.max_tokens == 5
    assert params.logprobs is None


def test_logprobs_request_reaches_engine() -> None:
    engine = ScriptedEngine()
    with serving(engine) as client:
        assert chat(client, logprobs=True, top_logprobs=3).status_code == 200
        assert chat(client, logprobs=True).status_code == 200
    assert [r.params.logprobs for r in engine.records] == [3, 0]


@pytest.mark.parametrize(("stop", "expected"), [("END", ("END",)), (["a", "bc"], ("a", "bc"))])
def test_stop_strings_are_passed_to_the_engine(stop: Any, expected: tuple[str, ...]) -> None:
    engine = ScriptedEngine()
    with serving(engine) as client:
        response = chat(client, stop=stop)
    assert response.status_code == 200, response.text
    assert engine.records[0].params.stop == expected


def test_max_completion_tokens_is_preferred_over_max_tokens() -> None:
    engine = ScriptedEngine(replies=[Reply(list("abcdefgh"))])
    with serving(engine) as client:
        response = chat(client, max_tokens=7, max_completion_tokens=3)
    assert response.status_code == 200, response.text
    assert engine.records[0].params.max_tokens == 3
    choice = response.json()["choices"][0]
    assert choice["message"]["content"] == "abc"
    assert choice["finish_reason"] == "length"


def test_default_max_tokens_is_the_remaining_context() -> None:
    engine = ScriptedEngine(context_length=200)
    with serving(engine) as client:
        response = chat(client)
    assert response.status_code == 200, response.text
    record = engine.records[0]
    assert record.params.max_tokens == 200 - len(record.prompt)
    assert response.json()["choices"][0]["finish_reason"] == "stop"


def test_completions_default_max_tokens_is_16() -> None:
    engine = ScriptedEngine()
    with serving(engine) as client:
        response = client.post("/v1/completions", json={"model": MODEL, "prompt": "abc"})
    assert response.status_code == 200, response.text
    assert engine.records[0].params.max_tokens == 16
    assert engine.records[0].prompt == [ord(c) for c in "abc"]


def test_context_overflow_is_400_naming_the_numbers() -> None:
    engine = ScriptedEngine(context_length=100)
    with serving(engine) as client:
        response = client.post(
            "/v1/completions", json={"model": MODEL, "prompt": "x" * 60, "max_tokens": 41}
        )
        error = assert_error(response, 400, code="context_length_exceeded")
        ok = client.post(
            "/v1/completions", json={"model": MODEL, "prompt": "x" * 60, "max_tokens": 40}
        )
    assert "100" in error["message"] and "101" in error["message"]
    assert ok.status_code == 200, ok.text
    assert len(engine.records) == 1


def test_token_id_prompt_outside_vocabulary_is_400() -> None:
    engine = ScriptedEngine()
    with serving(engine) as client:
        response = client.post("/v1/completions", json={"model": MODEL, "prompt": [65, -1]})
        assert_error(response, 400, param="prompt")
        response = client.post("/v1/completions", json={"model": MODEL, "prompt": [[65], [66]]})
    assert response.status_code == 200, response.text
    assert [r.prompt for r in engine.records] == [[65], [66]]
    assert response.json()["usage"]["prompt_tokens"] == 2


def test_empty_text_prompt_is_400() -> None:
    with serving() as client:
        response = client.post("/v1/completions", json={"model": MODEL, "prompt": ""})
    assert_error(response, 400, param="prompt")


def test_completions_echo() -> None:
    engine = ScriptedEngine(replies=[Reply(list("!!"))])
    with serving(engine) as client:
        response = client.post(
            "/v1/completions", json={"model": MODEL, "prompt": "Hi", "echo": True}
        )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["text"] == "Hi!!"


# --- streaming ------------------------------------------------------------------------------------
def test_stream_chunks_role_first_then_content_then_done() -> None:
    engine = ScriptedEngine(replies=[Reply(["Hel", "lo"])])
    with (
        serving(engine) as client,
        client.stream(
            "POST", "/v1/chat/completions", json={"model": MODEL, "messages": USER, "stream": True}
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "Hello"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in chunks)


def test_include_usage_adds_a_final_usage_chunk() -> None:
    engine = ScriptedEngine(replies=[Reply(list("abc"))])
    body = {
        "model": MODEL,
        "messages": USER,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with (
        serving(engine) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    *chunks, last = events[:-1]
    assert last["choices"] == []
    prompt_tokens = len(engine.records[0].prompt)
    assert last["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 3,
        "total_tokens": prompt_tokens + 3,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    assert all(c["usage"] is None for c in chunks)


def test_streamed_n_choices_are_indexed() -> None:
    engine = ScriptedEngine(replies=[Reply(list("aa")), Reply(list("bbb"))])
    with (
        serving(engine) as client,
        client.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": MODEL, "messages": USER, "stream": True, "n": 2},
        ) as response,
    ):
        events = sse_events(response)
    texts = {0: "", 1: ""}
    finishes = {}
    for chunk in events[:-1]:
        choice = chunk["choices"][0]
        texts[choice["index"]] += choice["delta"].get("content") or ""
        if choice["finish_reason"]:
            finishes[choice["index"]] = choice["finish_reason"]
    assert texts == {0: "aa", 1: "bbb"}
    assert finishes == {0: "stop", 1: "stop"}


def test_completions_stream_with_usage() -> None:
    engine = ScriptedEngine(replies=[Reply(list("xyz"))])
    body = {
        "model": MODEL,
        "prompt": "ab",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with serving(engine) as client, client.stream("POST", "/v1/completions", json=body) as response:
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    assert all(e["object"] == "text_completion" for e in events[:-1])
    assert "".join(e["choices"][0]["text"] for e in events[:-2]) == "xyz"
    assert events[-2]["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}


def test_official_client_streams_and_completes() -> None:
    engine = ScriptedEngine(replies=[Reply(["Hi", " there"]), Reply(["Bye"])])
    app = create_app(Settings(), EnginePool([engine]))
    with serve_app(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        done = client.completions.create(model=MODEL, prompt="x", max_tokens=4)
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], temperature=5
            )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hi there"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
    assert done.choices[0].text == "Bye"
    assert caught.value.status_code == 400


# --- isolation ------------------------------------------------------------------------------------
def test_two_apps_in_one_process_do_not_share_state() -> None:
    first, second = ScriptedEngine("model-a"), ScriptedEngine("model-b")
    first.enqueue(Reply(list("from a")))
    second.enqueue(Reply(list("from b")))
    app_a = create_app(Settings(max_n=1), EnginePool([first]))
    app_b = create_app(Settings(max_n=4), EnginePool([second]))
    with (
        serve_app(app_a) as url_a,
        serve_app(app_b) as url_b,
        httpx.Client(timeout=10) as client,
    ):
        models_a = [m["id"] for m in client.get(url_a + "/v1/models").json()["data"]]
        models_b = [m["id"] for m in client.get(url_b + "/v1/models").json()["data"]]
        body = {"messages": USER}
        wrong = client.post(url_a + "/v1/chat/completions", json={"model": "model-b", **body})
        reply_a = client.post(url_a + "/v1/chat/completions", json={"model": "model-a", **body})
        reply_b = client.post(url_b + "/v1/chat/completions", json={"model": "model-b", **body})
        n_a = client.post(url_a + "/v1/chat/completions", json={"model": "model-a", "n": 2, **body})
        n_b = client.post(url_b + "/v1/chat/completions", json={"model": "model-b", "n": 2, **body})
    assert (models_a, models_b) == (["model-a"], ["model-b"])
    assert_error(wrong, 404, code="model_not_found")
    assert reply_a.json()["choices"][0]["message"]["content"] == "from a"
    assert reply_b.json()["choices"][0]["message"]["content"] == "from b"
    assert_error(n_a, 400, param="n")  # app A's own max_n
    assert n_b.status_code == 200, n_b.text
    assert len(first.records) == 1 and len(second.records) == 3
    assert app_a.state.pool is not app_b.state.pool


# --- settings reach the serving layer ------------------------------------------------------------
class BusyEngine(ScriptedEngine):
    """Always full, without an opinion on Retry-After (as LlamaCppEngine raises it)."""

    def generate(self, prompt: list[int], params: SamplingParams, media: Any = None) -> EventStream:
        raise Overloaded("busy")


def test_configured_retry_after_is_sent_with_503() -> None:
    with serving(BusyEngine(), retry_after=7) as client:
        response = chat(client)
    assert_error(response, 503, code="server_overloaded")
    assert response.headers["Retry-After"] == "7"


def test_body_cap_setting_is_enforced() -> None:
    engine = ScriptedEngine(context_length=8192)
    with serving(engine, max_body_bytes=4096) as client:
        small = chat(client, messages=[{"role": "user", "content": "x" * 3000}], max_tokens=1)
        large = chat(client, messages=[{"role": "user", "content": "x" * 5000}], max_tokens=1)
    assert small.status_code == 200, small.text
    error = assert_error(large, 413, code="payload_too_large")
    assert "4096" in error["message"]
    assert len(engine.records) == 1


class StillPipeline(MediaEngine):
    """A loaded media pipeline that is alive or not; it never generates here."""

    rules = Rules(multiple=8, default_size=(64, 64), video=False)
    takes_image = needs_image = False

    def __init__(self, model_id: str, alive: bool) -> None:
        self.info = ModelInfo(model_id, "fake", 0, None, capabilities=("image",))
        self._alive = alive

    @property
    def in_flight(self) -> int:
        return 0

    @property
    def alive(self) -> bool:
        return self._alive

    async def aclose(self) -> None:
        self._alive = False

    def generate_media(self, request: MediaRequest) -> list[Any]:
        raise AssertionError("readiness must not generate an image")


def test_ready_counts_a_live_media_pipeline_as_ready() -> None:
    engines = [ScriptedEngine(), StillPipeline("painter", True)]
    app = create_app(Settings(), EnginePool(engines))
    with serve_app(app) as url:
        ready = httpx.get(url + "/ready", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["models"] == {MODEL: "ok", "painter": "ok"}
    dead = create_app(Settings(), EnginePool([StillPipeline("painter", False)]))
    with serve_app(dead) as url:
        ready = httpx.get(url + "/ready", timeout=10)
        assert ready.status_code == 503 and ready.json()["models"] == {"painter": "dead"}
