"""MCP servers from configuration: their tools join the agent's (the ``mcp`` package).

A configured server is a command spoken to over stdio or a streamable-HTTP URL. Its tools are
listed when a run starts and become kaiyuan tools named ``SERVER__TOOL``; each call opens its
own short connection (a stdio server is started for it and stopped after). A tool whose
annotations do not say it is read-only counts as having side effects, so it needs the user's
confirmation unless ``agent_allowed_tools`` names it. The servers' env and headers (often
secrets) never reach the model: only tool names, descriptions and schemas do.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from kaiyuan.config import McpServer, Settings
from kaiyuan.errors import InvalidRequest
from kaiyuan.tools.base import Tool, ToolFailed

SEPARATOR = "__"


@asynccontextmanager
async def _client(name: str, server: McpServer) -> AsyncIterator[Any]:
    import httpx2
    from mcp import Client, StdioServerParameters

    target: Any
    if server.command is not None:
        target = StdioServerParameters(command=server.command, args=server.args,
                                       env=server.env or None)  # fmt: skip
    else:
        assert server.url is not None
        from mcp.client.streamable_http import streamable_http_client

        http = httpx2.AsyncClient(headers=server.headers, timeout=server.timeout)
        target = _transport(streamable_http_client(server.url, http_client=http))
    try:
        async with asyncio.timeout(server.timeout):
            client = Client(target, read_timeout_seconds=server.timeout)
            await client.__aenter__()
    except Exception as exc:
        raise ToolFailed(f"MCP server '{name}' could not be reached: {_reason(exc)}") from None
    try:
        yield client
    finally:
        await client.__aexit__(None, None, None)


def _transport(streams: Any) -> Any:
    """The streamable-HTTP streams as the SDK's Transport (an async context manager)."""
    return streams


async def load_tools(settings: Settings, only: list[str] | None = None) -> list[Tool]:
    """Every configured server's tools (or those of the servers named in ``only``)."""
    names = list(settings.mcp_servers) if only is None else only
    tools: list[Tool] = []
    for name in names:
        server = settings.mcp_servers.get(name)
        if server is None:
            raise InvalidRequest(
                f"no MCP server '{name}' is configured (mcp_servers in config.toml)",
                param="tools",
            )
        async with _client(name, server) as client:
            listing = await client.list_tools()
        tools.extend(_tool(name, server, spec) for spec in listing.tools)
    return tools


def _tool(server_name: str, server: McpServer, spec: Any) -> Tool:
    qualified = _name(f"{server_name}{SEPARATOR}{spec.name}")
    annotations = getattr(spec, "annotations", None)
    read_only = bool(annotations and getattr(annotations, "read_only_hint", False))

    def run(arguments: dict[str, Any], settings: Settings) -> dict[str, Any]:
        return asyncio.run(_call(server_name, server, spec.name, arguments))

    schema = dict(spec.input_schema or {"type": "object"})
    return Tool(
        name=qualified,
        description=f"[MCP server {server_name}] {spec.description or spec.name}",
        parameters=schema,
        run=run,
        side_effects=not read_only,
    )


async def _call(
    server_name: str, server: McpServer, tool: str, arguments: dict[str, Any]
) -> dict[str, Any]:
    async with _client(server_name, server) as client:
        try:
            result = await client.call_tool(tool, arguments, read_timeout_seconds=server.timeout)
        except Exception as exc:
            raise ToolFailed(
                f"MCP tool '{tool}' on '{server_name}' failed: {_reason(exc)}"
            ) from None
    text = "\n".join(
        getattr(block, "text", "")
        for block in result.content
        if getattr(block, "type", "") == "text"
    )
    if result.is_error:
        raise ToolFailed(f"MCP tool '{tool}' on '{server_name}' reported an error: {text[:500]}")
    out: dict[str, Any] = {"server": server_name, "tool": tool, "text": text}
    if result.structured_content is not None:
        out["structured"] = result.structured_content
    return out


def _name(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]", "_", name)[:64]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ExceptionGroup) and exc.exceptions:
        return _reason(exc.exceptions[0])
    return (str(exc) or type(exc).__name__).splitlines()[0][:300]
