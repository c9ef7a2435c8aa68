"""What a new user meets first: `kaiyuan agent` ends on time, shows its progress, and never
prints tool-call markup as the answer.

The time limit is tested against endpoints that never answer (kaiyuan's own server over a
scripted engine that hangs, and a socket that never replies): exact timing cannot be scripted
with the real model. The markup tests feed each family's call syntax through kaiyuan's real
server and the real CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import CliRunner, Result

from kaiyuan.agent.loop import Agent, AnswerEvent, TurnStarted, strip_markup
from kaiyuan.agent.traces import Traces
from kaiyuan.chat.toolcalls import ToolCall, make
from kaiyuan.chat.toolcalls.deepseek import CALL_BEGIN, CALL_END, CALLS_BEGIN, CALLS_END, SEP
from kaiyuan.chat.toolcalls.llama3 import PYTHON_TAG
from kaiyuan.cli.main import cli
from kaiyuan.config import Settings
from kaiyuan.engines.pool import EnginePool
from kaiyuan.server import create_app
from kaiyuan.tools.base import builtin
from tests.fakes import Reply, ScriptedEngine
from tests.harness import serve_app
from tests.test_agent import (
    CONTEXT,
    MODEL,
    SLACK,
    Rig,
    answer_of,
    call,
    kaiyuan,
    say,
    tick_tool,
)

CODE = '{"code": "print(2 + 2)"}'
# One call to the code tool in each family's syntax, as its parser reads it.
CALLS = {
    "hermes": f'<tool_call>\n{{"name": "code", "arguments": {CODE}}}\n</tool_call>',
    "qwen3_coder": "<tool_call>\n<function=code>\n<parameter=code>\nprint(2 + 2)\n</parameter>\n"
    "</function>\n</tool_call>",
    "deepseek_v3": f"{CALLS_BEGIN}{CALL_BEGIN}function{SEP}code\n```json\n{CODE}\n```{CALL_END}"
    f"{CALLS_END}",
    "deepseek_v31": f"{CALLS_BEGIN}{CALL_BEGIN}code{SEP}{CODE}{CALL_END}{CALLS_END}",
    "llama3": f'{PYTHON_TAG}{{"name": "code", "parameters": {CODE}}}',
}
# What small models write besides calls: the results they imitate, kaiyuan's data blocks.
IMITATIONS = [
    '<tool_response>\n{"stdout": "4\\n", "exit_code": 0}\n</tool_response>',
    '<tool_data>\n{"stdout": "4\\n"}\n</tool_data>',
    '<tools>\n{"type": "function", "function": {"name": "code"}}\n</tools>',
]
PLAIN = [
    "The answer is 4.",
    "If a < b and b > c, nothing follows about a and c.",
    'As JSON: {"name": "Ann", "age": 4}',
    '{"name": "Ann", "parameters": {"age": 4}}',  # a JSON answer, not a call to a tool
    "Use <b>bold</b> or <code>code</code> in HTML; x <= y.",
]


@pytest.fixture
def rig() -> Iterator[Rig]:
    home = Path(os.environ["KAIYUAN_HOME"])
    traces = Traces(home)
    yield Rig(home, traces)
    traces.close()


# --- 1. the answer never shows tool-call markup ------------------------------------------------
@pytest.mark.parametrize("family", CALLS)
def test_each_familys_call_is_what_its_parser_reads(family: str) -> None:
    parser = make(family, {"code": {"type": "object", "properties": {"code": {"type": "string"}}}})
    events = parser.feed(CALLS[family]) + parser.finish()
    assert events == [ToolCall("code", CODE)]


@pytest.mark.parametrize("family", CALLS)
def test_calls_closed_or_cut_anywhere_are_stripped(family: str) -> None:
    sample = CALLS[family]
    for text in ("", "The answer is 4.\n\n"):
        assert strip_markup(text + sample, ["code"]) == text.strip()
        # Cut off anywhere (the model ran out of tokens or time), from two characters on.
        for end in range(2, len(sample)):
            got = strip_markup(text + sample[:end], ["code"])
            assert got == text.strip(), (end, sample[:end], got)


@pytest.mark.parametrize("imitation", IMITATIONS)
def test_imitated_results_are_stripped_the_text_around_kept(imitation: str) -> None:
    assert strip_markup(imitation) == ""
    assert strip_markup(f"{imitation}\nThe answer is 4.") == "The answer is 4."
    assert strip_markup(f"So:\n{imitation}\n\n\n\nThe answer is 4.") == "So:\n\nThe answer is 4."
    assert strip_markup(imitation[: len(imitation) // 2]) == ""


def test_bare_json_calls_and_stray_markers() -> None:
    bare = f'{{"name": "code", "arguments": {CODE}}}'
    assert strip_markup(bare, ["code"]) == ""
    assert strip_markup(bare) == bare  # no tools offered: a JSON answer, not a call
    assert strip_markup(bare, ["search"]) == bare
    assert strip_markup("The answer is 4.</tool_call>\n</tool_response>") == "The answer is 4."
    assert strip_markup(f"4{SEP}") == "4"


@pytest.mark.parametrize("text", PLAIN)
def test_plain_answers_are_left_alone(text: str) -> None:
    assert strip_markup(f"  {text}\n", ["code", "search"]) == text


def agent_cli(rig: Rig, replies: list[Reply], *args: str) -> tuple[Result, ScriptedEngine]:
    """`kaiyuan agent --url` in this process (click's runner: stdout and stderr apart) against
    kaiyuan's server over a scripted engine."""
    engine = ScriptedEngine(MODEL, context_length=CONTEXT, replies=replies)
    app = create_app(Settings(home=rig.home), EnginePool([engine]))
    with serve_app(app) as url:
        result = CliRunner().invoke(cli, ["agent", "--url", url, "-m", MODEL, *args])
    return result, engine


@pytest.mark.slow
@pytest.mark.parametrize(
    "reply",
    [
        '<tool_call>\n{"name": "code", "arguments": {"code": "print(',  # cut off: not a call
        CALLS["qwen3_coder"],  # the server reads Hermes calls: this one stays text
        CALLS["deepseek_v3"],
        CALLS["deepseek_v31"],
        CALLS["llama3"],
        IMITATIONS[0],
        IMITATIONS[0] + "\n" + CALLS["hermes"][:30],
    ],
)
def test_markup_only_replies_are_never_printed_as_the_answer(rig: Rig, reply: str) -> None:
    result, _ = agent_cli(rig, [say(reply)], "--tools", "code", "What is 2 + 2?")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    err = result.stderr.splitlines()
    assert err[-2] == "the model gave no answer in 1 step; try a bigger model: kaiyuan recommend"
    assert "<" not in result.stderr and "｜" not in result.stderr
    # The trace keeps what the model wrote, for whoever looks into the run.
    run = rig.trace(err[-1].removeprefix("trace: "))
    assert run["status"] == "completed" and run["answer"] == reply
    assert run["trace"][0]["output"]["content"] == reply


@pytest.mark.slow
def test_an_answer_after_an_imitated_result_is_printed_alone(rig: Rig) -> None:
    result, _ = agent_cli(rig, [say(IMITATIONS[0] + "\nThe answer is 4.")], "--tools", "code",
                          "What is 2 + 2?")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == "The answer is 4.\n"


@pytest.mark.slow
def test_cli_prints_no_markup_and_says_there_is_no_answer(rig: Rig) -> None:
    code = "x = 1\n" * 40 + "print(x)"
    engine = ScriptedEngine(MODEL, context_length=CONTEXT, replies=[
        call("code", {"code": code}),
        say(IMITATIONS[0] + "\n" + CALLS["llama3"]),
    ])  # fmt: skip
    app = create_app(Settings(home=rig.home), EnginePool([engine]))
    with serve_app(app) as url:
        got = kaiyuan("agent", "--url", url, "-m", MODEL, "--tools", "code", "Add it up",
                      home=rig.home)  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert got.stdout == ""
    err = got.stderr.splitlines()
    assert [re.sub(r" · \d+\.\d s · ", " · ", line) for line in err[:-1]] == [
        "step 1 · asking the model",
        "step 1 · → code " + (json.dumps({"code": code})[: 100 - 1] + "…"),
        "step 1 · ← code: exit 0, 2 chars of output",
        "step 2 · asking the model",
        "the model gave no answer in 2 steps; try a bigger model: kaiyuan recommend",
    ]
    assert len(err[1].split(" · → code ")[1]) == 100  # the arguments, cut to one short line
    run = rig.trace(err[-1].removeprefix("trace: "))
    assert run["status"] == "completed" and run["answer"] == IMITATIONS[0] + "\n" + CALLS["llama3"]


# --- 2. the time limit bounds the whole run ---------------------------------------------------
@pytest.fixture
def hanging_server(rig: Rig) -> Iterator[tuple[str, ScriptedEngine]]:
    """kaiyuan's server over an engine that accepts every request and never answers."""
    engine = ScriptedEngine(MODEL, context_length=CONTEXT,
                            replies=[Reply(["never"], hang_after=0) for _ in range(4)])  # fmt: skip
    app = create_app(Settings(home=rig.home), EnginePool([engine]))
    with serve_app(app) as url:
        yield url, engine


class SilentSocket:
    """A port that takes connections and never says a word; it counts them (a retry of a
    request that timed out would be a second one)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted: list[socket.socket] = []  # kept open: the client hears nothing, not EOF
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.done.is_set():
            try:
                self.accepted.append(self.sock.accept()[0])
            except TimeoutError:
                continue

    def connections(self) -> int:
        """How many connections were made (call once the client has finished)."""
        self.done.set()
        self.thread.join(5)
        self.sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # any still waiting to be accepted
            while True:
                self.accepted.append(self.sock.accept()[0])
        return len(self.accepted)

    def close(self) -> None:
        self.done.set()
        self.thread.join(5)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent_socket() -> Iterator[SilentSocket]:
    silent = SilentSocket()
    yield silent
    silent.close()


LIMIT = 3


def _ended_on_time(rig: Rig, got: Any, elapsed: float) -> dict[str, Any]:
    """The CLI run ended at its limit, said so and traced it; its trace.

    The endpoint never answers, so a run that ignored its limit would never end (the
    subprocess's timeout, 90 s, fails the test): the bounds on time allow SLACK for a busy
    machine (process start included). A retry, which would still end within them, is caught by
    counting requests or connections."""
    assert got.returncode == 0, got.stderr
    assert elapsed < LIMIT + SLACK, got.stderr  # not minutes: no retry, no grace period
    assert got.stdout == ""
    err = got.stderr.splitlines()
    asked = re.fullmatch(r"step 1 · (\d+\.\d) s · asking the model", err[0])
    assert asked, err
    assert err[-3] == (
        f"the model gave no answer within {LIMIT} s (1 step); allow more time (--max-seconds) "
        "or try a bigger model: kaiyuan recommend"
    )
    assert re.fullmatch(rf"stopped after \d+\.\d s: out of time \(--max-seconds {LIMIT}\)",
                        err[-2]), err  # fmt: skip
    run = rig.trace(err[-1].removeprefix("trace: "))
    assert run["status"] == "stopped" and run["stop_reason"] == "max_seconds"
    assert run["answer"] == "" and LIMIT - 0.5 < run["seconds"] < LIMIT + SLACK
    (step,) = run["trace"]  # no wrap-up: nothing was found, and no time is left
    assert step["kind"] == "model" and step["error"] == "timed out at the run's deadline"
    # The model had the time there was: from when it was asked (printed, to 0.1 s) to the
    # limit, however long the CLI took to get there.
    assert step["seconds"] > LIMIT - float(asked[1]) - 1.0
    return run


@pytest.mark.slow
def test_cli_max_seconds_ends_a_run_whose_model_never_answers(
    rig: Rig, hanging_server: tuple[str, ScriptedEngine]
) -> None:
    url, engine = hanging_server
    started = time.monotonic()
    got = kaiyuan("agent", "--url", url, "-m", MODEL, "--tools", "code", "--max-seconds",
                  str(LIMIT), "What is 2 + 2?", home=rig.home, timeout=90)  # fmt: skip
    _ended_on_time(rig, got, time.monotonic() - started)
    assert len(engine.records) == 1  # the call that timed out was not retried


@pytest.mark.slow
def test_cli_max_seconds_ends_a_run_against_a_silent_endpoint(
    rig: Rig, silent_socket: SilentSocket
) -> None:
    started = time.monotonic()
    got = kaiyuan("agent", "--url", silent_socket.url, "-m", MODEL, "--tools", "code",
                  "--max-seconds", str(LIMIT), "What is 2 + 2?", home=rig.home,
                  timeout=90)  # fmt: skip
    _ended_on_time(rig, got, time.monotonic() - started)
    assert silent_socket.connections() == 1  # the call that timed out was not retried


@pytest.mark.slow
def test_cli_without_a_model_stops_asking_a_silent_endpoint_at_the_limit(
    rig: Rig, silent_socket: SilentSocket
) -> None:
    """The endpoint never answers: an ignored limit would never end (see _ended_on_time)."""
    started = time.monotonic()
    got = kaiyuan("agent", "--url", silent_socket.url, "--max-seconds", str(LIMIT), "Hi",
                  home=rig.home, timeout=90)  # fmt: skip
    assert time.monotonic() - started < LIMIT + SLACK
    assert got.returncode == 1 and got.stdout == ""
    assert got.stderr == f"error: cannot reach the model server at {silent_socket.url}/v1\n"
    assert silent_socket.connections() == 1


@pytest.mark.slow
def test_the_wrap_up_gets_no_time_past_the_limit(rig: Rig) -> None:
    """Out of steps, the wrap-up turn may use what is left of the time, and no more.

    The wrap-up never answers, and the client's own timeout (which backs up the deadline) is a
    minute here: only the run's deadline can end it in time. Without it, or with a grace period
    (it once had a minute), the run lasts a minute, far past SLACK, which no load reaches."""
    counter: list[int] = []
    turns: list[TurnStarted] = []
    started = time.monotonic()
    events = rig.run([call("tick", {}), Reply(["never"], hang_after=0)], [tick_tool(counter)],
                     agent_max_steps=1, agent_max_seconds=LIMIT, on_turn=turns.append,
                     call_timeout=60)  # fmt: skip
    assert time.monotonic() - started < LIMIT + SLACK  # not the minute of grace it once had
    answer = answer_of(events)
    assert answer.stop_reason == "max_steps" and answer.text == "" and counter == [1]
    assert [(t.step, t.wrap_up) for t in turns] == [(1, None), (2, "max_steps")]
    assert 0 <= turns[0].seconds <= turns[1].seconds < LIMIT
    run = rig.trace(answer.run_id)
    assert run["status"] == "stopped" and run["seconds"] < LIMIT + SLACK
    assert [(s["kind"], s["error"]) for s in run["trace"]] == [
        ("model", None), ("tool", None), ("model", "timed out at the run's deadline"),
    ]  # fmt: skip


def test_setup_before_the_run_counts_against_the_limit(tmp_path: Path) -> None:
    """A caller's own setup (the CLI starting a model) comes out of the run's time: with the
    time already spent, the run stops without calling the model."""
    settings = Settings(home=tmp_path, agent_max_seconds=5)

    async def drive() -> list[Any]:
        client = openai.AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="x")
        try:
            agent = Agent(client, MODEL, [builtin("code")], settings)
            return [e async for e in agent.run("Hi", started=time.monotonic() - 10)]
        finally:
            await client.close()

    (answer,) = asyncio.run(drive())
    assert isinstance(answer, AnswerEvent)
    assert answer.stop_reason == "max_seconds" and answer.text == ""
    assert answer.usage == {"prompt_tokens": 0, "completion_tokens": 0}
