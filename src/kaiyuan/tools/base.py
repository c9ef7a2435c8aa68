"""The tool contract and the built-in tools, imported on first use.

A tool is a name, a description and a JSON Schema for its arguments (what the model sees), a
``side_effects`` flag (such tools need the user's confirmation unless configuration allows
them), and ``run(arguments, settings)``, which returns a JSON-serialisable dict. Arguments are
validated against the schema before ``run``; a tool that fails raises :class:`ToolFailed`
with a message meant for the model and the user (never a traceback).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kaiyuan.config import Settings
from kaiyuan.errors import InvalidRequest, KaiyuanError


class ToolFailed(KaiyuanError):
    status = 502
    code = "tool_failed"


@dataclass(slots=True, frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    run: Callable[[dict[str, Any], Settings], dict[str, Any]]
    side_effects: bool = False

    def spec(self) -> dict[str, Any]:
        """The OpenAI function-tool definition the model is given."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


BUILTIN: dict[str, str] = {
    "code": "kaiyuan.tools.code:TOOL",
    "fetch": "kaiyuan.tools.web:TOOL",
    "search": "kaiyuan.tools.search:TOOL",
    "files": "kaiyuan.tools.files:TOOL",
}


def builtin(name: str) -> Tool:
    target = BUILTIN.get(name)
    if target is None:
        raise InvalidRequest(
            f"unknown tool '{name}'; built-in tools: {', '.join(sorted(BUILTIN))}", param="tool"
        )
    module, _, attribute = target.partition(":")
    tool: Tool = getattr(importlib.import_module(module), attribute)
    return tool


def check_arguments(tool: Tool, arguments: Any) -> dict[str, Any]:
    """The arguments if they match the tool's schema; else a 400 saying what is wrong."""
    from jsonschema import Draft202012Validator

    if not isinstance(arguments, dict):
        raise InvalidRequest(f"tool '{tool.name}' takes a JSON object", param="arguments")
    error = next(iter(Draft202012Validator(tool.parameters).iter_errors(arguments)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path)
        raise InvalidRequest(
            f"tool '{tool.name}': {error.message}" + (f" (at {where})" if where else ""),
            param="arguments",
        )
    return arguments


def call(name: str, arguments: Any, settings: Settings) -> dict[str, Any]:
    tool = builtin(name)
    return tool.run(check_arguments(tool, arguments), settings)
