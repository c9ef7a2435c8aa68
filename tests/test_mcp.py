"""MCP tools: a real MCP server (the `mcp` SDK's MCPServer) in a subprocess, over stdio and
over streamable HTTP; its tools join the agent, with side-effect tools gated."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from kaiyuan.agent.loop import Agent, AnswerEvent, ToolResultEvent
from kaiyuan.agent.mcp import load_tools
from kaiyuan.config import Settings
from kaiyuan.engines.pool import EnginePool
from kaiyuan.server import create_app
from kaiyuan.tools.base import ToolFailed
from tests.fakes import Reply, ScriptedEngine
from tests.harness import KAIYUAN, serve_app

pytestmark = pytest.mark.slow

SERVER = '''
import sys
from pathlib import Path
from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("notes")
NOTES = Path(sys.argv[2])

@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b

@server.tool()
def write_note(text: str) -> str:
    """Append a note to the user's notes file."""
    with NOTES.open("a") as handle:
        handle.write(text + "\\n")
    return "saved"

@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def broken() -> str:
    """Always fails."""
    raise ValueError("this tool always fails")

if sys.argv[1] == "stdio":
    server.run("stdio")
else:
    server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
'''


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mcp") / "notes_server.py"
    path.write_text(SERVER)
    return path


def stdio_settings(home: Path, script: Path, notes: Path, **extra: Any) -> Settings:
    server = {"command": sys.executable, "args": [str(script), "stdio", str(notes)]}
    return Settings(home=home, mcp_servers={"notes": server}, **extra)


@pytest.fixture(scope="module")
def http_server(script: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    notes = tmp_path_factory.mktemp("http-notes") / "notes.txt"
    process = subprocess.Popen(
        [sys.executable, str(script), str(port), str(notes)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as attempt:
            if attempt.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/mcp"
    process.terminate()
    process.wait(10)


def test_stdio_server_tools_list_call_and_fail(tmp_path: Path, script: Path) -> None:
    notes = tmp_path / "notes.txt"
    settings = stdio_settings(tmp_path, script, notes)
    tools = {t.name: t for t in asyncio.run(load_tools(settings))}
    assert set(tools) == {"notes__add", "notes__write_note", "notes__broken"}
    assert not tools["notes__add"].side_effects and tools["notes__write_note"].side_effects
    assert tools["notes__add"].parameters["required"] == ["a", "b"]
    assert "[MCP server notes]" in tools["notes__add"].description
    assert tools["notes__add"].run({"a": 2, "b": 40}, settings)["text"] == "42"
    assert tools["notes__write_note"].run({"text": "buy milk"}, settings)["text"] == "saved"
    assert notes.read_text() == "buy milk\n"
    with pytest.raises(ToolFailed) as err:
        tools["notes__broken"].run({}, settings)
    assert "reported an error" in err.value.message


def test_streamable_http_server(tmp_path: Path, http_server: str) -> None:
    settings = Settings(home=tmp_path, mcp_servers={"web": {"url": http_server}})
    tools = {t.name: t for t in asyncio.run(load_tools(settings))}
    assert tools["web__add"].run({"a": 5, "b": 6}, settings)["structured"] == {"result": 11}


def test_unreachable_and_unconfigured_servers(tmp_path: Path) -> None:
    gone = Settings(home=tmp_path, mcp_servers={"gone": {"url": "http://127.0.0.1:9/mcp",
                                                         "timeout": 5}})  # fmt: skip
    with pytest.raises(ToolFailed) as err:
        asyncio.run(load_tools(gone))
    assert "could not be reached" in err.value.message
    missing = Settings(home=tmp_path, mcp_servers={"bad": {"command": "/nonexistent/mcp"}})
    with pytest.raises(ToolFailed):
        asyncio.run(load_tools(missing))
    with pytest.raises(Exception, match="no MCP server 'other'"):
        asyncio.run(load_tools(missing, ["other"]))


def call(name: str, arguments: str) -> Reply:
    return Reply([f'<tool_call>\n{{"name": "{name}", "arguments": {arguments}}}\n</tool_call>'])


def run_agent(settings: Settings, engine: ScriptedEngine, **options: Any) -> list[Any]:
    app = create_app(settings, EnginePool([engine]))

    async def go(url: str) -> list[Any]:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        tools = await load_tools(settings)
        agent = Agent(client, "fake-model", tools, settings, **options)
        events = [event async for event in agent.run("Save a note saying hello.")]
        await client.close()
        return events

    with serve_app(app) as url:
        return asyncio.run(go(url))


@pytest.mark.parametrize("allowed", [False, True])
def test_side_effect_tools_need_allowance(tmp_path: Path, script: Path, allowed: bool) -> None:
    notes = tmp_path / "notes.txt"
    settings = stdio_settings(
        tmp_path, script, notes, agent_max_tokens=200,
        agent_allowed_tools=["notes__write_note"] if allowed else [],
    )  # fmt: skip
    engine = ScriptedEngine(context_length=60000)
    engine.enqueue(call("notes__write_note", '{"text": "hello"}'), Reply(["Done."]))
    events = run_agent(settings, engine)
    result = next(e for e in events if isinstance(e, ToolResultEvent))
    assert isinstance(events[-1], AnswerEvent) and events[-1].text == "Done."
    if allowed:
        assert result.error is None and notes.read_text() == "hello\n"
    else:
        assert result.error is not None and "did not allow" in result.error
        assert not notes.exists()


def test_confirmation_callback_decides(tmp_path: Path, script: Path) -> None:
    notes = tmp_path / "notes.txt"
    settings = stdio_settings(tmp_path, script, notes, agent_max_tokens=200)
    asked: list[tuple[str, dict[str, Any]]] = []

    async def confirm(name: str, arguments: dict[str, Any]) -> bool:
        asked.append((name, arguments))
        return True

    engine = ScriptedEngine(context_length=60000)
    engine.enqueue(call("notes__write_note", '{"text": "confirmed"}'), Reply(["Saved."]))
    run_agent(settings, engine, confirm=confirm)
    assert asked == [("notes__write_note", {"text": "confirmed"})]
    assert notes.read_text() == "confirmed\n"


def test_responses_api_mcp_tool(tmp_path: Path, script: Path) -> None:
    settings = stdio_settings(tmp_path, script, tmp_path / "notes.txt", agent_max_tokens=200)
    engine = ScriptedEngine(context_length=60000)
    engine.enqueue(call("notes__add", '{"a": 20, "b": 22}'), Reply(["It is 42."]))
    with serve_app(create_app(settings, EnginePool([engine]))) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        response = client.responses.create(
            model="fake-model", input="Add 20 and 22.",
            tools=[{"type": "mcp", "server_label": "notes"}],  # type: ignore[list-item]
        )  # fmt: skip
        item = response.output[0].model_dump()
        assert item["type"] == "mcp_call" and item["server_label"] == "notes"
        assert item["name"] == "add" and item["output"] == "42"
        assert response.output_text == "It is 42."
        elsewhere = {"type": "mcp", "server_label": "notes", "server_url": "http://10.0.0.1/"}
        for bad in ({"type": "mcp", "server_label": "other"}, elsewhere):
            with pytest.raises(openai.BadRequestError) as err:
                client.responses.create(model="fake-model", input="x", tools=[bad])  # type: ignore[list-item]
            assert isinstance(err.value.body, dict)
            assert err.value.body["param"] == "tools[0].server_label"


def test_an_mcp_tool_runs_alone_from_the_cli(tmp_path: Path, script: Path) -> None:
    notes = tmp_path / "notes.txt"
    config = tmp_path / "config.toml"
    config.write_text(
        f'[mcp_servers.notes]\ncommand = "{sys.executable}"\n'
        f'args = ["{script}", "stdio", "{notes}"]\n'
    )
    env = {"KAIYUAN_HOME": str(tmp_path), "KAIYUAN_CONFIG": str(config), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([KAIYUAN, "tool", "notes__add", '{"a": 1, "b": 2}'],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["text"] == "3"
    done = subprocess.run([KAIYUAN, "tool", "notes__nope", "{}"],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1 and done.stderr.startswith("error: MCP server 'notes' has no")
