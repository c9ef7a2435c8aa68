"""/v1/kaiyuan/tools: the tools a Responses request may enable on this server (the web app's
assistant page builds its toggles from it): the built-in tool types that can run here, those
that cannot and why, and the configured MCP servers by label. An MCP server's command, args,
env, headers and URL path stay on the server (they often carry secrets): only its label, its
transport and, for HTTP, the origin it is reached at are shown."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

BuiltinType = Literal["web_search", "code_interpreter", "file_search"]


class Unavailable(BaseModel):
    type: BuiltinType
    reason: str  # how to make it available


class McpServerEntry(BaseModel):
    label: str  # the request's `{"type": "mcp", "server_label": label}`
    transport: Literal["stdio", "http"]
    origin: str | None = None  # http only: scheme://host[:port], no credentials, path or query


class ToolList(BaseModel):
    object: Literal["list"] = "list"
    builtin: list[BuiltinType]  # what a request can enable here, as Responses tool types
    unavailable: list[Unavailable]
    mcp: list[McpServerEntry]
