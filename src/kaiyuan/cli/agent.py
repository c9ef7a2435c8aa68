"""The agent's commands: run the agent, its traces, a tool alone, the document index."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from kaiyuan.agent.mcp import SEPARATOR
from kaiyuan.config import Settings
from kaiyuan.errors import InvalidRequest
from kaiyuan.tools import base

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
    import openai

    from kaiyuan.agent.loop import Agent, AnswerEvent, ToolCallEvent, ToolResultEvent
    from kaiyuan.agent.mcp import load_tools
    from kaiyuan.agent.traces import Traces
    from kaiyuan.cli.chat import _base_url, _default_model, embedded_server

    names = [t.strip() for t in (tools or ",".join(DEFAULT_TOOLS)).split(",") if t.strip()]
    chosen = [base.builtin(name) for name in names if not name.startswith("mcp:")]
    servers = [n.removeprefix("mcp:") for n in names if n.startswith("mcp:")]
    if tools is None:
        servers = list(settings.mcp_servers)  # by default every configured MCP server
    if servers:
        chosen += asyncio.run(load_tools(settings, servers))
    if url is None and model is not None:
        settings = settings.model_copy(update={"models": [model]})
    endpoint = contextlib.nullcontext(_base_url(url)) if url else embedded_server(settings)
    with Traces(settings.home) as traces, endpoint as base_url:
        model = model or _default_model(openai.OpenAI(base_url=base_url, api_key="kaiyuan"))
        client = openai.AsyncOpenAI(base_url=base_url, api_key="kaiyuan", max_retries=1)
        agent = Agent(client, model, chosen, settings, traces=traces, confirm=_ask,
                      tool_choice="required" if require_tool else "auto")  # fmt: skip

        async def drive() -> AnswerEvent | None:
            final = None
            async for event in agent.run(task):
                if isinstance(event, ToolCallEvent):
                    click.echo(f"→ {event.name} {event.arguments}", err=True)
                elif isinstance(event, ToolResultEvent):
                    click.echo(f"← {event.name}: {_summary(event)}", err=True)
                else:
                    final = event
            return final

        answer = asyncio.run(drive())
    if answer is None:
        return
    click.echo(answer.text)
    for source in answer.citations:
        click.echo(f"[{source.ref}] {source.title} — {source.url}")
    if answer.stop_reason:
        click.echo(f"(stopped: {answer.stop_reason})", err=True)
    click.echo(f"trace: {answer.run_id}", err=True)


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

    with Traces(settings.home) as traces:
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

    with Traces(settings.home) as traces:
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
    from kaiyuan.docs.index import DocIndex

    with DocIndex.open(settings.home) as index:
        for added in index.add(paths):
            click.echo(f"{added.status:9} {added.chunks:5} chunks  {added.source}")


def docs_list(settings: Settings, *, as_json: bool) -> None:
    from kaiyuan.docs.index import DocIndex

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
    from kaiyuan.docs.index import DocIndex

    with DocIndex.open(settings.home) as index:
        if not index.remove(source):
            raise InvalidRequest(f"'{source}' is not in the document index", param="source")
    click.echo(f"removed {source}")
