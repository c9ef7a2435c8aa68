"""Tools, structured output and reasoning: end to end on the bundled model with the official
openai client, and through a scripted engine for what a 135M model will not write on its own
(reasoning, parallel calls, native tool templates)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest

from kaiyuan.chat import grammar
from kaiyuan.config import Settings
from kaiyuan.engines.pool import EnginePool
from kaiyuan.server import create_app
from tests.conftest import MODEL
from tests.fakes import Reply, ScriptedEngine
from tests.harness import KaiyuanServer, serve_app

slow = pytest.mark.slow

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
            },
            "required": ["city", "unit", "days"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string", "maxLength": 40}},
            "required": ["timezone"],
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris for the next 3 days?"}]
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer"},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 30}, "maxItems": 3},
    },
    "required": ["name", "age", "hobbies"],
    "additionalProperties": False,
}


def schema_of(tool: dict[str, Any]) -> dict[str, Any]:
    return tool["function"]["parameters"]


# --- the bundled model, end to end ---------------------------------------------------------------
@slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forced_tool_call_validates_against_its_schema(server: KaiyuanServer, seed: int) -> None:
    reply = server.client().chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required",
        temperature=1.0, seed=seed, max_tokens=200,
    )  # fmt: skip
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    for call in choice.message.tool_calls:
        assert call.id.startswith("call_") and call.type == "function"
        assert call.function.name == "get_weather"
        jsonschema.validate(json.loads(call.function.arguments), schema_of(WEATHER))


@slow
def test_named_tool_choice_gives_exactly_that_call(server: KaiyuanServer) -> None:
    reply = server.client().chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        temperature=0, max_tokens=200,
    )  # fmt: skip
    calls = reply.choices[0].message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].function.name == "get_time"
    jsonschema.validate(json.loads(calls[0].function.arguments), schema_of(TIME))


@slow
def test_required_without_parallel_calls_gives_one_call(server: KaiyuanServer) -> None:
    for seed in range(3):
        reply = server.client().chat.completions.create(
            model=MODEL, messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
            parallel_tool_calls=False, temperature=1.0, seed=seed, max_tokens=200,
        )  # fmt: skip
        calls = reply.choices[0].message.tool_calls
        assert calls is not None and len(calls) == 1
        tool = {"get_weather": WEATHER, "get_time": TIME}[calls[0].function.name]
        jsonschema.validate(json.loads(calls[0].function.arguments), schema_of(tool))


@slow
def test_streamed_tool_call_reassembles_to_valid_json(server: KaiyuanServer) -> None:
    stream = server.client().chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required",
        parallel_tool_calls=False, temperature=0.8, seed=5, max_tokens=200, stream=True,
    )  # fmt: skip
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    fragments = 0
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        for part in delta.tool_calls or []:
            if part.index not in calls:
                # OpenAI's shape: the first fragment carries id, type and the name.
                assert part.id and part.type == "function" and part.function.name
                assert part.function.arguments == ""
                calls[part.index] = {"name": part.function.name, "arguments": ""}
            else:
                assert part.id is None and not part.function.name
                calls[part.index]["arguments"] += part.function.arguments
                fragments += 1
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert list(calls) == [0] and calls[0]["name"] == "get_weather"
    assert fragments >= 2  # arguments arrive in pieces, after the name
    jsonschema.validate(json.loads(calls[0]["arguments"]), schema_of(WEATHER))


@slow
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_json_schema_answer_validates(server: KaiyuanServer, seed: int) -> None:
    reply = server.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Invent a person."}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "person", "schema": PERSON, "strict": True}},
        temperature=1.0, seed=seed, max_tokens=300,
    )  # fmt: skip
    assert reply.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(reply.choices[0].message.content or ""), PERSON)


@slow
def test_json_object_answer_is_a_json_object(server: KaiyuanServer) -> None:
    ask = "Reply with a JSON object with keys name and color for a cat."
    reply = server.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": ask}],
        response_format={"type": "json_object"}, temperature=0.7, seed=0, max_tokens=120,
    )  # fmt: skip
    assert reply.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)


@slow
def test_tool_result_round_trip_is_accepted(server: KaiyuanServer) -> None:
    client = server.client()
    first = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required",
        parallel_tool_calls=False, temperature=0, max_tokens=200,
    )  # fmt: skip
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    result = json.dumps({"temperature": 18, "sky": "sunny"})
    history: list[Any] = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function",
             "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": result},
    ]  # fmt: skip
    second = client.chat.completions.create(
        model=MODEL, messages=history, tools=[WEATHER], temperature=0, max_tokens=30
    )
    assert second.choices[0].finish_reason in ("stop", "length", "tool_calls")
    # The call and its result were rendered into the prompt: it is longer than the question
    # plus the tool prompt by at least the call's and the result's tokens.
    assert second.usage is not None and first.usage is not None
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + 15


@slow
def test_tool_choice_none_answers_in_text(server: KaiyuanServer) -> None:
    reply = server.client().chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="none",
        temperature=0, max_tokens=20,
    )  # fmt: skip
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")


@slow
@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"response_format": {"type": "json_schema",
                               "json_schema": {"name": "x", "schema": {"type": "objekt"}}}},
         "response_format.json_schema.schema"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {
            "name": "bad", "parameters": {"type": "object", "properties": {"a": {"type": 5}}}}}],
          "tool_choice": "required"}, "tools[0].function.parameters"),
        ({"tools": [{"type": "function", "function": {"name": "has space"}}]},
         "tools[0].function.name"),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
    ],
)  # fmt: skip
def test_invalid_tools_and_formats_are_400(
    server: KaiyuanServer, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        server.client().chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=5, extra_body=extra
        )
    body = err.value.body
    assert isinstance(body, dict)
    assert body["param"] == param, body
    assert body["message"]


@slow
def test_tool_message_needs_its_call_id(server: KaiyuanServer) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        server.client().chat.completions.create(
            model=MODEL, max_tokens=5,
            messages=[*ASK, {"role": "tool", "content": "18C"}],  # type: ignore[list-item]
        )  # fmt: skip
    assert isinstance(err.value.body, dict) and err.value.body["param"] == "messages"


def test_grammar_cache_is_bounded() -> None:
    """T5: thousands of unique schemas keep the grammar cache (and memory) bounded."""
    for i in range(grammar.CACHE_SIZE * 4):
        schema = {"type": "object", "properties": {f"p{i}": {"type": "integer"}}}
        grammar.for_schema(schema, "response_format.json_schema.schema")
    info = grammar._schema_grammar.cache_info()
    assert info.currsize <= grammar.CACHE_SIZE
    assert info.maxsize == grammar.CACHE_SIZE


def test_deeply_nested_schema_is_400_not_a_crash() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(3000):
        schema = {"type": "array", "items": schema}
    with pytest.raises(Exception) as err:
        grammar.for_schema(schema, "response_format.json_schema.schema")
    assert getattr(err.value, "status", None) == 400


# --- the serving layer, with a scripted engine --------------------------------------------
QWEN_LIKE = (
    "{%- if tools %}<|im_start|>system\n# Tools\n<tools>\n"
    "{%- for tool in tools %}\n{{ tool | tojson }}{%- endfor %}\n</tools><|im_end|>\n{%- endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant\n"
    '{%- for tc in m.tool_calls %}<tool_call>\n{"name": "{{ tc.function.name }}", '
    '"arguments": {{ tc.function.arguments | tojson }}}\n</tool_call>{%- endfor %}<|im_end|>\n'
    "{%- elif m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}\n"
    "</tool_response><|im_end|>\n"
    "{%- else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n"
    "{%- if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{%- endif %}{%- endif %}"
)


@pytest.fixture
def qwen() -> Iterator[tuple[ScriptedEngine, openai.OpenAI]]:
    engine = ScriptedEngine("qwen-like", chat_template=QWEN_LIKE, context_length=4096)
    with serve_app(create_app(Settings(), EnginePool([engine]))) as url:
        yield engine, openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)


def script(engine: ScriptedEngine, text: str, piece: int = 3) -> None:
    engine.enqueue(Reply([text[i : i + piece] for i in range(0, len(text), piece)]))


def prompt_of(engine: ScriptedEngine, n: int = -1) -> str:
    return "".join(map(chr, engine.records[n].prompt))


PARALLEL = (
    'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": '
    '{"city": "巴黎", "unit": "celsius", "days": 3}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_time", "arguments": {"timezone": "Europe/Paris"}}\n'
    "</tool_call>"
)


def test_native_template_renders_tools_and_parses_parallel_calls(qwen: Any) -> None:
    engine, client = qwen
    script(engine, PARALLEL)
    reply = client.chat.completions.create(model="qwen-like", messages=ASK, tools=[WEATHER, TIME])
    prompt = prompt_of(engine)
    assert '"name": "get_weather"' in prompt and "# Tools" in prompt  # the model's own template
    assert "You may call one or more functions" not in prompt  # not the default tool prompt
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "tool_calls"
    assert message.content == "Let me check."
    assert [c.function.name for c in message.tool_calls or []] == ["get_weather", "get_time"]
    first = (message.tool_calls or [])[0]
    assert json.loads(first.function.arguments)["city"] == "巴黎"
    assert len({c.id for c in message.tool_calls or []}) == 2


def test_streamed_parallel_calls_are_indexed(qwen: Any) -> None:
    engine, client = qwen
    script(engine, PARALLEL, piece=1)
    calls: dict[int, dict[str, str]] = {}
    content = ""
    for chunk in client.chat.completions.create(
        model="qwen-like", messages=ASK, tools=[WEATHER, TIME], stream=True
    ):
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for part in delta.tool_calls or []:
            entry = calls.setdefault(part.index, {"name": "", "arguments": ""})
            entry["name"] += part.function.name or ""
            entry["arguments"] += part.function.arguments or ""
    assert content == "Let me check."
    assert [calls[i]["name"] for i in sorted(calls)] == ["get_weather", "get_time"]
    assert json.loads(calls[1]["arguments"]) == {"timezone": "Europe/Paris"}


def test_history_with_calls_and_results_goes_through_the_template(qwen: Any) -> None:
    engine, client = qwen
    script(engine, "It is 18C and sunny.")
    history: list[Any] = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather",
                          "arguments": json.dumps(
                              {"city": "Paris", "unit": "celsius", "days": 3})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 18}"},
    ]  # fmt: skip
    reply = client.chat.completions.create(model="qwen-like", messages=history, tools=[WEATHER])
    prompt = prompt_of(engine)
    # arguments reach the template as a mapping, rendered as plain JSON (not HTML-escaped)
    assert '"arguments": {"city": "Paris", "unit": "celsius", "days": 3}' in prompt
    assert '<tool_response>\n{"temperature": 18}\n</tool_response>' in prompt
    assert reply.choices[0].message.content == "It is 18C and sunny."
    assert reply.choices[0].finish_reason == "stop"


def test_reasoning_is_split_and_calls_inside_it_are_ignored(qwen: Any) -> None:
    engine, client = qwen
    script(
        engine,
        '<think>\nMaybe <tool_call>{"name": "get_time", "arguments": {}}</tool_call>? '
        "No.\n</think>\n\nIt is sunny.",
    )
    reply = client.chat.completions.create(model="qwen-like", messages=ASK, tools=[WEATHER, TIME])
    message = reply.choices[0].message
    assert message.tool_calls is None
    assert message.content == "It is sunny."
    assert "get_time" in getattr(message, "reasoning_content", "")
    assert reply.choices[0].finish_reason == "stop"


def test_streamed_reasoning_goes_to_reasoning_content(qwen: Any) -> None:
    engine, client = qwen
    script(engine, "<think>\nstep one, step two\n</think>\n\nDone.", piece=2)
    reasoning = content = ""
    for chunk in client.chat.completions.create(model="qwen-like", messages=ASK, stream=True):
        delta = chunk.choices[0].delta
        reasoning += getattr(delta, "reasoning_content", None) or ""
        content += delta.content or ""
    assert "step one, step two" in reasoning and "<think>" not in reasoning
    assert content == "Done."


def test_enable_thinking_false_reaches_the_template(qwen: Any) -> None:
    engine, client = qwen
    script(engine, "Hi.")
    client.chat.completions.create(
        model="qwen-like", messages=ASK,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )  # fmt: skip
    assert prompt_of(engine).endswith("<think>\n\n</think>")


@pytest.mark.parametrize(
    ("effort", "closed"), [("none", True), ("minimal", True), ("low", False), ("high", False)]
)
def test_reasoning_effort_switches_thinking(qwen: Any, effort: str, closed: bool) -> None:
    engine, client = qwen
    script(engine, "Hi.")
    client.chat.completions.create(
        model="qwen-like",
        messages=ASK,
        reasoning_effort=effort,  # type: ignore[arg-type]
    )
    assert prompt_of(engine).endswith("<think>\n\n</think>") is closed


def test_explicit_enable_thinking_wins_over_reasoning_effort(qwen: Any) -> None:
    engine, client = qwen
    script(engine, "Hi.")
    client.chat.completions.create(
        model="qwen-like", messages=ASK, reasoning_effort="high",
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )  # fmt: skip
    assert prompt_of(engine).endswith("<think>\n\n</think>")


def test_broken_call_comes_back_as_text(qwen: Any) -> None:
    engine, client = qwen
    script(engine, "<tool_call>{not json</tool_call>")
    reply = client.chat.completions.create(model="qwen-like", messages=ASK, tools=[WEATHER])
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].message.content == "<tool_call>{not json</tool_call>"
    assert reply.choices[0].finish_reason == "stop"


def test_forced_call_sends_a_grammar_in_the_models_syntax(qwen: Any) -> None:
    engine, client = qwen
    script(engine, PARALLEL)
    client.chat.completions.create(
        model="qwen-like", messages=ASK, tools=[WEATHER], tool_choice="required"
    )
    gbnf = engine.records[-1].params.grammar
    assert gbnf is not None and "<tool_call>" in gbnf and "get_weather" in gbnf
    script(engine, "{}")
    client.chat.completions.create(
        model="qwen-like", messages=ASK, response_format={"type": "json_object"}
    )
    assert engine.records[-1].params.grammar == grammar.json_object()
    script(engine, "plain")
    client.chat.completions.create(model="qwen-like", messages=ASK, tools=[WEATHER])
    assert engine.records[-1].params.grammar is None  # auto: the model decides, unconstrained
