"""``POST /v1/responses`` through the official openai client, against a real uvicorn server on
loopback: a scripted fake model (one char = one token) drives the agent, built-in tools run for
real (code in the bubblewrap sandbox, search against a local SearXNG stand-in, fetch of local
pages, file search over a real document index), function tools end the response for the client
to continue with ``previous_response_id``, as do MCP calls that wait for the user's approval (a
real MCP server over stdio); streaming typed events; limits; errors; and one short run on the
real bundled model."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from kaiyuan.agent.traces import Traces
from kaiyuan.config import Settings
from kaiyuan.documents.index import DocIndex
from kaiyuan.engines.pool import EnginePool
from kaiyuan.server import create_app
from tests.conftest import MODEL as REAL_MODEL
from tests.fakes import Reply, ScriptedEngine
from tests.harness import KAIYUAN, KaiyuanServer, LocalWeb, Query, Route, serve_app

pytestmark = pytest.mark.slow

MODEL = "fake-model"
STEP_TOKENS = 2000  # agent_max_tokens: well inside the fake's context with the tool prompts
CODE = {"type": "code_interpreter", "container": {"type": "auto"}}
WEB = {"type": "web_search"}
FILES = {"type": "file_search", "vector_store_ids": ["local"]}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city now.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
TOOL_PROMPT = "# Tools"  # the default tool prompt the fake's ChatML template gets
WRAP_UP = "Stop using tools now"


def say(text: str) -> Reply:
    return Reply(list(text))


def call(name: str, **arguments: Any) -> Reply:
    """A Hermes-style tool call, as the default tool prompt asks the model to write it."""
    body = json.dumps({"name": name, "arguments": arguments})
    return Reply(list(f"<tool_call>\n{body}\n</tool_call>"))


@dataclass
class Served:
    client: openai.OpenAI
    engine: ScriptedEngine
    home: Path
    url: str

    def prompt(self, index: int = -1) -> str:
        """What the fake model was given (one token per character, so it decodes exactly)."""
        return "".join(map(chr, self.engine.records[index].prompt))

    def create(self, *replies: Reply, **fields: Any) -> Any:
        self.engine.enqueue(*replies)
        return self.client.responses.create(model=MODEL, **fields)


@contextlib.contextmanager
def serving(home: Path, **settings: Any) -> Iterator[Served]:
    engine = ScriptedEngine(context_length=60_000)
    options: dict[str, Any] = {"agent_max_tokens": STEP_TOKENS, **settings}
    app = create_app(Settings(home=home, **options), EnginePool([engine]))
    with serve_app(app) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="test", max_retries=0, timeout=60)
        try:
            yield Served(client, engine, home, url)
        finally:
            client.close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def served(home: Path) -> Iterator[Served]:
    with serving(home) as running:
        yield running


# --- local web stand-ins --------------------------------------------------------------------------
class Web(LocalWeb):
    """Pages by path (content type, body) and a SearXNG-style ``/search`` JSON API."""

    def __init__(self) -> None:
        super().__init__()
        self.pages: dict[str, tuple[str, bytes]] = {}
        self.results: list[dict[str, str]] = []

    def respond(self, path: str, query: Query) -> Route:
        if path == "/search":
            assert query.get("format") == ["json"]
            body = json.dumps({"results": self.results}).encode()
            return 200, {"Content-Type": "application/json"}, body
        if path in self.pages:
            kind, body = self.pages[path]
            return 200, {"Content-Type": kind}, body
        return super().respond(path, query)


@pytest.fixture
def web() -> Iterator[Web]:
    site = Web()
    yield site
    site.close()


TITLE = "The Lighthouse Keepers of Skerryvore"
SENTENCE = "Keepers trimmed the wicks of the great lamp every four hours through the night"
ARTICLE = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{TITLE}</title></head>
<body><nav><a href="/">Home</a></nav><main><article>
<h1>{TITLE}</h1>
<p>Skerryvore lighthouse stands on a reef eleven miles south-west of the island of Tiree, and for
more than a century it was kept by three men at a time who lived in its narrow granite tower.</p>
<p>{SENTENCE}, and a log book recorded the weather, the passing ships and every repair that the
keepers made to the clockwork that turned the lens.</p>
<p>The light was automated in 1994, and today the old shore station at Hynish is a museum.</p>
</article></main></body></html>
"""
OTHER_TITLE = "Tiree ferry timetable"


@pytest.fixture
def site(web: Web) -> Web:
    web.pages["/article"] = ("text/html; charset=utf-8", ARTICLE.encode())
    web.results = [
        {"title": TITLE, "url": f"{web.url}/article", "content": "Keepers of the light."},
        {"title": OTHER_TITLE, "url": f"{web.url}/ferry", "content": "Sailings to Tiree."},
    ]
    return web


def web_settings(web: Web, **more: Any) -> dict[str, Any]:
    return {"search_provider": "searxng", "searxng_url": web.url, **more}


def dump(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = response.model_dump(mode="json")
    return data


def comparable(value: Any) -> Any:
    """A response without what differs between two runs of one script: ids and timestamps."""
    if isinstance(value, dict):
        return {
            k: comparable(v)
            for k, v in value.items()
            if k not in ("id", "call_id", "created_at", "completed_at")
        }
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


# --- 1. plain text --------------------------------------------------------------------------------
def test_plain_text_response(served: Served) -> None:
    response = served.create(say("Hello from the fake model."), input="Say hello.")
    assert response.object == "response"
    assert response.id.startswith("resp_") and len(response.id) > len("resp_")
    assert response.model == MODEL
    assert response.status == "completed"
    assert response.incomplete_details is None and response.error is None
    assert len(response.output) == 1
    message = response.output[0]
    assert message.type == "message" and message.role == "assistant"
    assert message.status == "completed"
    assert [part.type for part in message.content] == ["output_text"]
    assert message.content[0].text == "Hello from the fake model."
    assert message.content[0].annotations == []
    assert response.output_text == "Hello from the fake model."
    usage = response.usage
    assert usage is not None
    assert usage.input_tokens == len(served.engine.records[-1].prompt)
    assert usage.output_tokens == len("Hello from the fake model.")
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    # the user's input reached the model; with no tools, no tool prompt
    prompt = served.prompt()
    assert "<|im_start|>user\nSay hello.<|im_end|>" in prompt
    assert TOOL_PROMPT not in prompt
    assert served.engine.records[-1].params.max_tokens == STEP_TOKENS


def test_instructions_go_into_the_system_prompt(served: Served) -> None:
    response = served.create(say("ok"), input="hi", instructions="Always answer in Latin.")
    assert response.instructions == "Always answer in Latin."
    system = served.prompt().split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\n")
    assert "Always answer in Latin." in system


# --- 2. code_interpreter --------------------------------------------------------------------------
def test_code_interpreter_runs_in_the_sandbox_and_is_traced(served: Served) -> None:
    response = served.create(
        call("code", code="print(6*7)"),
        say("Six times seven is 42."),
        input="What is 6*7? Use Python.",
        tools=[CODE],
    )
    assert response.status == "completed"
    assert [item.type for item in response.output] == ["code_interpreter_call", "message"]
    run = response.output[0]
    assert run.status == "completed"
    assert run.code == "print(6*7)"
    assert run.id.startswith("ci_")
    assert run.outputs is not None and run.outputs[0].type == "logs"
    assert "42" in run.outputs[0].logs
    assert response.output_text == "Six times seven is 42."
    # the program's output went back to the model, as data, in the second step
    assert len(served.engine.records) == 2
    assert TOOL_PROMPT in served.prompt(0) and '"name": "code"' in served.prompt(0)
    second = served.prompt(1)
    assert "<tool_response>" in second and "42" in second.split("<tool_response>")[1]
    assert "untrusted data" in second
    # usage adds up both model steps
    usage = response.usage
    prompts = sum(len(r.prompt) for r in served.engine.records)
    assert usage.input_tokens == prompts
    assert usage.output_tokens == sum(r.emitted for r in served.engine.records)
    # the run's trace, through the CLI with the same home
    run_id = response.id.removeprefix("resp_")
    shown = subprocess.run(
        [KAIYUAN, "trace", run_id, "--json"],
        env={**os.environ, "KAIYUAN_HOME": str(served.home)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    trace = json.loads(shown.stdout)
    assert trace["id"] == run_id and trace["model"] == MODEL
    assert trace["status"] == "completed" and trace["answer"] == "Six times seven is 42."
    assert trace["task"] == "What is 6*7? Use Python."
    assert [(s["kind"], s["name"]) for s in trace["trace"]] == [
        ("model", MODEL),
        ("tool", "code"),
        ("model", MODEL),
    ]
    assert trace["trace"][1]["output"]["stdout"] == "42\n"
    assert trace["usage"] == {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
    }


def test_code_that_fails_is_reported_in_its_logs(served: Served) -> None:
    response = served.create(
        call("code", code="raise SystemExit('boom: bad input')"),
        say("It failed."),
        input="run it",
        tools=[CODE],
    )
    run = response.output[0]
    assert run.type == "code_interpreter_call"
    assert "boom: bad input" in run.outputs[0].logs
    assert response.status == "completed" and response.output_text == "It failed."


# --- 3. web search with citations -----------------------------------------------------------------
def test_web_search_then_open_page_with_url_citations(home: Path, site: Web) -> None:
    article = f"{site.url}/article"
    answer = "Keepers trimmed the wicks every four hours [1]. Ferries sail to Tiree [2]. See [1]."
    with serving(home, **web_settings(site, fetch_allow_private=True)) as served:
        response = served.create(
            call("search", query="skerryvore lighthouse keepers"),
            call("fetch", url=article),
            say(answer),
            input="How often were the lamp wicks trimmed at Skerryvore?",
            tools=[WEB],
        )
        prompts = [served.prompt(i) for i in range(len(served.engine.records))]
    assert response.status == "completed"
    kinds = [item.type for item in response.output]
    assert kinds == ["web_search_call", "web_search_call", "message"]
    search, opened, message = response.output
    assert search.status == "completed" and opened.status == "completed"
    assert search.id.startswith("ws_") and opened.id.startswith("ws_")
    assert search.action.type == "search"
    assert search.action.query == "skerryvore lighthouse keepers"
    assert opened.action.type == "open_page"
    assert opened.action.url == article
    # both stand-ins were really asked
    assert site.requests[0].startswith("/search?") and "skerryvore" in site.requests[0]
    assert site.requests[1:] == ["/article"]
    # the model saw numbered sources and the page's text
    assert '"ref": 1' in prompts[1] and '"ref": 2' in prompts[1]
    assert SENTENCE in prompts[2]
    # annotations: every [n] in the text, in order, pointing at exactly "[n]"
    text = message.content[0].text
    assert text == answer == response.output_text
    annotations = message.content[0].annotations
    assert [a.type for a in annotations] == ["url_citation"] * 3
    expected = [
        (text.index("[1]"), article, TITLE),
        (text.index("[2]"), f"{site.url}/ferry", OTHER_TITLE),
        (text.rindex("[1]"), article, TITLE),
    ]
    for annotation, (start, url, title) in zip(annotations, expected, strict=True):
        assert (annotation.start_index, annotation.end_index) == (start, start + 3)
        assert (annotation.url, annotation.title) == (url, title)
        assert text[annotation.start_index : annotation.end_index] in ("[1]", "[2]")
    trace = Traces(home).get(response.id.removeprefix("resp_"))
    assert [c["url"] for c in trace["citations"]] == [article, f"{site.url}/ferry"]


def test_web_search_preview_offers_search_and_fetch(home: Path, site: Web) -> None:
    with serving(home, **web_settings(site)) as served:
        response = served.create(
            say("No need."), input="hi", tools=[{"type": "web_search_preview"}]
        )
        prompt = served.prompt()
    assert response.output_text == "No need."
    assert '"name": "search"' in prompt and '"name": "fetch"' in prompt
    assert '"name": "code"' not in prompt
    assert site.requests == []


def test_uncited_sources_give_no_annotations(home: Path, site: Web) -> None:
    with serving(home, **web_settings(site)) as served:
        response = served.create(
            call("search", query="tiree"), say("Tiree is an island."), input="q", tools=[WEB]
        )
    assert response.output[-1].content[0].annotations == []


def test_a_failing_tool_fails_its_item_and_the_run_continues(home: Path, site: Web) -> None:
    # fetch_allow_private is off: the loopback page is refused, the run still answers
    refused = f"{site.url}/article"
    with serving(home, **web_settings(site)) as served:
        response = served.create(
            call("fetch", url=refused),
            say("I could not open the page."),
            input="Read that page.",
            tools=[WEB],
        )
        after = served.prompt()
    assert response.status == "completed"
    assert [item.type for item in response.output] == ["web_search_call", "message"]
    failed = response.output[0]
    assert failed.status == "failed"
    assert failed.action.type == "open_page" and failed.action.url == refused
    assert "refused" in dump(response)["output"][0]["error"]
    assert site.requests == []  # never reached
    assert "The tool `fetch` failed" in after and "refused" in after
    assert response.output_text == "I could not open the page."


def test_a_call_to_a_tool_not_offered_fails_and_the_run_continues(served: Served) -> None:
    served.engine.enqueue(call("frobnicate", x=1), say("Sorry."))
    raw = served.client.responses.with_raw_response.create(model=MODEL, input="x", tools=[CODE])
    response = raw.http_response.json()  # as sent: the SDK has no type for this item
    assert response["status"] == "completed"
    assert response["output"][-1]["content"][0]["text"] == "Sorry."
    failed = response["output"][0]
    assert failed["status"] == "failed" and "no tool 'frobnicate'" in failed["error"]
    assert "The tool `frobnicate` failed" in served.prompt()


# --- 4. file_search -------------------------------------------------------------------------------
GARDEN = """# Garden Notes

Heirloom tomatoes need staking before the first truss of flowers opens; tie the stems loosely
with soft twine so that they can thicken without being cut.
"""
BREAD = """Sourdough bread

Feed the starter the night before baking, fold the dough every thirty minutes and bake it in a
covered cast-iron pot.
"""


def test_file_search_over_the_document_index(home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "garden.md").write_text(GARDEN, encoding="utf-8")
    (folder / "bread.txt").write_text(BREAD, encoding="utf-8")
    index = DocIndex.open(home)
    try:
        added = index.add([folder])
    finally:
        index.close()
    assert sorted(a.status for a in added) == ["added", "added"]
    with serving(home) as served:
        response = served.create(
            call("files", query="staking heirloom tomatoes"),
            say("Stake them before the first truss opens [1]."),
            input="When should tomatoes be staked?",
            tools=[FILES],
        )
        prompt = served.prompt()
    assert response.status == "completed"
    assert [item.type for item in response.output] == ["file_search_call", "message"]
    found = response.output[0]
    assert found.status == "completed" and found.id.startswith("fs_")
    assert found.queries == ["staking heirloom tomatoes"]
    assert found.results
    best = found.results[0]
    garden = str((folder / "garden.md").resolve())
    assert best.file_id == garden
    assert best.filename == "Garden Notes"
    assert "Heirloom tomatoes need staking" in best.text
    assert best.attributes["url"].startswith(Path(garden).as_uri())
    assert "Heirloom tomatoes need staking" in prompt
    annotation = response.output[1].content[0].annotations[0]
    assert annotation.url == best.attributes["url"]
    assert annotation.title == "Garden Notes"


# --- 5. function tools (client-run) and input items -----------------------------------------------
def test_function_call_ends_the_response_and_continues(served: Served) -> None:
    first = served.create(
        call("get_weather", city="Paris"),
        input="What's the weather in Paris?",
        tools=[WEATHER, CODE],
    )
    assert first.status == "completed"
    assert [item.type for item in first.output] == ["function_call"]
    fc = first.output[0]
    assert fc.name == "get_weather"
    assert json.loads(fc.arguments) == {"city": "Paris"}
    assert fc.call_id and fc.id == f"fc_{fc.call_id}"
    assert first.output_text == ""
    tools_listed = served.prompt()
    assert '"name": "get_weather"' in tools_listed and "The weather in a city now." in tools_listed
    # nothing ran server-side: the trace has only the model's step
    trace = Traces(served.home).get(first.id.removeprefix("resp_"))
    assert [s["kind"] for s in trace["trace"]] == ["model"]
    assert trace["stop_reason"] == "function_call"

    second = served.create(
        say("It is sunny in Paris."),
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": fc.call_id, "output": "sunny"}],
        tools=[WEATHER, CODE],
    )
    assert second.status == "completed"
    assert second.previous_response_id == first.id
    assert second.id != first.id
    assert second.output_text == "It is sunny in Paris."
    assert [item.type for item in second.output] == ["message"]
    prompt = served.prompt()
    question = prompt.index("What's the weather in Paris?")
    asked = prompt.index('"name": "get_weather", "arguments": {"city": "Paris"}')
    result = prompt.index("<tool_response>\nsunny\n</tool_response>")
    assert question < asked < result
    assert prompt.count("What's the weather in Paris?") == 1


def test_function_calls_and_outputs_given_as_input_items(served: Served) -> None:
    response = served.create(
        say("20 degrees."),
        input=[
            {"type": "message", "role": "user", "content": "Weather in Oslo?"},
            {
                "type": "function_call",
                "call_id": "call_abc",
                "name": "get_weather",
                "arguments": '{"city": "Oslo"}',
            },
            {"type": "function_call_output", "call_id": "call_abc", "output": '{"temp": 20}'},
        ],
        tools=[WEATHER],
    )
    assert response.output_text == "20 degrees."
    prompt = served.prompt()
    asked = prompt.index('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}')
    assert prompt.index("Weather in Oslo?") < asked < prompt.index('{"temp": 20}')


def test_input_as_message_items(served: Served) -> None:
    response = served.create(
        say("Goodbye."),
        input=[
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": [{"type": "input_text", "text": "Hello there"}]},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Hi! How can I help?"}],
            },
            {"role": "developer", "content": "Mind the rules."},
            {"type": "message", "role": "user", "content": "Bye now"},
        ],
    )
    assert response.status == "completed" and response.output_text == "Goodbye."
    prompt = served.prompt()
    turns = [
        "<|im_start|>system\nBe terse.<|im_end|>",
        "<|im_start|>user\nHello there<|im_end|>",
        "<|im_start|>assistant\nHi! How can I help?<|im_end|>",
        "<|im_start|>system\nMind the rules.<|im_end|>",
        "<|im_start|>user\nBye now<|im_end|>",
    ]
    positions = [prompt.index(turn) for turn in turns]
    assert positions == sorted(positions)
    assert prompt.endswith("<|im_start|>assistant\n")
    # the task recorded for the trace is the last user request
    trace = Traces(served.home).get(response.id.removeprefix("resp_"))
    assert trace["task"] == "Bye now"


def test_named_function_tool_choice_constrains_the_first_step(served: Served) -> None:
    response = served.create(
        call("get_weather", city="Rome"),
        input="weather?",
        tools=[WEATHER, CODE],
        tool_choice={"type": "function", "name": "get_weather"},
    )
    assert [item.type for item in response.output] == ["function_call"]
    grammar = served.engine.records[-1].params.grammar
    assert grammar is not None and "get_weather" in grammar and '\\"code\\"' not in grammar


def test_required_tool_choice_applies_to_the_first_step_only(served: Served) -> None:
    response = served.create(
        call("code", code="print(1)"),
        say("Done."),
        input="go",
        tools=[CODE],
        tool_choice="required",
    )
    assert response.output_text == "Done."
    first, second = served.engine.records
    assert first.params.grammar is not None and "code" in first.params.grammar
    assert second.params.grammar is None


def test_auto_tool_choice_is_unconstrained(served: Served) -> None:
    served.create(say("hi"), input="x", tools=[CODE])
    assert served.engine.records[-1].params.grammar is None


def test_previous_response_id_after_a_text_answer_keeps_the_answer(served: Served) -> None:
    first = served.create(say("My name is Zorblax."), input="What is your name?")
    served.create(say("Zorblax."), input="Say it again.", previous_response_id=first.id)
    prompt = served.prompt()
    assert prompt.index("What is your name?") < prompt.index("Say it again.")
    assert "<|im_start|>assistant\nMy name is Zorblax.<|im_end|>" in prompt


# --- 6. streaming ---------------------------------------------------------------------------------
TOOL_STREAM = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.code_interpreter_call.in_progress",
    "response.code_interpreter_call.completed",
    "response.output_item.done",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def test_streaming_events_and_final_response_match_non_streaming(served: Served) -> None:
    script = [call("code", code="print(6*7)"), say("It is 42.")]
    fields: dict[str, Any] = {"input": "6*7?", "tools": [CODE]}
    plain = served.create(*script, **fields)
    stream = served.create(*script, stream=True, **fields)
    events = list(stream)
    assert [e.type for e in events] == TOOL_STREAM
    assert [e.sequence_number for e in events] == list(range(len(events)))
    created, in_progress = events[0].response, events[1].response
    assert created.status == in_progress.status == "in_progress"
    assert created.output == [] and created.usage is None
    final = events[-1].response
    assert final.id == created.id and final.id != plain.id
    assert final.status == "completed"
    # the same prompts, token for token: the code tool's result carries no run time
    assert comparable(dump(final)) == comparable(dump(plain))
    assert served.engine.records[-1].prompt == served.engine.records[-3].prompt
    assert final.usage.input_tokens > 0
    # the tool item: added in progress, then done with its logs, at output_index 0
    added, started, completed, done = events[2:6]
    assert added.output_index == started.output_index == completed.output_index == 0
    assert added.item.type == "code_interpreter_call" and added.item.status == "in_progress"
    assert added.item.id == started.item_id == completed.item_id == done.item.id
    assert done.item.status == "completed" and "42" in done.item.outputs[0].logs
    # the message, at output_index 1; its deltas make up the text
    message_added = events[6]
    assert message_added.output_index == 1
    assert message_added.item.status == "in_progress" and message_added.item.content == []
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == events[9].text == final.output_text == "It is 42."
    assert events[11].item == final.output[1]


def test_streaming_raw_sse_lines(home: Path, site: Web) -> None:
    """The wire format: ``event: TYPE`` then ``data: {...}`` with the same type; no [DONE]."""
    with serving(home, **web_settings(site)) as served:
        served.engine.enqueue(
            call("search", query="tiree"), call("search", query="ferry"), say("Tiree [1].")
        )
        body = {"model": MODEL, "input": "q", "tools": [WEB], "stream": True}
        with httpx.stream("POST", served.url + "/v1/responses", json=body, timeout=60) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = [line for line in r.iter_lines() if line]
    assert "data: [DONE]" not in lines
    assert len(lines) % 2 == 0
    events = []
    for head, data in zip(lines[::2], lines[1::2], strict=True):
        assert head.startswith("event: ") and data.startswith("data: ")
        payload = json.loads(data.removeprefix("data: "))
        assert payload["type"] == head.removeprefix("event: ")
        events.append(payload)
    types = [e["type"] for e in events]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    one_search = [
        "response.output_item.added",
        "response.web_search_call.in_progress",
        "response.web_search_call.completed",
        "response.output_item.done",
    ]
    assert types[2:10] == one_search * 2
    assert [e["output_index"] for e in events[2:10]] == [0] * 4 + [1] * 4
    assert events[5]["item"]["action"] == {"type": "search", "query": "tiree"}
    assert events[9]["item"]["action"] == {"type": "search", "query": "ferry"}
    assert events[10]["type"] == "response.output_item.added"
    assert events[10]["output_index"] == 2 and events[10]["item"]["type"] == "message"
    assert types[-1] == "response.completed"
    final = events[-1]["response"]
    annotation = final["output"][-1]["content"][0]["annotations"][0]
    assert annotation["url"] == f"{site.url}/article" and annotation["start_index"] == 6


def test_streaming_function_call(served: Served) -> None:
    events = list(
        served.create(call("get_weather", city="Paris"), input="w?", tools=[WEATHER], stream=True)
    )
    types = [e.type for e in events]
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert json.loads(events[3].arguments) == {"city": "Paris"}
    assert events[4].item.type == "function_call" and events[4].item.name == "get_weather"
    assert events[-1].response.output[0].call_id == events[4].item.call_id


def test_streaming_a_cut_off_answer_ends_incomplete(served: Served) -> None:
    events = list(served.create(say("x" * 100), input="long", max_output_tokens=10, stream=True))
    assert events[-1].type == "response.incomplete"
    final = events[-1].response
    assert final.status == "incomplete"
    assert final.incomplete_details.reason == "max_output_tokens"
    assert final.output_text == "x" * 10


def test_streaming_a_model_crash_ends_with_response_failed(served: Served) -> None:
    stream = served.create(Reply(list("hi"), die_after=0), input="x", stream=True)
    events = list(stream)
    assert events[-1].type == "response.failed"
    assert events[-1].response.status == "failed"


# --- 7. limits and status -------------------------------------------------------------------------
def test_max_output_tokens_cuts_the_answer_off(served: Served) -> None:
    response = served.create(say("abcdefghij" * 10), input="long please", max_output_tokens=12)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.max_output_tokens == 12
    assert response.output_text == "abcdefghijab"
    assert response.usage.output_tokens == 12
    assert served.engine.records[-1].params.max_tokens == 12


def test_answer_that_fits_max_output_tokens_completes(served: Served) -> None:
    response = served.create(say("short"), input="x", max_output_tokens=50)
    assert response.status == "completed" and response.incomplete_details is None
    assert served.engine.records[-1].params.max_tokens == 50


def test_max_tool_calls_stops_a_model_that_keeps_calling(served: Served) -> None:
    loops = [call("code", code=f"print({i})") for i in range(6)]
    response = served.create(
        *loops, say("Stopped with what I have."), input="loop", tools=[CODE], max_tool_calls=1
    )
    served.engine.replies.clear()
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_tool_calls"
    assert response.output[-1].type == "message"
    assert response.output[0].type == "code_interpreter_call"
    # the last step wraps up, without tools
    last = served.prompt()
    assert WRAP_UP in last
    assert TOOL_PROMPT not in last
    trace = Traces(served.home).get(response.id.removeprefix("resp_"))
    assert trace["status"] == "stopped" and trace["stop_reason"] == "max_tool_calls"


def test_max_tool_calls_bounds_the_calls_run(served: Served) -> None:
    loops = [call("code", code=f"print({i})") for i in range(6)]
    response = served.create(*loops, say("done"), input="loop", tools=[CODE], max_tool_calls=1)
    served.engine.replies.clear()
    runs = [item for item in response.output if item.type == "code_interpreter_call"]
    assert len(runs) == 1


COMPUTER = {"type": "computer_use_preview", "display_width": 800, "display_height": 600,
            "environment": "linux"}  # fmt: skip


# --- 8. errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "error", "param"),
    [
        ({"model": "no-such-model"}, openai.NotFoundError, "model"),
        ({"tools": [COMPUTER]}, openai.BadRequestError, "tools[0].type"),
        ({"input": [{"type": "reasoning", "id": "rs_1"}]}, openai.BadRequestError, "input[0].type"),
        ({"input": [{"role": "wizard", "content": "x"}]}, openai.BadRequestError, "input[0].role"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            openai.BadRequestError,
            "input[0]",
        ),
        (
            {"previous_response_id": "resp_nonexistent"},
            openai.NotFoundError,
            "previous_response_id",
        ),
        (
            {"tools": [{"type": "function", "name": "bad name!"}]},
            openai.BadRequestError,
            "tools[0].name",
        ),
        ({"tools": [WEATHER, WEATHER]}, openai.BadRequestError, "tools[1].name"),
        ({"max_output_tokens": 0}, openai.BadRequestError, "max_output_tokens"),
        ({"tool_choice": "sometimes"}, openai.BadRequestError, "tool_choice"),
        (
            {"tools": [{"type": "mcp", "server_label": "nowhere"}]},
            openai.BadRequestError,
            "tools[0].server_label",
        ),
    ],
    ids=[
        "unknown-model",
        "computer-use",
        "input-item-type",
        "message-role",
        "content-part",
        "no-previous",
        "function-name",
        "function-twice",
        "max-output-tokens",
        "tool-choice",
        "mcp-unconfigured",
    ],
)
def test_request_errors(
    served: Served, fields: dict[str, Any], error: type[openai.APIStatusError], param: str
) -> None:
    request: dict[str, Any] = {"model": MODEL, "input": "hi", **fields}
    with pytest.raises(error) as caught:
        served.client.responses.create(**request)
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["type"] == "invalid_request_error"
    assert body["param"] == param, body
    assert body["message"]
    assert served.engine.records == []  # the model was never asked


def test_unsupported_tool_type_is_named(served: Served) -> None:
    with pytest.raises(openai.BadRequestError, match="image_generation") as caught:
        served.client.responses.create(
            model=MODEL, input="x", tools=[CODE, {"type": "image_generation"}]
        )
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "tools[1].type"


def test_tool_choice_none_offers_no_tools(served: Served) -> None:
    text = '<tool_call>\n{"name": "code", "arguments": {"code": "print(1)"}}\n</tool_call>'
    response = served.create(say(text), input="x", tools=[CODE], tool_choice="none")
    prompt = served.prompt()
    assert TOOL_PROMPT not in prompt and "<tools>" not in prompt
    assert response.tool_choice == "none"
    # nothing is parsed as a call, nothing runs: the text is the answer
    assert [item.type for item in response.output] == ["message"]
    assert response.output_text == text
    assert len(served.engine.records) == 1


def test_unknown_response_id_prefix_is_not_found(served: Served) -> None:
    first = served.create(call("get_weather", city="Oslo"), input="w", tools=[WEATHER])
    truncated = first.id[: len("resp_") + 8]
    with pytest.raises(openai.NotFoundError):
        served.client.responses.create(model=MODEL, input="x", previous_response_id=truncated)


def test_an_image_for_a_text_model_is_a_client_error(served: Served) -> None:
    image = {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}
    with pytest.raises(openai.BadRequestError):
        served.client.responses.create(
            model=MODEL,
            input=[{"role": "user", "content": [{"type": "input_text", "text": "see"}, image]}],
        )


# --- 9. store: false -----------------------------------------------------------------------------
def trace_rows(home: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the trace tables (runs, steps), read straight from the one SQLite file."""
    with contextlib.closing(sqlite3.connect(home / "kaiyuan.db")) as db:
        tables = {"runs": "agent_runs", "steps": "agent_steps"}
        return {name: db.execute(f'SELECT * FROM "{table}"').fetchall()
                for name, table in tables.items()}  # fmt: skip


SECRET = "Zephyrine-7319"  # a marker that must not reach the trace store


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_store_false_writes_nothing_and_cannot_be_continued(served: Served, stream: bool) -> None:
    stored = served.create(say("Kept."), input="A stored question.")  # the store is in use
    before = trace_rows(served.home)
    assert {"runs", "steps"} <= set(before) and len(before["runs"]) == 1
    script = [call("code", code=f"print('{SECRET}'[::-1])"), say(f"It is {SECRET}.")]
    fields: dict[str, Any] = {
        "input": f"Reverse {SECRET} twice.",
        "instructions": f"Mention {SECRET}.",
        "tools": [CODE],
        "store": False,
    }
    if stream:
        events = list(served.create(*script, stream=True, **fields))
        assert events[-1].type == "response.completed"
        response = events[-1].response
        assert events[0].response.store is False
    else:
        response = served.create(*script, **fields)
    # the run worked as usual: the code ran in the sandbox, its output reached the model
    assert response.status == "completed" and response.store is False
    assert [item.type for item in response.output] == ["code_interpreter_call", "message"]
    assert SECRET[::-1] in response.output[0].outputs[0].logs
    assert response.output_text == f"It is {SECRET}."
    assert SECRET[::-1] in served.prompt()
    # nothing of it was written: not the conversation, not a step, not the tool's output
    after = trace_rows(served.home)
    assert after == before
    assert not any(SECRET in repr(rows) or SECRET[::-1] in repr(rows) for rows in after.values())
    assert not any(SECRET.encode() in f.read_bytes() for f in served.home.glob("kaiyuan.db*"))
    # it cannot be continued: the same 404 as for an id that never existed
    asked = len(served.engine.records)
    errors = []
    for previous in (response.id, "resp_" + "0" * 32):
        with pytest.raises(openai.NotFoundError) as caught:
            served.client.responses.create(model=MODEL, input="And?", previous_response_id=previous)
        body = caught.value.body
        assert isinstance(body, dict)
        errors.append(body)
    unstored, unknown = errors
    assert unstored["param"] == unknown["param"] == "previous_response_id"
    assert unstored["type"] == unknown["type"] == "invalid_request_error"
    assert unstored["code"] == unknown["code"] == "not_found"
    assert unstored["message"] == unknown["message"].replace("0" * 32, response.id[5:])
    assert len(served.engine.records) == asked  # the model was not asked
    # a stored response is still continued
    served.create(say("Yes."), input="More?", previous_response_id=stored.id)
    assert "A stored question." in served.prompt()


def test_store_false_function_calls_are_continued_by_resending_the_input(served: Served) -> None:
    question = {"role": "user", "content": f"Weather in {SECRET}?"}
    first = served.create(
        call("get_weather", city=SECRET), input=[question], tools=[WEATHER], store=False
    )
    assert first.store is False
    assert [item.type for item in first.output] == ["function_call"]
    fc = first.output[0]
    assert json.loads(fc.arguments) == {"city": SECRET}
    with pytest.raises(openai.NotFoundError):
        served.client.responses.create(
            model=MODEL,
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": fc.call_id, "output": "sunny"}],
            tools=[WEATHER],
        )
    # stateless: the client sends the whole conversation back
    second = served.create(
        say("Sunny."),
        input=[
            question,
            {"type": "function_call", "call_id": fc.call_id, "name": fc.name,
             "arguments": fc.arguments},
            {"type": "function_call_output", "call_id": fc.call_id, "output": "sunny"},
        ],
        tools=[WEATHER],
        store=False,
    )  # fmt: skip
    assert second.output_text == "Sunny." and second.store is False
    assert "<tool_response>\nsunny\n</tool_response>" in served.prompt()
    rows = trace_rows(served.home)
    assert rows["runs"] == [] and rows["steps"] == []


# --- 10. errors name the request's fields ---------------------------------------------------------
IMAGE = {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}
TEXT = {"type": "input_text", "text": "see"}
DEEP = {"type": "function", "name": "deep",
        "parameters": {"type": "object", "properties": {"a": {"type": "string",
                                                             "minLength": 5000}}}}  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "param", "named"),
    [
        (
            {"input": [{"role": "user", "content": "hi"},
                       {"role": "user", "content": [TEXT, IMAGE]}],
             "instructions": "Be brief."},
            "input[1].content[1]",
            False,
        ),
        ({"input": [{"role": "user", "content": [IMAGE]}]}, "input[0].content[0]", False),
        (
            {"input": [{"role": "user", "content": "a"},
                       {"type": "function_call", "call_id": "c1", "name": "ok", "arguments": "{}"},
                       {"type": "function_call", "call_id": "c2", "name": "bad name!",
                        "arguments": "{}"}]},
            "input[2].name",
            True,
        ),
        (
            {"input": [{"role": "user", "content": "a"},
                       {"type": "function_call", "call_id": "c1", "name": "f",
                        "arguments": {"not": "a string"}}]},
            "input[1].arguments",
            True,
        ),
        (
            {"input": [{"role": "user", "content": "a"},
                       {"type": "function_call_output", "call_id": "c" * 300, "output": "x"}]},
            "input[1].call_id",
            True,
        ),
        (
            {"input": [{"role": "user", "content": "a"},
                       {"type": "function_call_output", "output": "x"}]},
            "input[1].call_id",
            True,
        ),
        (
            {"tools": [DEEP, CODE], "tool_choice": "required"},
            "tools[0].parameters",
            True,
        ),
        ({"input": "x" * 70_000}, "input", False),
    ],
    ids=[
        "image-after-instructions",
        "image-first",
        "call-name",
        "call-arguments",
        "output-call-id-long",
        "output-call-id-missing",
        "tool-schema",
        "too-long",
    ],
)  # fmt: skip
def test_errors_name_the_responses_fields(
    served: Served, fields: dict[str, Any], param: str, named: bool
) -> None:
    request: dict[str, Any] = {"model": MODEL, "input": "hi", **fields}
    with pytest.raises(openai.BadRequestError) as caught:
        served.client.responses.create(**request)
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["type"] == "invalid_request_error"
    assert body["param"] == param, body
    if named:
        assert param in body["message"], body
    for internal in ("messages", "tool_call_id", "function.", "max_tokens"):
        assert internal not in body["message"], body
    assert served.engine.records == []  # refused before the model ran


def test_a_streamed_error_names_the_responses_fields(served: Served) -> None:
    body = {
        "model": MODEL,
        "input": [{"role": "user", "content": "hi"}, {"role": "user", "content": [TEXT, IMAGE]}],
        "stream": True,
    }
    with httpx.stream("POST", served.url + "/v1/responses", json=body, timeout=60) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    last = json.loads(lines[-1].removeprefix("data: "))
    assert last["type"] == "response.failed"
    error = last["response"]["error"]
    assert error["param"] == "input[1].content[1]", error
    assert "messages" not in json.dumps(last)


# --- 11. the real bundled model -------------------------------------------------------------------
def test_real_model_answers(server: KaiyuanServer) -> None:
    with server.client(timeout=120) as client:
        response = client.responses.create(
            model=REAL_MODEL,
            input="What is the capital of France?",
            max_output_tokens=30,
            temperature=0,
        )
    assert response.model == REAL_MODEL
    assert response.status in ("completed", "incomplete")
    if response.status == "incomplete":
        assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text.strip()
    assert response.output[-1].type == "message"
    assert 0 < response.usage.output_tokens <= 30
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


# --- 12. MCP tools that need the user's approval --------------------------------------------------
NOTES = {"type": "mcp", "server_label": "notes"}


@dataclass
class Notes:
    served: Served
    file: Path  # what the MCP server's write_note tool appends to


@pytest.fixture
def notes(home: Path, tmp_path: Path) -> Iterator[Notes]:
    """A real MCP server over stdio (tests/test_mcp.py's): add is read-only, write_note has
    side effects."""
    from tests.test_mcp import SERVER

    script = tmp_path / "notes_server.py"
    script.write_text(SERVER)
    file = tmp_path / "notes.txt"
    server = {"command": sys.executable, "args": [str(script), "stdio", str(file)]}
    with serving(home, mcp_servers={"notes": server}) as served:
        yield Notes(served, file)


def calls(*pairs: tuple[str, dict[str, Any]]) -> Reply:
    """Several tool calls in one model turn."""
    bodies = [json.dumps({"name": name, "arguments": arguments}) for name, arguments in pairs]
    return Reply(list("".join(f"<tool_call>\n{body}\n</tool_call>\n" for body in bodies)))


def answer(request_id: str, approve: bool) -> list[Any]:
    return [{"type": "mcp_approval_response", "approval_request_id": request_id,
             "approve": approve}]  # fmt: skip


def test_a_side_effect_call_waits_for_approval_then_runs(notes: Notes) -> None:
    served = notes.served
    first = served.create(
        calls(("notes__add", {"a": 20, "b": 22}), ("notes__write_note", {"text": "buy milk"})),
        input="Add 20 and 22, and note: buy milk.",
        tools=[NOTES],
    )
    # the read-only call ran; the one with side effects waits, unrun
    assert first.status == "completed"
    assert [item.type for item in first.output] == ["mcp_call", "mcp_approval_request"]
    added, request = first.output
    assert added.name == "add" and added.output == "42" and added.approval_request_id is None
    assert request.server_label == "notes" and request.name == "write_note"
    assert json.loads(request.arguments) == {"text": "buy milk"}
    assert request.id.startswith("mcpr_")
    assert not notes.file.exists()
    assert len(served.engine.records) == 1
    trace = Traces(served.home).get(first.id.removeprefix("resp_"))
    assert trace["stop_reason"] == "approval"
    steps = [(s["kind"], s["name"]) for s in trace["trace"]]
    assert steps == [("model", MODEL), ("tool", "notes__add")]

    second = served.create(
        say("Noted, and it is 42."),
        previous_response_id=first.id,
        input=answer(request.id, True),
        tools=[NOTES],
    )
    assert second.status == "completed" and second.output_text == "Noted, and it is 42."
    assert [item.type for item in second.output] == ["mcp_call", "message"]
    ran = second.output[0]
    assert ran.name == "write_note" and ran.status == "completed" and ran.output == "saved"
    assert ran.approval_request_id == request.id
    assert notes.file.read_text() == "buy milk\n"
    # the model saw both results, each after the call it answers, and no tool ran twice
    prompt = served.prompt()
    asked = prompt.index('<tool_call>\n{"name": "notes__write_note", "arguments"')
    assert prompt.index("Add 20 and 22") < asked < prompt.index('"text": "saved"')
    assert prompt.index('"text": "42"') < prompt.index('"text": "saved"')
    assert len(served.engine.records) == 2
    trace = Traces(served.home).get(second.id.removeprefix("resp_"))
    steps = [(s["kind"], s["name"]) for s in trace["trace"]]
    assert steps == [("tool", "notes__write_note"), ("model", MODEL)]


def test_a_refused_call_is_not_run_and_the_model_is_told(notes: Notes) -> None:
    served = notes.served
    first = served.create(call("notes__write_note", text="rm -rf"), input="Note it.", tools=[NOTES])
    [request] = first.output
    second = served.create(
        say("I did not write the note."),
        previous_response_id=first.id,
        input=answer(request.id, False),
        tools=[NOTES],
    )
    assert [item.type for item in second.output] == ["message"]
    assert not notes.file.exists()
    prompt = served.prompt()
    call_made = prompt.index('<tool_call>\n{"name": "notes__write_note", "arguments"')
    assert "the user did not approve this call" in prompt[call_made:]


def test_an_unanswered_request_is_refused_when_the_user_writes_on(notes: Notes) -> None:
    served = notes.served
    first = served.create(call("notes__write_note", text="x"), input="Note x.", tools=[NOTES])
    assert first.output[0].type == "mcp_approval_request"
    second = served.create(
        say("Fine."), previous_response_id=first.id, input="Never mind.", tools=[NOTES]
    )
    assert second.output_text == "Fine." and not notes.file.exists()
    prompt = served.prompt()
    assert prompt.index("the user did not approve") < prompt.index("Never mind.")
    # the same when the MCP server is not offered again
    third = served.create(call("notes__write_note", text="y"), input="Note y.", tools=[NOTES])
    served.create(say("Ok."), previous_response_id=third.id, input="Forget it.")
    assert "the user did not approve" in served.prompt() and not notes.file.exists()


@pytest.mark.parametrize(
    ("setting", "tool", "asks"),
    [
        ("never", "write_note", False),
        ({"never": {"tool_names": ["write_note"]}}, "write_note", False),
        ({"never": {"tool_names": ["add"]}}, "write_note", True),
        ("always", "add", True),
        ({"always": {"tool_names": ["add"]}}, "add", True),
    ],
    ids=["never", "never-named", "never-other", "always", "always-named"],
)
def test_require_approval(notes: Notes, setting: Any, tool: str, asks: bool) -> None:
    arguments = {"text": "hi"} if tool == "write_note" else {"a": 1, "b": 2}
    response = notes.served.create(
        call(f"notes__{tool}", **arguments),
        say("Done."),
        input="go",
        tools=[{**NOTES, "require_approval": setting}],
    )
    notes.served.engine.replies.clear()
    kinds = [item.type for item in response.output]
    assert kinds == (["mcp_approval_request"] if asks else ["mcp_call", "message"])
    assert notes.file.exists() == (tool == "write_note" and not asks)


def test_approval_requests_stream_as_items(notes: Notes) -> None:
    served = notes.served
    events = list(
        served.create(
            call("notes__write_note", text="z"), input="Note z.", tools=[NOTES], stream=True
        )
    )
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.output_item.done",
        "response.completed",
    ]
    request = events[3].item
    assert request.type == "mcp_approval_request" and events[2].item == request
    assert events[-1].response.output == [request]
    resumed = list(
        served.create(
            say("Saved."), previous_response_id=events[-1].response.id,
            input=answer(request.id, True), tools=[NOTES], stream=True,
        )
    )  # fmt: skip
    assert [e.type for e in resumed][2:6] == [
        "response.output_item.added",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.output_item.done",
    ]
    assert resumed[5].item.output == "saved" and resumed[-1].response.output_text == "Saved."
    assert notes.file.read_text() == "z\n"


def test_approval_answers_that_do_not_fit_are_client_errors(notes: Notes) -> None:
    served = notes.served
    first = served.create(call("notes__write_note", text="w"), input="Note w.", tools=[NOTES])
    [request] = first.output
    asked = len(served.engine.records)
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"input": answer("mcpr_nothing", True), "previous_response_id": first.id,
          "tools": [NOTES]}, "input[0].approval_request_id", "no approval request"),
        ({"input": answer(request.id, True), "previous_response_id": first.id},
         "input[0].approval_request_id", "offer its tools again"),
        ({"input": answer(request.id, True), "tools": [NOTES]},
         "input[0].approval_request_id", "no approval request"),
        ({"input": answer("call_1", True), "tools": [NOTES]},
         "input[0].approval_request_id", "mcpr_"),
        ({"input": [{"type": "mcp_approval_response", "approval_request_id": request.id,
                     "approve": "yes"}], "previous_response_id": first.id, "tools": [NOTES]},
         "input[0].approve", "true or false"),
        ({"input": "x", "tools": [{**NOTES, "require_approval": "sometimes"}]},
         "tools[0].require_approval", "always"),
    ]  # fmt: skip
    for fields, param, says in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            served.client.responses.create(model=MODEL, **fields)
        body = caught.value.body
        assert isinstance(body, dict) and body["param"] == param, body
        assert says in body["message"], body
    assert len(served.engine.records) == asked and not notes.file.exists()
    # answering twice: the first answer ran it, the second finds nothing waiting
    served.create(say("ok"), previous_response_id=first.id, input=answer(request.id, True),
                  tools=[NOTES])  # fmt: skip
    second = Traces(served.home).runs(1)[0]["id"]
    with pytest.raises(openai.BadRequestError):
        served.client.responses.create(
            model=MODEL, previous_response_id=f"resp_{second}", input=answer(request.id, True),
            tools=[NOTES],
        )  # fmt: skip
    assert notes.file.read_text() == "w\n"
