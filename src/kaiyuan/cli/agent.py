"""The agent's commands: run the agent, its traces, a tool alone, the document index."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import Progress, ProgressColumn, SpinnerColumn, Task, TextColumn
from rich.text import Text

from kaiyuan.agent.mcp import SEPARATOR
from kaiyuan.config import Settings
from kaiyuan.errors import InvalidRequest
from kaiyuan.tools import base

if TYPE_CHECKING:  # the loop imports openai: only the agent command needs it
    from kaiyuan.agent.loop import AnswerEvent, ToolCallEvent, ToolResultEvent, TurnStarted

DEFAULT_TOOLS = ("search", "fetch", "code", "files")


def run_agent(
    settings: Settings,
    task: str,
    *,
    model: str | None,
    url: str | None,
    tools: str | None,
    require_tool: bool = False,
) -> None:
    """Run the agent on ``task``: progress on standard error as it goes, the answer and its
    sources on standard output. ``agent_max_seconds`` bounds everything from here on,
    starting the model included."""
    import openai

    from kaiyuan.agent.loop import Agent, ToolCallEvent, ToolResultEvent, strip_markup
    from kaiyuan.agent.mcp import load_tools
    from kaiyuan.agent.traces import Traces
    from kaiyuan.cli.endpoint import ChatError, api_url, default_model, embedded_server
    from kaiyuan.otel import Telemetry

    started = time.monotonic()
    names = [t.strip() for t in (tools or ",".join(DEFAULT_TOOLS)).split(",") if t.strip()]
    chosen = [base.builtin(name) for name in names if not name.startswith("mcp:")]
    servers = [n.removeprefix("mcp:") for n in names if n.startswith("mcp:")]
    if tools is None:
        servers = list(settings.mcp_servers)  # by default every configured MCP server
    if url is None and model is not None:
        settings = settings.model_copy(update={"models": [model]})
    endpoint = contextlib.nullcontext(api_url(url)) if url else embedded_server(settings)
    # None unless otel_endpoint is set; the spans still queued leave when the process ends
    telemetry = Telemetry.configured(settings)
    with Reporter(started, settings.agent_max_seconds) as reporter:
        if servers:
            chosen += asyncio.run(load_tools(settings, servers))
        with Traces(settings.home, settings.db_url()) as traces, endpoint as base_url:
            if model is None:
                left = max(1.0, started + settings.agent_max_seconds - time.monotonic())
                lister = openai.OpenAI(base_url=base_url, api_key="kaiyuan", timeout=left,
                                       max_retries=0)  # fmt: skip
                try:
                    model = default_model(lister)
                except openai.APIConnectionError:
                    raise ChatError(f"cannot reach the model server at {base_url}") from None
            client = openai.AsyncOpenAI(base_url=base_url, api_key="kaiyuan", max_retries=1)
            agent = Agent(client, model, chosen, settings, traces=traces, confirm=reporter.ask,
                          tool_choice="required" if require_tool else "auto",
                          on_turn=reporter.turn, telemetry=telemetry)  # fmt: skip

            async def drive() -> AnswerEvent | None:
                final = None
                try:
                    async for event in agent.run(task, started=started):
                        if isinstance(event, ToolCallEvent):
                            reporter.call(event)
                        elif isinstance(event, ToolResultEvent):
                            reporter.result(event)
                        else:
                            final = event
                finally:
                    await client.close()
                return final

            answer = asyncio.run(drive())
            reporter.close()
            # Printed before the in-process server stops, which waits for an engine to finish
            # the batch it is computing (seconds on a slow CPU when the run was cut off).
            if answer is not None:
                text = strip_markup(answer.text, [t.name for t in chosen])
                _print(answer, text, reporter.step, reporter.seconds(), settings)


def _print(answer: AnswerEvent, text: str, steps: int, seconds: float, settings: Settings) -> None:
    """``text``: the answer as shown, without tool-call markup."""
    if text:
        click.echo(text)
        for source in answer.citations:
            if f"[{source.ref}]" in text:
                click.echo(f"[{source.ref}] {source.title} — {source.url}")
    else:
        click.echo(_no_answer(answer.stop_reason, steps, settings), err=True)
    if answer.stop_reason in STOPS:
        click.echo(f"stopped after {seconds:.1f} s: {_stop(answer.stop_reason, settings)}",
                   err=True)  # fmt: skip
    click.echo(f"trace: {answer.run_id}", err=True)


STOPS = {
    "max_seconds": "out of time (--max-seconds {seconds:g})",
    "max_steps": "out of steps (--max-steps {steps})",
    "max_tokens": "the answer reached the token limit (agent_max_tokens: {tokens})",
    "max_tool_calls": "the limit on tool calls was reached",
}
WRAP_UPS = {
    "max_seconds": "time is nearly up",
    "max_steps": "out of steps",
    "max_tool_calls": "the limit on tool calls is reached",
}


def _stop(reason: str, settings: Settings) -> str:
    return STOPS[reason].format(seconds=settings.agent_max_seconds,
                                steps=settings.agent_max_steps,
                                tokens=settings.agent_max_tokens)  # fmt: skip


def _no_answer(reason: str | None, steps: int, settings: Settings) -> str:
    """One readable line for a run that ends without an answer (nothing, or only tool-call
    markup, which is not shown)."""
    turns = f"{steps} step{'' if steps == 1 else 's'}"
    if reason == "max_seconds":
        return (
            f"the model gave no answer within {settings.agent_max_seconds:g} s ({turns}); "
            "allow more time (--max-seconds) or try a bigger model: kaiyuan recommend"
        )
    return f"the model gave no answer in {turns}; try a bigger model: kaiyuan recommend"


class _Clock(ProgressColumn):
    """The seconds since the run started, against its limit."""

    def __init__(self, started: float, limit: float) -> None:
        super().__init__()
        self.started, self.limit = started, limit

    def render(self, task: Task) -> Text:
        return Text(f"{time.monotonic() - self.started:.0f} s of {self.limit:g} s", style="dim")


class Reporter:
    """The run as it goes, on standard error (standard output carries only the answer): a
    line per model turn, tool call and tool result, with the step and the seconds since the
    start, whatever standard error is; on a terminal, also a spinner under them with what is
    being waited for and the time against the limit."""

    def __init__(self, started: float, limit: float) -> None:
        self.console = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
        self.started = started
        self.step = 0
        self.live: Progress | None = None
        if self.console.is_terminal:
            self.live = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                 _Clock(started, limit), console=self.console,
                                 transient=True, redirect_stdout=False)  # fmt: skip
            self.task = self.live.add_task("starting", total=None)

    def __enter__(self) -> Reporter:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the spinner (before anything is printed on standard output)."""
        if self.live is not None:
            self.live.stop()
            self.live = None

    def seconds(self) -> float:
        return time.monotonic() - self.started

    def line(self, text: str, waiting: str) -> None:
        self.console.print(f"step {self.step} · {self.seconds():.1f} s · {text}", markup=False)
        if self.live is not None:
            self.live.update(self.task, description=f"step {self.step}: {waiting}")

    def turn(self, turn: TurnStarted) -> None:
        self.step = turn.step
        if turn.wrap_up is None:
            self.line("asking the model", "waiting for the model")
        else:
            why = WRAP_UPS.get(turn.wrap_up, turn.wrap_up)
            self.line(f"{why}: asking for an answer from what was found",
                      "waiting for the answer")  # fmt: skip

    def call(self, event: ToolCallEvent) -> None:
        self.line(f"→ {event.name} {_short(event.arguments)}", f"running {event.name}")

    def result(self, event: ToolResultEvent) -> None:
        self.line(f"← {event.name}: {_summary(event)}", "working")

    async def ask(self, name: str, arguments: dict[str, Any]) -> bool:
        """Confirm a tool with side effects, the spinner paused while the question is open."""
        if self.live is not None:
            self.live.stop()
        try:
            return await _ask(name, arguments)
        finally:
            if self.live is not None:
                self.live.start()


def _short(arguments: str, width: int = 100) -> str:
    """A tool's arguments on one line, cut to ``width`` characters."""
    try:
        text = json.dumps(json.loads(arguments), ensure_ascii=False)
    except ValueError:
        text = " ".join(arguments.split())
    return text if len(text) <= width else text[: width - 1] + "…"


async def _ask(name: str, arguments: dict[str, Any]) -> bool:
    if not sys.stdin.isatty():
        return False
    question = f"Allow the tool '{name}' to run with {json.dumps(arguments)}?"
    return bool(await asyncio.to_thread(click.confirm, question, default=False, err=True))


def _summary(event: Any) -> str:
    if event.error:
        return f"error: {event.error}"
    output = event.output
    if isinstance(output.get("results"), list):
        return f"{len(output['results'])} results"
    if "exit_code" in output:
        return f"exit {output['exit_code']}, {len(output.get('stdout', ''))} chars of output"
    if "text" in output:
        return f"{len(output['text'])} chars from {output.get('url', '')}"
    return "done"


def list_traces(settings: Settings, *, as_json: bool) -> None:
    from kaiyuan.agent.traces import Traces

    with Traces(settings.home, settings.db_url()) as traces:
        runs = traces.runs()
    if as_json:
        click.echo(json.dumps(runs, ensure_ascii=False, indent=2))
        return
    if not runs:
        click.echo('no agent runs yet: kaiyuan agent "a task"')
    for run in runs:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(run["created"]))
        task = run["task"] if len(run["task"]) <= 60 else run["task"][:57] + "..."
        click.echo(f"{run['id'][:12]}  {when}  {run['status']:9}  {run['steps']:3} steps  "
                   f"{run['model']}  {task}")  # fmt: skip


def show_trace(settings: Settings, run_id: str, *, as_json: bool) -> None:
    from kaiyuan.agent.traces import Traces

    with Traces(settings.home, settings.db_url()) as traces:
        run = traces.get(run_id)
    if as_json:
        click.echo(json.dumps(run, ensure_ascii=False, indent=2))
        return
    usage = run["usage"]
    tokens = f"{usage['prompt_tokens']}+{usage['completion_tokens']} tokens"
    click.echo(
        f"run {run['id']}  {run['status']}  model {run['model']}  {run['seconds']} s  {tokens}"
    )
    click.echo(f"task: {run['task']}")
    for step in run["trace"]:
        head = f"#{step['index']} {step['kind']} {step['name']} ({step['seconds']} s)"
        if step["kind"] == "model":
            out = step["output"] or {}
            calls = [c["function"]["name"] for c in out.get("tool_calls", [])]
            said = f"calls {', '.join(calls)}" if calls else repr((out.get("content") or "")[:200])
            click.echo(f"{head}: {said}" if not step["error"] else f"{head}: error {step['error']}")
        else:
            result = step["error"] or json.dumps(step["output"], ensure_ascii=False)[:200]
            click.echo(f"{head}: {step['input']['arguments']} -> {result}")
    click.echo(f"answer: {run['answer']}")
    for source in run["citations"]:
        click.echo(f"[{source['ref']}] {source['title']} — {source['url']}")


def run_tool(settings: Settings, name: str, arguments: str) -> None:
    try:
        parsed = json.loads(arguments)
    except ValueError as exc:
        raise InvalidRequest(f"the arguments are not JSON: {exc}", param="arguments") from None
    if SEPARATOR in name:  # an MCP server's tool: SERVER__TOOL
        from kaiyuan.agent.mcp import load_tools

        server = name.split(SEPARATOR, 1)[0]
        found = {t.name: t for t in asyncio.run(load_tools(settings, [server]))}
        if name not in found:
            raise InvalidRequest(
                f"MCP server '{server}' has no tool '{name}'; it has: {', '.join(found)}",
                param="tool",
            )
        tool = found[name]
        result = tool.run(base.check_arguments(tool, parsed), settings)
    else:
        result = base.call(name, parsed, settings)
    click.echo(json.dumps(result, ensure_ascii=False, indent=2))


def docs_add(settings: Settings, paths: list[Path]) -> None:
    from kaiyuan.documents.index import DocIndex

    with DocIndex.open(settings.home) as index:
        for added in index.add(paths):
            click.echo(f"{added.status:9} {added.chunks:5} chunks  {added.source}")


def docs_list(settings: Settings, *, as_json: bool) -> None:
    from kaiyuan.documents.index import DocIndex

    with DocIndex.open(settings.home) as index:
        documents = index.documents()
    if as_json:
        click.echo(json.dumps(documents, ensure_ascii=False, indent=2))
        return
    for doc in documents:
        click.echo(f"{doc['chunks']:5} chunks  {doc['source']}  ({doc['title']})")
    if not documents:
        click.echo("no documents yet: kaiyuan docs add PATH...")


def docs_rm(settings: Settings, source: str) -> None:
    from kaiyuan.documents.index import DocIndex

    with DocIndex.open(settings.home) as index:
        if not index.remove(source):
            raise InvalidRequest(f"'{source}' is not in the document index", param="source")
    click.echo(f"removed {source}")
