"""No request may crash or stall the server (security guide T21, T22, T24, issue 14 findings).

Against a real `kaiyuan serve` on the bundled model (llama.cpp's grammar parser is what
crashed): hostile schemas, huge inputs, bad text, slow clients and foreign Host headers, each
while `/health` is probed from another thread.
"""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kaiyuan.chat import bounds, grammar
from kaiyuan.chat.template import ChatTemplate
from kaiyuan.config import Settings
from kaiyuan.engines.pool import EnginePool
from kaiyuan.errors import InvalidRequest, TemplateError
from kaiyuan.server import create_app
from tests.conftest import MODEL
from tests.fakes import ScriptedEngine
from tests.harness import KaiyuanServer, serve_app, wait_for

HEADER_TIMEOUT = 2.0
PER_CLIENT = 16


@pytest.fixture(scope="module")
def hard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KaiyuanServer]:
    """Its own server: hostile traffic never shares a server with determinism tests."""
    env = {
        "KAIYUAN_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "KAIYUAN_BODY_TIMEOUT": "2",
        "KAIYUAN_MAX_CONNECTIONS_PER_CLIENT": str(PER_CLIENT),
        "KAIYUAN_ALLOWED_HOSTS": "kaiyuan.lan",
        # A tool's schema is rendered into the prompt: a generated 800-value enum is ~4000
        # prompt tokens, 20 s of prompt processing on 2 idle cores. A 2k context refuses the
        # biggest at once (400) and bounds the rest, so no request nears the client timeout.
        "KAIYUAN_CONTEXT_LENGTH": "2048",
    }
    with KaiyuanServer(home=tmp_path_factory.mktemp("hard"), env=env) as running:
        yield running


class Probe:
    """/health polled from a thread while a test works; latencies in seconds."""

    def __init__(self, url: str) -> None:
        self.url, self.latencies = url, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                assert client.get(self.url + "/health").status_code == 200
                self.latencies.append(time.monotonic() - started)
                time.sleep(0.02)

    def __enter__(self) -> Probe:
        self._thread.start()
        # Warm up: the first probe pays for its connection and whatever the previous test
        # left running; only probes taken during the test's own request count.
        deadline = time.monotonic() + 30
        while len(self.latencies) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.latencies.clear()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def p99(self) -> float:
        ordered = sorted(self.latencies) or [0.0]
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


# The figure the issue asks for is 100 ms at p99; benchmarks/hardening.py records it. The test
# allows far more so a loaded 2-core machine cannot fail it, and still catches a blocked loop
# (which stalled /health for 3.5 to 35 s).
HEALTH_P99 = 2.0


def chat(server: KaiyuanServer, **body: Any) -> httpx.Response:
    payload = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    payload.update(body)
    return httpx.post(server.url + "/v1/chat/completions", json=payload, timeout=120)


def schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def assert_400(response: httpx.Response, param: str, words: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and words in error["message"], error


# --- finding 1 and 2: schemas that crashed or stalled llama.cpp -------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "string", "minLength": 20000}, "minLength 20000; the limit is 1000"),
        ({"type": "string", "pattern": "^a{0,30000}$"}, "at most 100 times"),
        ({"type": "array", "items": {"type": "integer"}, "minItems": 50000}, "minItems"),
        ({"enum": [f"value-{i}" for i in range(200_000)]}, "enum of 200000 values"),
    ],
)
def test_exploding_schemas_are_a_fast_400(
    hard: KaiyuanServer, schema: dict[str, Any], words: str
) -> None:
    with Probe(hard.url) as probe:
        started = time.monotonic()
        response = chat(hard, response_format=schema_format(schema))
        took = time.monotonic() - started
    assert_400(response, "response_format.json_schema.schema", words)
    assert took < 10, took
    assert probe.p99() < HEALTH_P99, probe.latencies
    assert chat(hard).status_code == 200  # still serving


@pytest.mark.slow
def test_exploding_tool_schema_is_a_400_on_chat_and_responses(hard: KaiyuanServer) -> None:
    params = {"type": "object", "properties": {"a": {"type": "string", "minLength": 20000}}}
    tool = {"type": "function", "function": {"name": "f", "parameters": params}}
    response = chat(hard, tools=[tool], tool_choice="required")
    assert_400(response, "tools[0].function.parameters", "minLength 20000")
    responses = httpx.post(
        hard.url + "/v1/responses",
        json={"model": MODEL, "input": "hi", "max_output_tokens": 16, "tool_choice": "required",
              "tools": [{"type": "function", "name": "f", "parameters": params}]},
        timeout=120,
    )  # fmt: skip
    assert responses.status_code == 400, responses.text
    assert "minLength 20000" in responses.json()["error"]["message"]
    assert httpx.get(hard.url + "/health").status_code == 200


@pytest.mark.slow
def test_huge_upper_counts_mean_unbounded(hard: KaiyuanServer) -> None:
    """Claude Code's tools declare maxLength 524288: an upper count past the limit is dropped
    from the grammar (max_tokens bounds the answer), fast, for tools and response_format."""
    text = {"type": "string", "maxLength": 524288}
    many = {"type": "array", "items": {"type": "integer"}, "maxItems": 100000}
    params = {"type": "object", "properties": {"a": text, "b": many}, "required": ["a", "b"]}
    tool = {"type": "function", "function": {"name": "f", "parameters": params}}
    with Probe(hard.url) as probe:
        started = time.monotonic()
        forced = chat(hard, tools=[tool], tool_choice="required", max_tokens=24)
        shaped = chat(hard, response_format=schema_format(text), max_tokens=8)
        took = time.monotonic() - started
    assert forced.status_code == 200, forced.text
    assert shaped.status_code == 200, shaped.text
    assert took < 30 and probe.p99() < HEALTH_P99


@pytest.mark.slow
def test_bounded_long_string_and_big_enum_are_served(hard: KaiyuanServer) -> None:
    """Within the limits, the same shapes work: a 1000-character string, a 4096-value enum."""
    long = chat(hard, response_format=schema_format({"type": "string", "maxLength": 1000}))
    assert long.status_code == 200, long.text
    values = [f"v{i:04d}" for i in range(bounds.MAX_ENUM)]
    with Probe(hard.url) as probe:
        started = time.monotonic()
        picked = chat(hard, response_format=schema_format({"enum": values}), max_tokens=12)
        took = time.monotonic() - started
    assert picked.status_code == 200, picked.text
    assert json.loads(picked.json()["choices"][0]["message"]["content"]) in values
    assert took < 20 and probe.p99() < HEALTH_P99  # the prefix tree keeps each token cheap


def _schemas() -> st.SearchStrategy[dict[str, Any] | int]:
    counts = st.integers(min_value=0, max_value=50_000)
    leaves = st.one_of(
        st.builds(lambda n: {"type": "string", "maxLength": n}, counts),
        st.builds(
            lambda lo, n: {"type": "string", "minLength": lo, "maxLength": lo + n},
            st.integers(0, 2000),
            st.integers(0, 2000),
        ),
        st.builds(
            lambda n, m: {"type": "string", "pattern": f"^(ab|c){{{n},{n + m}}}x{{2}}$"},
            st.integers(0, 3000),
            st.integers(0, 3000),
        ),
        st.builds(lambda n: {"enum": [f"e{i}" for i in range(n)]}, st.integers(1, 20_000)),
        st.just({"type": "integer"}),
        st.just({"type": "boolean"}),
        st.just({}),
    )

    def extend(inner: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
        return st.one_of(
            st.builds(lambda s, n: {"type": "array", "items": s, "maxItems": n}, inner, counts),
            st.builds(
                lambda props: {
                    "type": "object",
                    "properties": props,
                    "required": sorted(props)[:1],
                },
                st.dictionaries(st.sampled_from("abcdefgh"), inner, max_size=4),
            ),
            st.builds(lambda xs: {"anyOf": xs}, st.lists(inner, min_size=1, max_size=4)),
        )

    # Deep ones travel as their depth: hypothesis cannot print a dict nested 5000 deep.
    deep = st.integers(min_value=1, max_value=5000)
    return st.one_of(st.recursive(leaves, extend, max_leaves=12), deep)


def _nested_text(depth: int) -> str:
    return '{"type": "array", "items": ' * depth + '{"type": "string"}' + "}" * depth


@pytest.mark.slow
def test_generated_schemas_never_crash_or_stall(hard: KaiyuanServer) -> None:
    """T21: generated schemas (deep, wide, long counts, big enums, counted patterns) through
    response_format and forced tool calls: only 200s and 400s, and /health stays fast."""
    statuses: list[int] = []
    client = httpx.Client(timeout=120)

    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(generated=_schemas(), as_tool=st.booleans())
    def throw(generated: dict[str, Any] | int, as_tool: bool) -> None:
        # A deep schema is written as text: json.dumps cannot nest 5000 levels either.
        schema = json.dumps(generated)
        body: dict[str, Any] = {
            "model": MODEL,
            "max_tokens": 3,
            "messages": [{"role": "user", "content": "hi"}],
        }
        if as_tool:
            params = {"type": "object", "properties": {"x": "@"}, "required": ["x"]}
            body["tools"] = [{"type": "function", "function": {"name": "f", "parameters": params}}]
            body["tool_choice"] = "required"
        else:
            body["response_format"] = schema_format("@")  # type: ignore[arg-type]
        inner = _nested_text(generated) if isinstance(generated, int) else schema
        text = json.dumps(body).replace('"@"', inner)
        response = client.post(
            hard.url + "/v1/chat/completions",
            content=text,
            headers={"content-type": "application/json"},
        )
        statuses.append(response.status_code)
        assert response.status_code in (200, 400), response.text

    with Probe(hard.url) as probe:
        throw()
    client.close()
    assert 200 in statuses and 400 in statuses  # both sides of the limits were reached
    assert probe.p99() < HEALTH_P99, statistics.quantiles(probe.latencies, n=100)
    assert hard.proc is not None and hard.proc.poll() is None


def test_grammar_nesting_counts_groups_not_quoted_parentheses() -> None:
    assert bounds.nesting('root ::= "(((" [()] (a (b)?)?  # ((((\n') == 2
    with pytest.raises(InvalidRequest) as err:
        bounds.check_grammar("root ::= " + "(" * 300 + '"a"' + ")" * 300, "response_format")
    assert "nested more than 256" in err.value.message


def test_enum_becomes_a_prefix_tree() -> None:
    """One rule per branching point, so few alternatives are live at each token."""
    gbnf = grammar.for_schema({"enum": ["red", "green", "greenish", 1]}, "response_format")
    rules = dict(line.split(" ::= ", 1) for line in gbnf.strip().splitlines())
    assert rules["root"] == '"\\"" root-1 | "1"'
    assert rules["root-1"] == '"green" root-2 | "red\\""'
    assert rules["root-2"] == '"\\"" | "ish\\""'


# --- finding 3: big inputs and runaway templates ------------------------------------------------
@pytest.mark.slow
def test_a_million_prompts_is_a_fast_400(hard: KaiyuanServer) -> None:
    body = {"model": MODEL, "prompt": ["a"] * 1_000_000, "max_tokens": 1}
    with Probe(hard.url) as probe:
        started = time.monotonic()
        response = httpx.post(hard.url + "/v1/completions", json=body, timeout=60)
        took = time.monotonic() - started
    assert response.status_code == 400 and response.json()["error"]["param"] == "prompt"
    assert took < 5 and probe.p99() < HEALTH_P99


@pytest.mark.slow
@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
def test_a_15_mb_prompt_is_refused_without_stalling_others(hard: KaiyuanServer, route: str) -> None:
    text = "word " * (3 * 2**20)
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 1}
    if route == "/v1/completions":
        body["prompt"] = text
    else:
        body["messages"] = [{"role": "user", "content": text}]
    with Probe(hard.url) as probe:
        response = httpx.post(hard.url + route, json=body, timeout=60)
        small = chat(hard)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert small.status_code == 200 and probe.p99() < HEALTH_P99


RUNAWAY = (
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    "{% for m in messages %}{{ m.content }}{% endfor %}"
)


def test_a_runaway_template_is_stopped_within_seconds() -> None:
    engine = ScriptedEngine("runaway", chat_template=RUNAWAY)
    with serve_app(create_app(Settings(), EnginePool([engine]))) as url, Probe(url) as probe:
        started = time.monotonic()
        response = httpx.post(
            url + "/v1/chat/completions",
            json={"model": "runaway", "messages": [{"role": "user", "content": "hi"}]},
            timeout=60,
        )
        took = time.monotonic() - started
    assert response.status_code == 500, response.text
    assert response.json()["error"]["code"] == "chat_template_error"
    assert took < 5 and probe.p99() < HEALTH_P99


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'a' * 1000000000 }}",
        "{{ [1] * 1000000000 }}",
        "{% set x = 10 %}{{ x ** 100000000 }}",
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    ],
)
def test_templates_cannot_build_huge_values(source: str) -> None:
    started = time.monotonic()
    with pytest.raises(TemplateError):
        ChatTemplate(source).render([{"role": "user", "content": "hi"}], max_chars=10_000)
    assert time.monotonic() - started < 3


# --- finding 4: bad input is a 400 -------------------------------------------------------------
@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    engine = ScriptedEngine("fake-model", context_length=4096)
    with serve_app(create_app(Settings(), EnginePool([engine]))) as url:
        yield url


@pytest.mark.parametrize("key", ["²", "--5", "9" * 5000, "1e3", " 5", "٣"])
def test_odd_logit_bias_keys_are_400(fake_url: str, key: str) -> None:
    for route, body in [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/completions", {"prompt": "hi"}),
    ]:
        payload = {"model": "fake-model", "logit_bias": {key: 5}, "max_tokens": 2, **body}
        response = httpx.post(fake_url + route, json=payload)
        assert_400(response, "logit_bias", "is not a token id")


LONE = "\\ud800"  # as it travels in JSON text


@pytest.mark.parametrize(
    ("route", "raw", "param"),
    [
        ("/v1/chat/completions",
         '{"model": "fake-model", "messages": [{"role": "user", "content": "a%sb"}]}',
         "messages[0].content"),
        ("/v1/completions", '{"model": "fake-model", "prompt": "x%s"}', "prompt"),
        ("/v1/chat/completions",
         '{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "tools": '
         '[{"type": "function", "function": {"name": "f", "description": "%s"}}]}',
         "tools[0].function.description"),
        ("/v1/responses", '{"model": "fake-model", "input": [{"role": "user", "content": "%s"}]}',
         "input[0].content"),
        ("/v1/embeddings", '{"model": "fake-model", "input": ["ok", "%s"]}', "input[1]"),
        ("/v1/chat/completions", '{"model": "fake-model", "messages": [{"role": "user", '
         '"content": "\\udc00 low first"}]}', "messages[0].content"),
    ],
)  # fmt: skip
def test_lone_surrogates_are_400_naming_the_field(
    fake_url: str, route: str, raw: str, param: str
) -> None:
    body = raw.replace("%s", LONE)
    response = httpx.post(
        fake_url + route, content=body, headers={"content-type": "application/json"}
    )
    assert_400(response, param, "lone UTF-16 surrogate")


def test_a_valid_surrogate_pair_is_text(fake_url: str) -> None:
    body = '{"model": "fake-model", "messages": [{"role": "user", "content": "\\ud83d\\ude00"}]}'
    response = httpx.post(
        fake_url + "/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text


# --- finding 8: slow clients ----------------------------------------------------------------
def _slow_client(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
    return sock


def _closed(sock: socket.socket) -> bool:
    try:
        sock.settimeout(0.05)
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


@pytest.mark.slow
def test_slow_clients_are_dropped_and_others_still_served(hard: KaiyuanServer) -> None:
    sockets = [_slow_client(hard.port) for _ in range(300)]
    try:
        # Past the per-address cap, connections are cut at once...
        assert wait_for(lambda: sum(map(_closed, sockets)) >= 300 - PER_CLIENT, 5)
        # ...and another client (from 127.0.0.2, loopback too) is served meanwhile.
        transport = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(transport=transport, timeout=10) as other:
            assert other.get(hard.url + "/health").status_code == 200
        # ...and the rest go when the header deadline passes.
        assert wait_for(lambda: all(map(_closed, sockets)), HEADER_TIMEOUT + 3)
    finally:
        for sock in sockets:
            sock.close()
    assert httpx.get(hard.url + "/health").status_code == 200


@pytest.mark.slow
def test_a_body_that_never_arrives_is_408(hard: KaiyuanServer) -> None:
    with socket.create_connection(("127.0.0.1", hard.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"model"'
        )
        started = time.monotonic()
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        took = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 408") and b"request_timeout" in reply
    assert took < 6


# --- finding 9: DNS rebinding -----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("host", "served"),
    [
        ("rebind.attacker.example", False),
        ("rebind.attacker.example:8000", False),
        ("127.0.0.1.attacker.example", False),
        ("localhost", True),
        ("LOCALHOST:1234", True),
        ("127.0.0.1", True),
        ("[::1]:80", True),
        ("app.localhost", True),
        ("kaiyuan.lan", True),  # listed in allowed_hosts
        ("192.168.1.5:8000", True),  # an IP literal: no name to rebind
        ("[fe80::1]", True),
    ],
)
def test_only_loopback_or_listed_host_names_are_served(
    hard: KaiyuanServer, host: str, served: bool
) -> None:
    for path in ("/v1/models", "/health"):
        response = httpx.get(hard.url + path, headers={"host": host})
        if served:
            assert response.status_code == 200, response.text
        else:
            assert response.status_code == 400
            assert response.json()["error"]["code"] == "host_not_allowed"


def test_host_check_can_be_opened_with_a_star(tmp_path: Path) -> None:
    engine = ScriptedEngine("fake-model")
    app = create_app(Settings(allowed_hosts=["*"]), EnginePool([engine]))
    with serve_app(app) as url:
        response = httpx.get(url + "/v1/models", headers={"host": "any.example"})
    assert response.status_code == 200


@pytest.mark.parametrize("host", ["x/?", "x/#", "127.0.0.1/..", "unknown"])
def test_odd_host_headers_are_refused_before_routing(fake_url: str, host: str) -> None:
    """T2: the decision is made on the Host header as sent, never on a URL rebuilt from it."""
    response = httpx.get(fake_url + "/v1/models", headers={"host": host})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "host_not_allowed"


def test_no_cors_allow_header_for_another_origin(fake_url: str) -> None:
    """T24: a page on another origin gets no CORS grant (nothing is listed by default)."""
    origin = {"origin": "https://attacker.example"}
    for response in (
        httpx.get(fake_url + "/v1/models", headers=origin),
        httpx.options(
            fake_url + "/v1/chat/completions",
            headers={**origin, "access-control-request-method": "POST"},
        ),
    ):
        assert "access-control-allow-origin" not in response.headers


def test_a_deep_tool_schema_with_auto_choice_is_a_400(fake_url: str) -> None:
    """Tools are rendered into the prompt even when no call is forced: bounded first."""
    deep = _nested_text(400)  # json.loads takes it; a recursive walk of it would not
    body = (
        '{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "tools": '
        f'[{{"type": "function", "function": {{"name": "f", "parameters": {deep}}}}}]}}'
    )
    response = httpx.post(
        fake_url + "/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert_400(response, "tools[0].function.parameters", "nested more than 64 levels")
