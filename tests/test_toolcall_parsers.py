"""Tool-call parsers and the reasoning splitter, fed recorded model outputs.

Every transcript is fed whole, one character at a time, split in two at every position and in
random fragments (fixed seeds): how the text arrives must never change what is parsed. The
concatenated text and the calls (name + decoded arguments) are compared with expected values.
A block that does not parse comes back as text with its markers intact, never dropped.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kaiyuan.chat.reasoning import Answer, Reasoning, ReasoningSplitter
from kaiyuan.chat.template import ChatTemplate
from kaiyuan.chat.toolcalls import PARSERS, Text, ToolCall, detect
from kaiyuan.chat.toolcalls import make as make_parser
from kaiyuan.config import TOOL_PARSERS

# DeepSeek's markers: full-width bar U+FF5C and U+2581 in place of spaces.
CALLS_BEGIN, CALLS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
CALL_BEGIN, CALL_END, SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"
PYTHON_TAG = "<|python_tag|>"

SEEDS = (0, 1, 2, 3, 7, 42, 2024)

_STR: dict[str, Any] = {"type": "string"}
_INT: dict[str, Any] = {"type": "integer"}
_BOOL: dict[str, Any] = {"type": "boolean"}


def _schema(**properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


SCHEMAS: dict[str, dict[str, Any]] = {
    "get_current_weather": _schema(
        location=_STR, unit={"type": "string", "enum": ["celsius", "fahrenheit"]}
    ),
    "get_weather": _schema(city=_STR, days=_INT),
    "search": _schema(query=_STR, limit=_INT, safe=_BOOL, filters={"type": "object"}),
    "write_file": _schema(path=_STR, content=_STR, overwrite=_BOOL),
    "send_message": _schema(to={"type": "array", "items": _STR}, text=_STR),
    "create_event": _schema(
        title=_STR,
        attendees={"type": "array"},
        meta={"type": "object"},
        priority=_INT,
        note=_STR,
    ),
    "lookup_user": _schema(
        user_id=_STR,
        zip=_STR,
        flag_text=_STR,
        raw_json=_STR,
        include_history=_BOOL,
        limit=_INT,
        ratio={"type": "number"},
        tags={"type": "array", "items": _STR},
        options={"type": "object"},
        nothing={"type": "null"},
    ),
}

Call = tuple[str, dict[str, Any]]


# --------------------------------------------------------------------------- helpers


def normalise(events: Sequence[object]) -> list[tuple[Any, ...]]:
    """Events as ``("text", str)`` / ``("call", name, arguments)``, adjacent text merged."""
    out: list[tuple[Any, ...]] = []
    for event in events:
        if isinstance(event, Text):
            assert isinstance(event.text, str)
            if not event.text:
                continue
            if out and out[-1][0] == "text":
                out[-1] = ("text", out[-1][1] + event.text)
            else:
                out.append(("text", event.text))
        elif isinstance(event, ToolCall):
            assert isinstance(event.name, str) and event.name
            assert isinstance(event.arguments, str), event
            arguments = json.loads(event.arguments)
            assert isinstance(arguments, dict), f"arguments not an object: {event.arguments!r}"
            out.append(("call", event.name, arguments))
        else:
            raise AssertionError(f"unexpected event {event!r}")
    return out


def outcome(items: list[tuple[Any, ...]]) -> tuple[str, list[Call]]:
    """(all the text, concatenated; the calls in order)."""
    text = "".join(item[1] for item in items if item[0] == "text")
    calls = [(item[1], item[2]) for item in items if item[0] == "call"]
    return text, calls


def random_pieces(text: str, seed: int) -> list[str]:
    rng = random.Random(seed)
    pieces, i = [], 0
    while i < len(text):
        n = rng.randint(1, 9)
        pieces.append(text[i : i + n])
        i += n
    return pieces


def fragmentations(text: str) -> Iterator[tuple[str, list[str]]]:
    yield "whole", [text]
    yield "one character at a time", list(text)
    for i in range(len(text) + 1):
        yield f"split at {i}", [text[:i], text[i:]]
    for seed in SEEDS:
        yield f"random fragments (seed {seed})", random_pieces(text, seed)


def parse(
    parser: str, pieces: Sequence[str], schemas: dict[str, dict[str, Any]] | None = None
) -> list[tuple[Any, ...]]:
    p = make_parser(parser, SCHEMAS if schemas is None else schemas)
    events: list[object] = []
    for piece in pieces:
        events.extend(p.feed(piece))
    events.extend(p.finish())
    return normalise(events)


def assert_every_fragmentation(
    parser: str,
    output: str,
    expected: tuple[str, list[Call]],
    schemas: dict[str, dict[str, Any]] | None = None,
) -> None:
    whole = parse(parser, [output], schemas)
    failures = []
    for label, pieces in fragmentations(output):
        items = parse(parser, pieces, schemas)
        got = outcome(items)
        if got != expected:
            failures.append(f"{label}: got {got!r}")
        elif items != whole:
            failures.append(f"{label}: same text and calls, different order: {items!r}")
    if failures:
        shown = "\n".join(failures[:6])
        raise AssertionError(
            f"{len(failures)} fragmentation(s) of {output!r} with {parser} differ\n"
            f"expected {expected!r}\n{shown}"
        )


def hermes(name: str, arguments: dict[str, Any]) -> str:
    """A Hermes block exactly as Qwen writes it (json.dumps spacing, unicode kept)."""
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"<tool_call>\n{body}\n</tool_call>"


def coder(name: str, *params: tuple[str, str]) -> str:
    """A Qwen3-Coder XML block; values are written raw, one newline either side."""
    body = "".join(f"<parameter={key}>\n{value}\n</parameter>\n" for key, value in params)
    return f"<tool_call>\n<function={name}>\n{body}</function>\n</tool_call>"


def v3(name: str, arguments: str) -> str:
    """One DeepSeek-V3/R1 call: the word function, the name, then fenced JSON."""
    return f"{CALL_BEGIN}function{SEP}{name}\n```json\n{arguments}\n```{CALL_END}"


def v31(name: str, arguments: str) -> str:
    """One DeepSeek-V3.1 call: name, separator, bare JSON."""
    return f"{CALL_BEGIN}{name}{SEP}{arguments}{CALL_END}"


def dumps(value: Any, **kwargs: Any) -> str:
    return json.dumps(value, ensure_ascii=False, **kwargs)


# --------------------------------------------------------------------------- transcripts

# Arguments that stress every parser: nesting, arrays, 中文, escaped quotes, backslashes, and
# strings holding ';', '}', fences and marker-like text (a prefix of each family's end marker).
COMPLEX_ARGS: dict[str, Any] = {
    "title": '季度复盘 "Q3" review; room {A}',
    "attendees": [
        {"name": "张伟", "email": "zhang.wei@example.com"},
        {"name": "O'Brien", "email": "ob@example.com", "optional": True},
    ],
    "meta": {
        "tags": ["a;b", "c}d", "{", "</tool_call", "</function", "<｜tool▁call▁end", "```"],
        "nested": {"level": 2, "ratio": 0.75, "none": None, "empty": {}, "grid": [[1, 2], []]},
    },
    "priority": 1,
    "note": 'line one\nline two: a backslash \\ and a tab\t"end"; }',
}

WEATHER_SF = {"location": "San Francisco, CA, USA", "unit": "fahrenheit"}
WEATHER_BJ = {"location": "北京", "unit": "celsius"}

PY_CODE = (
    "def greet(name: str) -> str:\n"
    '    """Say hi; return {name}."""\n'
    '    if len(name) < 3 and name != "</param":\n'
    '        return f"你好, {name}! \\"quoted\\" }"\n'
    "    return name\n"
)


@dataclass
class Case:
    id: str
    parser: str
    output: str
    text: str
    calls: list[Call] = field(default_factory=list)


CASES: list[Case] = [
    # --- Qwen2.5 / Qwen3, Hermes style -------------------------------------------------
    Case(
        "hermes/plain",
        "hermes",
        'Paris is the capital of France. As JSON: {"capital": "Paris"}; in HTML: '
        "<b>Paris</b>, and 3 < 4 > 2.",
        'Paris is the capital of France. As JSON: {"capital": "Paris"}; in HTML: '
        "<b>Paris</b>, and 3 < 4 > 2.",
    ),
    Case(
        "hermes/plain-ending-in-a-marker-prefix",
        "hermes",
        "Wrap each call in the <tool",
        "Wrap each call in the <tool",
    ),
    Case(
        "hermes/one-call",
        "hermes",
        '<tool_call>\n{"name": "get_current_weather", "arguments": {"location": '
        '"San Francisco, CA, USA", "unit": "fahrenheit"}}\n</tool_call>',
        "",
        [("get_current_weather", WEATHER_SF)],
    ),
    Case(
        "hermes/text-before-call",
        "hermes",
        "I'll check the current weather in Beijing for you.\n\n"
        + hermes("get_current_weather", WEATHER_BJ),
        "I'll check the current weather in Beijing for you.\n\n",
        [("get_current_weather", WEATHER_BJ)],
    ),
    Case(
        "hermes/parallel-3",
        "hermes",
        hermes("get_current_weather", {"location": "Tokyo", "unit": "celsius"})
        + "\n"
        + hermes("get_current_weather", {"location": "Paris", "unit": "celsius"})
        + "\n"
        + hermes("search", {"query": "best time to visit Tokyo", "limit": 3}),
        "\n\n",
        [
            ("get_current_weather", {"location": "Tokyo", "unit": "celsius"}),
            ("get_current_weather", {"location": "Paris", "unit": "celsius"}),
            ("search", {"query": "best time to visit Tokyo", "limit": 3}),
        ],
    ),
    Case(
        "hermes/complex-arguments-and-trailing-text",
        "hermes",
        "Scheduling it now.\n" + hermes("create_event", COMPLEX_ARGS) + "\nDone — it is queued.",
        "Scheduling it now.\n\nDone — it is queued.",
        [("create_event", COMPLEX_ARGS)],
    ),
    Case(
        "hermes/start-marker-inside-a-string",
        "hermes",
        hermes("write_file", {"path": "notes.md", "content": "Use <tool_call> tags; {x}"}),
        "",
        [("write_file", {"path": "notes.md", "content": "Use <tool_call> tags; {x}"})],
    ),
    Case(
        # What a grammar-forced call can be: the end marker inside a string is content.
        "hermes/end-marker-inside-a-string",
        "hermes",
        hermes("get_weather", {"city": 'Rome }}</tool_call>  # a "quoted\\" end'}) + " after",
        " after",
        [("get_weather", {"city": 'Rome }}</tool_call>  # a "quoted\\" end'})],
    ),
    Case(
        "hermes/unclosed-string-holds-the-block-to-the-end",
        "hermes",
        '<tool_call>\n{"name": "search", "arguments": {"query": "x}}\n</tool_call> more',
        '<tool_call>\n{"name": "search", "arguments": {"query": "x}}\n</tool_call> more',
    ),
    Case(
        "hermes/arguments-as-json-text",
        "hermes",
        '<tool_call>\n{"name": "search", "arguments": "{\\"query\\": \\"rust async\\"}"}'
        "\n</tool_call>",
        "",
        [("search", {"query": "rust async"})],
    ),
    Case(
        "hermes/call-without-arguments",
        "hermes",
        '<tool_call>\n{"name": "list_files"}\n</tool_call>',
        "",
        [("list_files", {})],
    ),
    # Broken JSON, parsed leniently (the code claims trailing commas, Python literals and
    # missing closing braces).
    Case(
        "hermes/lenient-trailing-commas",
        "hermes",
        '<tool_call>\n{"name": "search", "arguments": {"query": "rust async", "limit": 5,},}'
        "\n</tool_call>",
        "",
        [("search", {"query": "rust async", "limit": 5})],
    ),
    Case(
        "hermes/lenient-python-dict",
        "hermes",
        "<tool_call>\n{'name': 'search', 'arguments': {'query': \"O'Reilly books\", "
        "'safe': True, 'filters': None, 'limit': 10}}\n</tool_call>",
        "",
        [("search", {"query": "O'Reilly books", "safe": True, "filters": None, "limit": 10})],
    ),
    Case(
        "hermes/lenient-missing-closing-brace",
        "hermes",
        '<tool_call>\n{"name": "get_current_weather", "arguments": {"location": "Boston, MA"}'
        "\n</tool_call>",
        "",
        [("get_current_weather", {"location": "Boston, MA"})],
    ),
    # Truly broken blocks: returned as text, markers intact.
    Case(
        "hermes/broken-not-json",
        "hermes",
        "<tool_call>{not json</tool_call>",
        "<tool_call>{not json</tool_call>",
    ),
    Case(
        "hermes/broken-between-text",
        "hermes",
        'Let me try.\n<tool_call>\n{"name": "search", "arguments": {"query": }\n</tool_call>\n'
        "Sorry, that went wrong.",
        'Let me try.\n<tool_call>\n{"name": "search", "arguments": {"query": }\n</tool_call>\n'
        "Sorry, that went wrong.",
    ),
    Case(
        "hermes/broken-name-not-a-string",
        "hermes",
        '<tool_call>\n{"name": ["search"], "arguments": {}}\n</tool_call>',
        '<tool_call>\n{"name": ["search"], "arguments": {}}\n</tool_call>',
    ),
    Case(
        "hermes/broken-no-name",
        "hermes",
        '<tool_call>\n{"arguments": {"query": "x"}}\n</tool_call>',
        '<tool_call>\n{"arguments": {"query": "x"}}\n</tool_call>',
    ),
    Case(
        "hermes/broken-arguments-not-an-object",
        "hermes",
        '<tool_call>\n{"name": "search", "arguments": ["x", 1]}\n</tool_call>',
        '<tool_call>\n{"name": "search", "arguments": ["x", 1]}\n</tool_call>',
    ),
    Case(
        "hermes/good-call-then-broken-block",
        "hermes",
        hermes("search", {"query": "a"}) + "\n<tool_call>\n{oops}\n</tool_call>",
        "\n<tool_call>\n{oops}\n</tool_call>",
        [("search", {"query": "a"})],
    ),
    Case(
        "hermes/empty-block",
        "hermes",
        "<tool_call>\n</tool_call>",
        "<tool_call>\n</tool_call>",
    ),
    # Cut off by the end of generation (no end marker).
    Case(
        "hermes/cut-off-complete-json",
        "hermes",
        '<tool_call>\n{"name": "get_current_weather", "arguments": {"location": "Paris"}}\n',
        "",
        [("get_current_weather", {"location": "Paris"})],
    ),
    Case(
        "hermes/cut-off-mid-string",
        "hermes",
        'OK.\n<tool_call>\n{"name": "get_current_weather", "arguments": {"location": "Par',
        'OK.\n<tool_call>\n{"name": "get_current_weather", "arguments": {"location": "Par',
    ),
    Case(
        "hermes/cut-off-mid-name",
        "hermes",
        '<tool_call>\n{"name": "get_cur',
        '<tool_call>\n{"name": "get_cur',
    ),
    Case(
        "hermes/cut-off-right-after-start-marker",
        "hermes",
        "Checking.\n<tool_call>",
        "Checking.\n<tool_call>",
    ),
    Case(
        "hermes/cut-off-inside-the-end-marker",
        "hermes",
        '<tool_call>\n{"name": "get_current_weather", "arguments": {"location": "Paris"}}\n</tool_',
        "",
        [("get_current_weather", {"location": "Paris"})],
    ),
    Case(
        "hermes/cut-off-after-a-complete-value-but-unclosed-object",
        "hermes",
        '<tool_call>\n{"name": "delete_file", "arguments": {"path": "/tmp/build"',
        '<tool_call>\n{"name": "delete_file", "arguments": {"path": "/tmp/build"',
    ),
    # --- Qwen3-Coder XML -----------------------------------------------------------------
    Case(
        "qwen3_coder/plain",
        "qwen3_coder",
        'Here is the fix:\n\n```python\nif a < b:\n    print("<function=x>")\n```\n',
        'Here is the fix:\n\n```python\nif a < b:\n    print("<function=x>")\n```\n',
    ),
    Case(
        "qwen3_coder/one-call",
        "qwen3_coder",
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nBeijing\n</parameter>\n"
        "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>",
        "",
        [("get_weather", {"city": "Beijing", "days": 3})],
    ),
    Case(
        "qwen3_coder/text-before-call",
        "qwen3_coder",
        "I'll create the config file first.\n"
        + coder(
            "write_file",
            ("path", "src/config.py"),
            ("content", "DEBUG = True"),
            ("overwrite", "false"),
        ),
        "I'll create the config file first.\n",
        [("write_file", {"path": "src/config.py", "content": "DEBUG = True", "overwrite": False})],
    ),
    Case(
        "qwen3_coder/parallel-2",
        "qwen3_coder",
        coder("get_weather", ("city", "Shanghai"), ("days", "1"))
        + "\n"
        + coder("get_weather", ("city", "深圳"), ("days", "2")),
        "\n",
        [
            ("get_weather", {"city": "Shanghai", "days": 1}),
            ("get_weather", {"city": "深圳", "days": 2}),
        ],
    ),
    Case(
        "qwen3_coder/parallel-3-different-functions",
        "qwen3_coder",
        coder("search", ("query", "tokio select!"), ("limit", "5"))
        + "\n"
        + coder("get_weather", ("city", "Hangzhou"), ("days", "7"))
        + "\n"
        + coder("send_message", ("to", '["alice", "bob"]'), ("text", "Build is green; ship it}")),
        "\n\n",
        [
            ("search", {"query": "tokio select!", "limit": 5}),
            ("get_weather", {"city": "Hangzhou", "days": 7}),
            ("send_message", {"to": ["alice", "bob"], "text": "Build is green; ship it}"}),
        ],
    ),
    Case(
        "qwen3_coder/complex-values",
        "qwen3_coder",
        coder("write_file", ("path", "src/greet.py"), ("content", PY_CODE), ("overwrite", "true"))
        + "\n"
        + coder(
            "create_event",
            ("title", COMPLEX_ARGS["title"]),
            ("attendees", dumps(COMPLEX_ARGS["attendees"], indent=2)),
            ("meta", dumps(COMPLEX_ARGS["meta"])),
            ("priority", "1"),
            ("note", COMPLEX_ARGS["note"]),
        ),
        "\n",
        [
            ("write_file", {"path": "src/greet.py", "content": PY_CODE, "overwrite": True}),
            ("create_event", COMPLEX_ARGS),
        ],
    ),
    Case(
        "qwen3_coder/broken-not-xml",
        "qwen3_coder",
        "<tool_call>{not json</tool_call>",
        "<tool_call>{not json</tool_call>",
    ),
    Case(
        "qwen3_coder/cut-off-after-function-end",
        "qwen3_coder",
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n",
        "",
        [("get_weather", {"city": "Paris"})],
    ),
    Case(
        "qwen3_coder/cut-off-mid-value",
        "qwen3_coder",
        "<tool_call>\n<function=write_file>\n<parameter=path>\n/etc/app.conf\n</parameter>\n"
        "<parameter=content>\nport = 80",
        "<tool_call>\n<function=write_file>\n<parameter=path>\n/etc/app.conf\n</parameter>\n"
        "<parameter=content>\nport = 80",
    ),
    # --- DeepSeek V3 / R1 ---------------------------------------------------------------
    Case(
        "deepseek_v3/plain",
        "deepseek_v3",
        "1 + 1 = 2. Full-width bars such as ｜ and <｜ or a fence ```json``` stay text.",
        "1 + 1 = 2. Full-width bars such as ｜ and <｜ or a fence ```json``` stay text.",
    ),
    Case(
        "deepseek_v3/one-call",
        "deepseek_v3",
        f"{CALLS_BEGIN}{CALL_BEGIN}function{SEP}get_weather\n```json\n"
        f'{{"city": "Hangzhou", "days": 2}}\n```{CALL_END}{CALLS_END}',
        "",
        [("get_weather", {"city": "Hangzhou", "days": 2})],
    ),
    Case(
        "deepseek_v3/text-before-call",
        "deepseek_v3",
        "我来帮你查询杭州的天气。\n\n"
        + CALLS_BEGIN
        + v3("get_weather", '{"city": "杭州"}')
        + CALLS_END,
        "我来帮你查询杭州的天气。\n\n",
        [("get_weather", {"city": "杭州"})],
    ),
    Case(
        "deepseek_v3/parallel-3",
        "deepseek_v3",
        CALLS_BEGIN
        + v3("get_weather", '{"city": "Beijing"}')
        + "\n"
        + v3("get_weather", '{"city": "Shanghai"}')
        + "\n"
        + v3("search", '{"query": "typhoon warning", "limit": 2}')
        + CALLS_END,
        "",
        [
            ("get_weather", {"city": "Beijing"}),
            ("get_weather", {"city": "Shanghai"}),
            ("search", {"query": "typhoon warning", "limit": 2}),
        ],
    ),
    Case(
        "deepseek_v3/complex-arguments-pretty-printed",
        "deepseek_v3",
        CALLS_BEGIN
        + v3("create_event", dumps(COMPLEX_ARGS, indent=2))
        + "\n"
        + v3(
            "write_file",
            dumps({"path": "README.md", "content": "# Demo\n\n```python\nprint('hi; }')\n```\n"}),
        )
        + CALLS_END,
        "",
        [
            ("create_event", COMPLEX_ARGS),
            (
                "write_file",
                {"path": "README.md", "content": "# Demo\n\n```python\nprint('hi; }')\n```\n"},
            ),
        ],
    ),
    Case(
        "deepseek_v3/lenient-trailing-comma",
        "deepseek_v3",
        CALLS_BEGIN + v3("search", '{"query": "x", "limit": 1,}') + CALLS_END,
        "",
        [("search", {"query": "x", "limit": 1})],
    ),
    Case(
        "deepseek_v3/broken-json",
        "deepseek_v3",
        "Trying.\n" + CALLS_BEGIN + v3("get_weather", '{"city": ') + CALLS_END,
        "Trying.\n" + CALLS_BEGIN + v3("get_weather", '{"city": ') + CALLS_END,
    ),
    Case(
        "deepseek_v3/cut-off-before-calls-end",
        "deepseek_v3",
        CALLS_BEGIN + v3("get_weather", '{"city": "Wuhan"}'),
        "",
        [("get_weather", {"city": "Wuhan"})],
    ),
    Case(
        "deepseek_v3/cut-off-after-closing-fence",
        "deepseek_v3",
        f'{CALLS_BEGIN}{CALL_BEGIN}function{SEP}get_weather\n```json\n{{"city": "Wuhan"}}\n```',
        "",
        [("get_weather", {"city": "Wuhan"})],
    ),
    Case(
        "deepseek_v3/cut-off-after-json-before-closing-fence",
        "deepseek_v3",
        f'{CALLS_BEGIN}{CALL_BEGIN}function{SEP}get_weather\n```json\n{{"city": "Wuhan"}}\n',
        "",
        [("get_weather", {"city": "Wuhan"})],
    ),
    Case(
        "deepseek_v3/cut-off-mid-json",
        "deepseek_v3",
        f'{CALLS_BEGIN}{CALL_BEGIN}function{SEP}get_weather\n```json\n{{"city": "Wu',
        f'{CALLS_BEGIN}{CALL_BEGIN}function{SEP}get_weather\n```json\n{{"city": "Wu',
    ),
    # --- DeepSeek V3.1 ------------------------------------------------------------------
    Case(
        "deepseek_v31/plain",
        "deepseek_v31",
        "你好！我是 DeepSeek-V3.1。有什么可以帮你？",
        "你好！我是 DeepSeek-V3.1。有什么可以帮你？",
    ),
    Case(
        "deepseek_v31/one-call",
        "deepseek_v31",
        f'{CALLS_BEGIN}{CALL_BEGIN}get_weather{SEP}{{"city": "Tokyo", "days": 1}}'
        f"{CALL_END}{CALLS_END}",
        "",
        [("get_weather", {"city": "Tokyo", "days": 1})],
    ),
    Case(
        "deepseek_v31/text-before-call",
        "deepseek_v31",
        "I'll search for that."
        + CALLS_BEGIN
        + v31("search", '{"query":"DeepSeek V3.1 release"}')
        + CALLS_END,
        "I'll search for that.",
        [("search", {"query": "DeepSeek V3.1 release"})],
    ),
    Case(
        "deepseek_v31/parallel-3-chained",
        "deepseek_v31",
        CALLS_BEGIN
        + v31("get_weather", '{"city": "Tokyo"}')
        + v31("get_weather", '{"city": "Osaka"}')
        + v31("send_message", '{"to": ["ops"], "text": "checked 2 cities; ok}"}')
        + CALLS_END,
        "",
        [
            ("get_weather", {"city": "Tokyo"}),
            ("get_weather", {"city": "Osaka"}),
            ("send_message", {"to": ["ops"], "text": "checked 2 cities; ok}"}),
        ],
    ),
    Case(
        "deepseek_v31/complex-arguments",
        "deepseek_v31",
        CALLS_BEGIN + v31("create_event", dumps(COMPLEX_ARGS)) + CALLS_END,
        "",
        [("create_event", COMPLEX_ARGS)],
    ),
    Case(
        "deepseek_v31/lenient-python-dict",
        "deepseek_v31",
        CALLS_BEGIN + v31("search", "{'query': 'x', 'safe': False}") + CALLS_END,
        "",
        [("search", {"query": "x", "safe": False})],
    ),
    Case(
        "deepseek_v31/broken-json",
        "deepseek_v31",
        CALLS_BEGIN + v31("search", "{query: x") + CALLS_END + " after",
        CALLS_BEGIN + v31("search", "{query: x") + CALLS_END + " after",
    ),
    Case(
        "deepseek_v31/cut-off-complete-json",
        "deepseek_v31",
        f'{CALLS_BEGIN}{CALL_BEGIN}get_weather{SEP}{{"city": "Nara"}}',
        "",
        [("get_weather", {"city": "Nara"})],
    ),
    Case(
        "deepseek_v31/cut-off-mid-json",
        "deepseek_v31",
        f'{CALLS_BEGIN}{CALL_BEGIN}get_weather{SEP}{{"city": "Na',
        f'{CALLS_BEGIN}{CALL_BEGIN}get_weather{SEP}{{"city": "Na',
    ),
    # --- Llama 3.1 / 3.2 ----------------------------------------------------------------
    Case(
        "llama3/plain",
        "llama3",
        "The weather in Paris is usually mild in spring.",
        "The weather in Paris is usually mild in spring.",
    ),
    Case(
        "llama3/plain-html",
        "llama3",
        "<b>bold</b> and <|not a tag|>",
        "<b>bold</b> and <|not a tag|>",
    ),
    Case(
        "llama3/one-call",
        "llama3",
        '{"name": "get_current_weather", "parameters": {"location": "San Francisco, CA", '
        '"unit": "fahrenheit"}}',
        "",
        [("get_current_weather", {"location": "San Francisco, CA", "unit": "fahrenheit"})],
    ),
    Case(
        "llama3/one-call-leading-newlines",
        "llama3",
        '\n\n{"name": "search", "parameters": {"query": "Llama 3.2 1B"}}',
        "",
        [("search", {"query": "Llama 3.2 1B"})],
    ),
    Case(
        "llama3/python-tag",
        "llama3",
        PYTHON_TAG + '{"name": "search", "parameters": {"query": "Llama 3.1 release date"}}',
        "",
        [("search", {"query": "Llama 3.1 release date"})],
    ),
    Case(
        "llama3/arguments-key",
        "llama3",
        '{"name": "search", "arguments": {"query": "x"}}',
        "",
        [("search", {"query": "x"})],
    ),
    Case(
        "llama3/text-before-call-is-text",
        "llama3",
        'Sure! {"name": "search", "parameters": {"query": "x"}}',
        'Sure! {"name": "search", "parameters": {"query": "x"}}',
    ),
    Case(
        "llama3/parallel-semicolon",
        "llama3",
        '{"name": "get_current_weather", "parameters": {"location": "Tokyo"}}; '
        '{"name": "get_current_weather", "parameters": {"location": "Paris; France {FR}"}}; '
        '{"name": "search", "parameters": {"query": "a\\"b;c}"}}',
        "",
        [
            ("get_current_weather", {"location": "Tokyo"}),
            ("get_current_weather", {"location": "Paris; France {FR}"}),
            ("search", {"query": 'a"b;c}'}),
        ],
    ),
    Case(
        "llama3/complex-arguments",
        "llama3",
        dumps({"name": "create_event", "parameters": COMPLEX_ARGS}),
        "",
        [("create_event", COMPLEX_ARGS)],
    ),
    Case(
        "llama3/json-answer-is-text",
        "llama3",
        '{"capital": "Paris", "population": 2102650}',
        '{"capital": "Paris", "population": 2102650}',
    ),
    Case(
        "llama3/brace-prose-is-text",
        "llama3",
        "{ this is not JSON } but prose",
        "{ this is not JSON } but prose",
    ),
    Case(
        "llama3/lenient-trailing-comma",
        "llama3",
        '{"name": "search", "parameters": {"query": "x",},}',
        "",
        [("search", {"query": "x"})],
    ),
    Case(
        "llama3/lenient-python-dict",
        "llama3",
        "{'name': 'search', 'parameters': {'query': 'x', 'safe': True}}",
        "",
        [("search", {"query": "x", "safe": True})],
    ),
    Case(
        "llama3/broken",
        "llama3",
        '{"name": "search", "parameters": {query',
        '{"name": "search", "parameters": {query',
    ),
    Case(
        "llama3/one-good-one-broken-is-all-text",
        "llama3",
        '{"name": "search", "parameters": {}}; {oops',
        '{"name": "search", "parameters": {}}; {oops',
    ),
    Case(
        "llama3/cut-off-mid-string",
        "llama3",
        '{"name": "search", "parameters": {"query": "weather in',
        '{"name": "search", "parameters": {"query": "weather in',
    ),
    Case(
        "llama3/python-tag-prefix-only",
        "llama3",
        "<|python",
        "<|python",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_transcript_in_every_fragmentation(case: Case) -> None:
    assert case.parser in PARSERS
    assert_every_fragmentation(case.parser, case.output, (case.text, case.calls))


def test_transcripts_cover_every_family() -> None:
    assert {case.parser for case in CASES} == set(PARSERS)


def test_settings_name_every_parser() -> None:
    # config.py (the bottom layer) lists the names its tool_parsers validator accepts.
    assert tuple(PARSERS) == TOOL_PARSERS


def test_arguments_are_json_text_with_unicode_kept() -> None:
    [call] = make_parser("hermes", SCHEMAS).feed(hermes("get_current_weather", WEATHER_BJ))
    assert isinstance(call, ToolCall)
    assert json.loads(call.arguments) == WEATHER_BJ
    assert "北京" in call.arguments


def test_text_is_released_as_soon_as_it_cannot_be_a_marker() -> None:
    parser = make_parser("hermes", SCHEMAS)
    assert normalise(parser.feed("Hello <")) == [("text", "Hello ")]  # '<' may start a call
    assert normalise(parser.feed("b>bold")) == [("text", "<b>bold")]
    assert normalise(parser.feed("<tool_call>\n{")) == []
    assert normalise(parser.feed('"name": "search"}\n</tool_call> ok')) == [
        ("call", "search", {}),
        ("text", " ok"),
    ]
    assert parser.finish() == []


# --------------------------------------------------------------------------- lenient JSON


def test_lenient_json_keeps_string_contents() -> None:
    """The trailing-comma repair must not rewrite ', ]' inside a string (Python code)."""
    output = (
        '<tool_call>\n{"name": "run_python", "arguments": '
        '{"code": "xs = [1, 2, ]\\nd = {\\"a\\": 1, }", "timeout": 5,}}\n</tool_call>'
    )
    assert outcome(parse("hermes", [output])) == (
        "",
        [("run_python", {"code": 'xs = [1, 2, ]\nd = {"a": 1, }', "timeout": 5})],
    )


def test_lenient_json_never_evaluates_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    code = f"__import__('os').system('touch {marker}')"
    outputs = {
        "hermes": f"<tool_call>\n{{'name': 'search', 'arguments': {{'q': {code}}}}}\n</tool_call>",
        "deepseek_v31": CALLS_BEGIN + v31("search", f"{{'q': {code}}}") + CALLS_END,
        "llama3": f"{{'name': 'search', 'parameters': {{'q': {code}}}}}",
    }
    for parser, output in outputs.items():
        assert outcome(parse(parser, [output])) == (output, []), parser
    # Qwen3-Coder: a value that is not JSON stays text, even for a non-string parameter.
    assert outcome(parse("qwen3_coder", [coder("search", ("limit", code))]))[1] == [
        ("search", {"limit": code})
    ]
    assert not marker.exists()


_FUZZ_TOKENS = [
    "<tool_call>",
    "</tool_call>",
    "<tool_",
    "<function=f>",
    "<parameter=x>",
    "</parameter>",
    CALLS_BEGIN,
    CALLS_END,
    CALL_BEGIN,
    CALL_END,
    SEP,
    "<｜tool",
    PYTHON_TAG,
    "<|python",
    "{",
    "}",
    "[",
    '"',
    "'",
    ":",
    ";",
    ",",
    "\\",
    "\n",
    " ",
    "abc",
    "中文",
    "```",
    "<",
    ">",
]


@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_garbage_never_crashes_and_is_never_dropped(parser: str) -> None:
    rng = random.Random(1729)
    for _ in range(60):
        output = "".join(rng.choice(_FUZZ_TOKENS) for _ in range(rng.randint(1, 25)))
        whole = parse(parser, [output])
        text, calls = outcome(whole)
        if not calls:
            assert text == output
        for seed in SEEDS[:3]:
            assert parse(parser, random_pieces(output, seed)) == whole, output
        assert parse(parser, list(output)) == whole, output


# --------------------------------------------------------------------------- Qwen3-Coder types


def test_qwen3_coder_schema_driven_types() -> None:
    output = coder(
        "lookup_user",
        ("user_id", "007"),
        ("zip", "02139"),
        ("flag_text", "true"),
        ("raw_json", '{"not": "parsed"}'),
        ("include_history", "true"),
        ("limit", "10"),
        ("ratio", "0.5"),
        ("tags", '["vip", "北京"]'),
        ("options", '{"depth": 2, "fields": ["name", "email"], "strict": false}'),
        ("nothing", "null"),
    )
    [(name, args)] = outcome(parse("qwen3_coder", [output]))[1]
    assert name == "lookup_user"
    assert args == {
        "user_id": "007",
        "zip": "02139",
        "flag_text": "true",
        "raw_json": '{"not": "parsed"}',
        "include_history": True,
        "limit": 10,
        "ratio": 0.5,
        "tags": ["vip", "北京"],
        "options": {"depth": 2, "fields": ["name", "email"], "strict": False},
        "nothing": None,
    }
    assert type(args["limit"]) is int and type(args["include_history"]) is bool


def test_qwen3_coder_string_params_keep_number_like_text() -> None:
    output = coder("get_weather", ("city", "1024"), ("days", "2"))
    assert outcome(parse("qwen3_coder", [output]))[1] == [
        ("get_weather", {"city": "1024", "days": 2})
    ]


def test_qwen3_coder_nullable_string_param_stays_a_string() -> None:
    """OpenAI strict-mode schemas write optional strings as {"type": ["string", "null"]}."""
    schemas = {"set_zip": _schema(zip={"type": ["string", "null"]}, note={"type": "string"})}
    output = coder("set_zip", ("zip", "12345"), ("note", "42"))
    assert outcome(parse("qwen3_coder", [output], schemas))[1] == [
        ("set_zip", {"zip": "12345", "note": "42"})
    ]


def test_qwen3_coder_without_schema_reads_values_leniently() -> None:
    output = coder("unknown_tool", ("count", "3"), ("city", "Paris"), ("code", "007"))
    assert outcome(parse("qwen3_coder", [output], {}))[1] == [
        ("unknown_tool", {"count": 3, "city": "Paris", "code": "007"})
    ]


def test_qwen3_coder_value_is_stripped_of_one_newline_only() -> None:
    output = coder("write_file", ("path", "a.txt"), ("content", "\n  indented\n\n"))
    assert outcome(parse("qwen3_coder", [output]))[1] == [
        ("write_file", {"path": "a.txt", "content": "\n  indented\n\n"})
    ]


# --------------------------------------------------------------------------- Llama 3


def test_llama3_json_answer_with_a_name_key_is_not_a_call() -> None:
    """{"name": ...} without parameters/arguments is data (say, a person), not a call."""
    output = '{"name": "Alice", "age": 30, "city": "Paris"}'
    assert outcome(parse("llama3", [output])) == (output, [])


def test_llama3_text_passes_through_once_decided() -> None:
    parser = make_parser("llama3", SCHEMAS)
    assert parser.feed("  ") == []
    assert parser.feed("<") == []  # could still be <|python_tag|>
    assert normalise(parser.feed("b>")) == [("text", "  <b>")]
    assert normalise(parser.feed(' {"name": "x", "parameters": {}}')) == [
        ("text", ' {"name": "x", "parameters": {}}')
    ]
    assert parser.finish() == []


def test_llama3_call_is_held_until_finish() -> None:
    parser = make_parser("llama3", SCHEMAS)
    assert parser.feed('{"name": "search", ') == []
    assert parser.feed('"parameters": {"query": "x"}}') == []
    assert outcome(normalise(parser.finish())) == ("", [("search", {"query": "x"})])


# --------------------------------------------------------------------------- reasoning


def split(pieces: Sequence[str], *, inside: bool = False) -> tuple[str, str]:
    splitter = ReasoningSplitter(inside=inside)
    events: list[Reasoning | Answer] = []
    for piece in pieces:
        events.extend(splitter.feed(piece))
    events.extend(splitter.finish())
    kinds = [type(e) for e in events]
    assert all(k in (Reasoning, Answer) for k in kinds)
    if Answer in kinds:  # reasoning comes first, then the answer
        assert Reasoning not in kinds[kinds.index(Answer) :], events
    reasoning = "".join(e.text for e in events if isinstance(e, Reasoning))
    answer = "".join(e.text for e in events if isinstance(e, Answer))
    return reasoning, answer


REASONING_CASES = [
    # (id, inside, output, reasoning, answer)
    (
        "qwen3-thinking",
        False,
        "<think>\nThe user asks for 2+2. That's 4.\n</think>\n\n2 + 2 = 4.",
        "The user asks for 2+2. That's 4.\n",
        "2 + 2 = 4.",
    ),
    (
        "deepseek-r1-prompt-opened-think",
        True,
        "Okay, so the user wants 2+2. Simple: 4.\n</think>\n\nThe answer is **4**.",
        "Okay, so the user wants 2+2. Simple: 4.\n",
        "The answer is **4**.",
    ),
    (
        "whitespace-before-think",
        False,
        "\n\n<think>\nhmm\n</think>\n\nok",
        "hmm\n",
        "ok",
    ),
    (
        "qwen3-empty-think",
        False,
        "<think>\n\n</think>\n\nHi there!",
        "",
        "Hi there!",
    ),
    ("no-think-block", False, "Hello! How can I help?", "", "Hello! How can I help?"),
    (
        "think-not-at-start-is-answer",
        False,
        "Answer first. <think>not reasoning</think> still answer",
        "",
        "Answer first. <think>not reasoning</think> still answer",
    ),
    ("html-is-not-swallowed", False, "<b>bold</b> and <i>it</i>", "", "<b>bold</b> and <i>it</i>"),
    ("lone-less-than", False, "<", "", "<"),
    ("prefix-of-think", False, "<thi", "", "<thi"),
    ("leading-newlines-kept-without-think", False, "\n\nHello", "", "\n\nHello"),
    (
        "unclosed-think-is-all-reasoning",
        False,
        "<think>\nStill thinking about </thin",
        "Still thinking about </thin",
        "",
    ),
    ("no-newlines-around-markers", False, "<think>abc</think>xyz", "abc", "xyz"),
    ("inside-no-close", True, "thinking forever", "thinking forever", ""),
    (
        "second-think-in-answer",
        False,
        "<think>a</think>b<think>c</think>",
        "a",
        "b<think>c</think>",
    ),
]


@pytest.mark.parametrize(
    ("inside", "output", "reasoning", "answer"),
    [case[1:] for case in REASONING_CASES],
    ids=[case[0] for case in REASONING_CASES],
)
def test_reasoning_splitter_in_every_fragmentation(
    inside: bool, output: str, reasoning: str, answer: str
) -> None:
    failures = [
        f"{label}: got {got!r}"
        for label, pieces in fragmentations(output)
        if (got := split(pieces, inside=inside)) != (reasoning, answer)
    ]
    assert not failures, (
        f"{len(failures)} fragmentation(s) differ; expected {(reasoning, answer)!r}\n"
        + "\n".join(failures[:6])
    )


def test_think_open_tag_split_across_fragments() -> None:
    assert split(["<th", "ink>plan", " it</th", "ink>", "done"]) == ("plan it", "done")
    assert split(["<", "t", "h", "i", "n", "k", ">", "x", "<", "/think>", "y"]) == ("x", "y")


def test_answer_is_released_without_waiting_for_finish() -> None:
    splitter = ReasoningSplitter()
    assert splitter.feed("<b") == [Answer("<b")]
    assert splitter.feed(">bold</b>") == [Answer(">bold</b>")]
    splitter = ReasoningSplitter(inside=True)
    assert splitter.feed("step one </") == [Reasoning("step one ")]
    assert splitter.feed("think>ok") == [Answer("ok")]


# --------------------------------------------------------------------------- reasoning + calls


def reason_then_parse(
    parser: str, pieces: Sequence[str], *, inside: bool = False
) -> tuple[str, list[tuple[Any, ...]]]:
    """As the server does: split off reasoning, parse tool calls in the answer only."""
    splitter = ReasoningSplitter(inside=inside)
    tools = make_parser(parser, SCHEMAS)
    reasoning: list[str] = []
    events: list[object] = []

    def route(split_events: list[Reasoning | Answer]) -> None:
        for event in split_events:
            if isinstance(event, Reasoning):
                reasoning.append(event.text)
            else:
                events.extend(tools.feed(event.text))

    for piece in pieces:
        route(splitter.feed(piece))
    route(splitter.finish())
    events.extend(tools.finish())
    return "".join(reasoning), normalise(events)


PARIS = {"location": "Paris", "unit": "celsius"}
MARS_CALL = hermes("get_current_weather", {"location": "Mars"})

PIPELINE_CASES = [
    # (id, parser, inside, output, reasoning (stripped), answer text (stripped), calls)
    (
        "qwen3-call-in-think-and-after",
        "hermes",
        False,
        f"<think>\nI could write {MARS_CALL} but Mars has no weather service. "
        f"Paris it is.\n</think>\n\n{hermes('get_current_weather', PARIS)}",
        f"I could write {MARS_CALL} but Mars has no weather service. Paris it is.",
        "",
        [("get_current_weather", PARIS)],
    ),
    (
        "qwen3-call-only-in-think",
        "hermes",
        False,
        f"<think>\nMaybe {MARS_CALL}? No, I can't.\n</think>\n\nI can't check the weather on Mars.",
        f"Maybe {MARS_CALL}? No, I can't.",
        "I can't check the weather on Mars.",
        [],
    ),
    (
        "qwen3-unclosed-think-with-call",
        "hermes",
        False,
        f"<think>\nLet me draft: {MARS_CALL}",
        f"Let me draft: {MARS_CALL}",
        "",
        [],
    ),
    (
        "deepseek-r1-call-after-think",
        "deepseek_v3",
        True,
        "The user wants the weather in Hangzhou. The format is "
        + CALLS_BEGIN
        + v3("get_weather", '{"city": "Mars"}')
        + CALLS_END
        + ", so I'll call it for Hangzhou.\n</think>\n\n"
        + CALLS_BEGIN
        + v3("get_weather", '{"city": "Hangzhou", "days": 1}')
        + CALLS_END,
        "The user wants the weather in Hangzhou. The format is "
        + CALLS_BEGIN
        + v3("get_weather", '{"city": "Mars"}')
        + CALLS_END
        + ", so I'll call it for Hangzhou.",
        "",
        [("get_weather", {"city": "Hangzhou", "days": 1})],
    ),
    (
        "no-think-call",
        "hermes",
        False,
        "Sure.\n" + hermes("search", {"query": "<think> tags"}),
        "",
        "Sure.",
        [("search", {"query": "<think> tags"})],
    ),
]


@pytest.mark.parametrize(
    ("parser", "inside", "output", "reasoning", "answer", "calls"),
    [case[1:] for case in PIPELINE_CASES],
    ids=[case[0] for case in PIPELINE_CASES],
)
def test_calls_inside_think_are_reasoning(
    parser: str,
    inside: bool,
    output: str,
    reasoning: str,
    answer: str,
    calls: list[Call],
) -> None:
    # Text is compared stripped here: whitespace right after the markers is covered (exactly)
    # by test_reasoning_splitter_in_every_fragmentation.
    failures = []
    for label, pieces in fragmentations(output):
        got_reasoning, items = reason_then_parse(parser, pieces, inside=inside)
        got_text, got_calls = outcome(items)
        got = (got_reasoning.strip(), got_text.strip(), got_calls)
        if got != (reasoning, answer, calls):
            failures.append(f"{label}: got {got!r}")
    assert not failures, "\n".join(failures[:6])


# --------------------------------------------------------------------------- detect()

# Short but faithful excerpts of the models' own chat templates (tokenizer_config.json).

QWEN25_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query." }}
    {{- "\n\nYou are provided with function signatures within <tools></tools> XML tags:" }}
    {{- "\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and " }}
    {{- "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n" }}
    {{- "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>" }}
    {{- "<|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. ' }}
        {{- 'You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {{- '<|im_start|>user\n<tool_response>\n' + message.content }}
        {{- '\n</tool_response><|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

QWEN3_CODER_TEMPLATE = r"""{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = [] %}
{%- endif %}
{%- if system_message is defined %}
    {{- "<|im_start|>system\n" + system_message }}
{%- elif tools is iterable and tools | length > 0 %}
    {{- "<|im_start|>system\nYou are Qwen, a helpful AI assistant that can interact with a " }}
    {{- "computer to solve tasks." }}
{%- endif %}
{%- if tools is iterable and tools | length > 0 %}
    {{- "\n\n# Tools\n\nYou have access to the following functions:\n\n<tools>" }}
    {%- for tool in tools %}
        {%- if tool.function is defined %}
            {%- set tool = tool.function %}
        {%- endif %}
        {{- "\n<function>\n<name>" ~ tool.name ~ "</name>" }}
        {{- '\n<description>' ~ (tool.description | trim) ~ '</description>' }}
        {{- '\n<parameters>' }}
        {%- for param_name, param_fields in tool.parameters.properties|items %}
            {{- '\n<parameter>\n<name>' ~ param_name ~ '</name>' }}
            {{- '\n<type>' ~ (param_fields.type | string) ~ '</type>\n</parameter>' }}
        {%- endfor %}
        {{- '\n</parameters>\n</function>' }}
    {%- endfor %}
    {{- "\n</tools>" }}
    {{- '\n\nIf you choose to call a function ONLY reply in the following format with NO '
        'suffix:\n\n<tool_call>\n<function=example_function_name>\n'
        '<parameter=example_parameter_1>\nvalue_1\n</parameter>\n'
        '<parameter=example_parameter_2>\nThis is the value for the second parameter\n'
        'that can span\nmultiple lines\n</parameter>\n</function>\n</tool_call>\n\n'
        '<IMPORTANT>\nReminder:\n- Function calls MUST follow the specified format: an inner '
        '<function=...></function> block must be nested within <tool_call></tool_call> XML '
        'tags\n- Required parameters MUST be specified\n</IMPORTANT>' }}
{%- endif %}
{%- if system_message is defined or (tools is iterable and tools | length > 0) %}
    {{- '<|im_end|>\n' }}
{%- endif %}
{%- for message in loop_messages %}
    {%- if message.role == "assistant" and message.tool_calls is defined %}
        {{- '<|im_start|>' + message.role }}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n<function=' + tool_call.name + '>\n' }}
            {%- for args_name, args_value in tool_call.arguments|items %}
                {{- '<parameter=' + args_name + '>\n' }}
                {%- set args_value = args_value if args_value is string else args_value|tojson %}
                {{- args_value }}
                {{- '\n</parameter>\n' }}
            {%- endfor %}
            {{- '</function>\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

# DeepSeek-R1 (the V3 template is the same in its tool parts): the call type comes from the
# message, `tool['type'] + '<｜tool▁sep｜>'`, so the word "function" is not literally there.
DEEPSEEK_R1_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}"
    "{% endif %}{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, "
    "system_prompt='') %}{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}{{bos_token}}"
    "{{ns.system_prompt}}{%- for message in messages %}{%- if message['role'] == 'user' %}"
    "{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is none %}"
    "{%- set ns.is_tool = false -%}{%- for tool in message['tool_calls']%}"
    "{%- if not ns.is_first %}{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + "
    "tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + "
    "tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}"
    "{%- set ns.is_first = true -%}{%- else %}{{'\\n' + '<｜tool▁call▁begin｜>' + tool['type'] "
    "+ '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json' + '\\n' + "
    "tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}"
    "{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor %}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is not none %}"
    "{%- if ns.is_tool %}{{'<｜tool▁outputs▁end｜>' + message['content'] + "
    "'<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}{%- else %}"
    "{% set content = message['content'] %}{{'<｜Assistant｜>' + content + "
    "'<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}{%- if message['role'] == 'tool' %}"
    "{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}"
    "{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + "
    "'<｜tool▁output▁end｜>'}}{%- set ns.is_output_first = false %}{%- else %}"
    "{{'\\n<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}"
    "{%- endif %}{%- endif %}{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}"
    "{% endif %}{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}"
    "{% endif %}"
)

# A hand-written V3-style template that spells the call type out literally.
DEEPSEEK_V3_LITERAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '<｜User｜>' + message['content'] }}{% elif message['tool_calls'] %}"
    "{{ '<｜Assistant｜><｜tool▁calls▁begin｜>' }}{% for tool in message['tool_calls'] %}"
    "{{ '<｜tool▁call▁begin｜>function<｜tool▁sep｜>' + tool['function']['name'] + "
    "'\\n```json\\n' + tool['function']['arguments'] + '\\n```<｜tool▁call▁end｜>' }}"
    "{% endfor %}{{ '<｜tool▁calls▁end｜><｜end▁of▁sentence｜>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<｜Assistant｜>' }}{% endif %}"
)

DEEPSEEK_V31_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}"
    "{% endif %}{% if not thinking is defined %}{% set thinking = false %}{% endif %}"
    "{% set ns = namespace(is_first=false, is_tool=false, system_prompt='', is_first_sp=true, "
    "is_last_user=false) %}{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{%- if ns.is_first_sp %}{% set ns.system_prompt = ns.system_prompt + message['content'] %}"
    "{% set ns.is_first_sp = false %}{%- else %}{% set ns.system_prompt = ns.system_prompt + "
    "'\\n\\n' + message['content'] %}{%- endif %}{%- endif %}{%- endfor %}{{ bos_token }}"
    "{{ ns.system_prompt }}{%- for message in messages %}{%- if message['role'] == 'user' %}"
    "{%- set ns.is_tool = false -%}{%- set ns.is_first = false -%}"
    "{%- set ns.is_last_user = true -%}{{'<｜User｜>' + message['content']}}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['tool_calls'] is defined and "
    "message['tool_calls'] is not none %}{%- if ns.is_last_user %}{{'<｜Assistant｜></think>'}}"
    "{%- endif %}{%- set ns.is_last_user = false -%}{%- set ns.is_first = false %}"
    "{%- set ns.is_tool = false -%}{%- for tool in message['tool_calls'] %}"
    "{%- if not ns.is_first %}{%- if message['content'] is none %}"
    "{{'<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>'+ tool['function']['name'] + "
    "'<｜tool▁sep｜>' + tool['function']['arguments'] + '<｜tool▁call▁end｜>'}}{%- else %}"
    "{{message['content'] + '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + "
    "tool['function']['name'] + '<｜tool▁sep｜>' + tool['function']['arguments'] + "
    "'<｜tool▁call▁end｜>'}}{%- endif %}{%- set ns.is_first = true -%}{%- else %}"
    "{{'<｜tool▁call▁begin｜>'+ tool['function']['name'] + '<｜tool▁sep｜>' + "
    "tool['function']['arguments'] + '<｜tool▁call▁end｜>'}}{%- endif %}{%- endfor %}"
    "{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}"
    "{%- if message['role'] == 'assistant' and (message['tool_calls'] is not defined or "
    "message['tool_calls'] is none) %}{%- if ns.is_last_user %}{{'<｜Assistant｜></think>'}}"
    "{%- endif %}{%- set ns.is_last_user = false -%}{{ message['content'] + "
    "'<｜end▁of▁sentence｜>' }}{%- endif %}{%- if message['role'] == 'tool' %}"
    "{%- set ns.is_last_user = false -%}{%- set ns.is_tool = true -%}"
    "{{'<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}"
    "{%- endfor -%}{% if add_generation_prompt and ns.is_last_user and not ns.is_tool %}"
    "{% if not thinking %}{{'<｜Assistant｜></think>'}}{% else %}{{'<｜Assistant｜><think>'}}"
    "{% endif %}{% endif %}"
)

LLAMA31_TEMPLATE = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- if tools_in_user_message and not tools is none %}
    {%- set first_user_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument '
        'name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}
{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}
        {{- message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
            {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {{- message.content | tojson if message.content is mapping else message.content }}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

TEMPLATES = {
    "qwen2.5": (QWEN25_TEMPLATE, ("hermes", True)),
    "qwen3-coder": (QWEN3_CODER_TEMPLATE, ("qwen3_coder", True)),
    "deepseek-r1": (DEEPSEEK_R1_TEMPLATE, ("deepseek_v3", False)),
    "deepseek-v3-literal": (DEEPSEEK_V3_LITERAL_TEMPLATE, ("deepseek_v3", False)),
    "deepseek-v3.1": (DEEPSEEK_V31_TEMPLATE, ("deepseek_v31", False)),
    "llama3.1": (LLAMA31_TEMPLATE, ("llama3", True)),
    "llama3": (LLAMA3_TEMPLATE, ("hermes", False)),
    "smollm2": (SMOLLM2_TEMPLATE, ("hermes", False)),
}

PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": "zz_probe_weather",
        "description": "Weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
PROBE_MESSAGES = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "Weather in Paris?"},
]


def renders_tools(template: str) -> bool:
    """Whether the template itself puts a tool list in the prompt."""
    text = ChatTemplate(template, bos_token="<s>").render(PROBE_MESSAGES, tools=[PROBE_TOOL])
    return "zz_probe_weather" in text


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_detect_picks_the_parser_the_model_writes(name: str) -> None:
    template, (parser, _) = TEMPLATES[name]
    assert detect(template)[0] == parser
    assert detect(template)[0] in PARSERS


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_detect_says_whether_the_template_renders_tools(name: str) -> None:
    template, (_, native) = TEMPLATES[name]
    assert renders_tools(template) is native  # the excerpt really behaves as expected
    assert detect(template)[1] is native


def test_detect_without_a_template() -> None:
    assert detect(None) == ("hermes", False)
    assert detect("") == ("hermes", False)


def test_excerpts_write_calls_the_way_the_parser_reads_them() -> None:
    """A call in the history, rendered by the template, parses back with the detected parser
    (the template shows the model the syntax it will answer in)."""
    arguments = {"city": "Paris"}
    for name, history_arguments, start in [
        ("qwen2.5", arguments, "<tool_call>"),
        ("qwen3-coder", arguments, "<tool_call>"),
        ("deepseek-r1", json.dumps(arguments), CALLS_BEGIN),
        ("deepseek-v3-literal", json.dumps(arguments), CALLS_BEGIN),
        ("deepseek-v3.1", json.dumps(arguments), CALLS_BEGIN),
    ]:
        template = TEMPLATES[name][0]
        messages = [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None if "deepseek" in name else "",
                "tool_calls": [
                    {
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": history_arguments},
                    }
                ],
            },
        ]
        rendered = ChatTemplate(template).render(messages, add_generation_prompt=False)
        # The assistant turn's calls, up to the end of the turn (R1's template leaves a
        # single call without <｜tool▁calls▁end｜>; the parser takes that at finish()).
        block = rendered[rendered.index(start) :].split("<｜end▁of▁sentence｜>")[0]
        if start == "<tool_call>":
            block = block[: block.index("</tool_call>") + len("</tool_call>")]
        assert outcome(parse(detect(template)[0], [block])) == (
            "",
            [("get_weather", arguments)],
        ), name
