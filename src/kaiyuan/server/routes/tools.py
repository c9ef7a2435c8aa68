"""/v1/kaiyuan/tools: which tools a Responses request can enable here (the assistant page's
toggles). Built-in tools are checked the way they would run (the code sandbox needs
bubblewrap; SearXNG needs its URL); MCP servers are named by label, never with their command,
env, headers or URL path (see ``protocol/kaiyuan/tools``)."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from fastapi import APIRouter, Request

from kaiyuan.config import McpServer, Settings
from kaiyuan.extras import require
from kaiyuan.protocol.kaiyuan.tools import BuiltinType, McpServerEntry, ToolList, Unavailable
from kaiyuan.server.errors import ERROR_RESPONSES
from kaiyuan.server.routing import ApiRoute

router = APIRouter(tags=["tools"], route_class=ApiRoute, responses=ERROR_RESPONSES)


@router.get("/v1/kaiyuan/tools", response_model=ToolList)
async def list_tools(request: Request) -> ToolList:
    require("agent", "the agent's tools")
    settings: Settings = request.app.state.settings
    missing = await asyncio.to_thread(_unavailable, settings)
    builtin: list[BuiltinType] = ["web_search", "code_interpreter", "file_search"]
    return ToolList(
        builtin=[kind for kind in builtin if kind not in missing],
        unavailable=[Unavailable(type=kind, reason=why) for kind, why in missing.items()],
        mcp=[_entry(label, server) for label, server in settings.mcp_servers.items()],
    )


def _unavailable(settings: Settings) -> dict[BuiltinType, str]:
    from kaiyuan.tools import sandbox

    missing: dict[BuiltinType, str] = {}
    if settings.search_provider == "searxng" and not settings.searxng_url:
        missing["web_search"] = "search_provider is searxng but searxng_url is not set"
    if not sandbox.available():  # looks for bwrap and a seccomp filter: a few milliseconds
        missing["code_interpreter"] = (
            "the code sandbox needs bubblewrap (`apt install bubblewrap`) and /usr/bin/python3"
        )
    return missing


def _entry(label: str, server: McpServer) -> McpServerEntry:
    if server.url is None:
        return McpServerEntry(label=label, transport="stdio")
    parts = urlsplit(server.url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address goes back in brackets
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not a port number: the connection will say so; show no origin
        return McpServerEntry(label=label, transport="http")
    return McpServerEntry(label=label, transport="http", origin=f"{parts.scheme}://{host}{port}")
