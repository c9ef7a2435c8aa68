"""Tool-call parsers by model family, chosen from the chat template (or overridden)."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from kaiyuan.chat.toolcalls.base import ParsedPiece, Text, ToolCall, ToolParser

__all__ = [
    "PARSERS",
    "ParsedPiece",
    "TemplateTools",
    "Text",
    "ToolCall",
    "ToolParser",
    "detect",
    "parser_class",
    "traits",
]

PARSERS: dict[str, str] = {
    "hermes": "kaiyuan.chat.toolcalls.hermes:HermesParser",
    "qwen3_coder": "kaiyuan.chat.toolcalls.qwen3_coder:Qwen3CoderParser",
    "deepseek_v3": "kaiyuan.chat.toolcalls.deepseek:DeepSeekV3Parser",
    "deepseek_v31": "kaiyuan.chat.toolcalls.deepseek:DeepSeekV31Parser",
    "llama3": "kaiyuan.chat.toolcalls.llama3:Llama3Parser",
}


def parser_class(name: str) -> type[ToolParser]:
    target = PARSERS.get(name)
    if target is None:
        raise KeyError(f"unknown tool parser '{name}' (known: {', '.join(PARSERS)})")
    module, _, attr = target.partition(":")
    cls: type[ToolParser] = getattr(importlib.import_module(module), attr)
    return cls


@dataclass(slots=True, frozen=True)
class TemplateTools:
    """What a chat template does with tools."""

    parser: str  # the call syntax the model writes
    renders_tools: bool  # it lists the tool definitions (uses the `tools` variable)
    renders_calls: bool  # it writes assistant tool_calls and tool results itself
    arguments_as_text: bool  # it concatenates arguments as text (DeepSeek) instead of tojson


@lru_cache(maxsize=32)  # parsing a template takes milliseconds; every chat request asks
def traits(template: str | None) -> TemplateTools:
    t = template or ""
    if "<function=" in t and "<tool_call>" in t:
        parser = "qwen3_coder"
    elif "<tool_call>" in t:
        parser = "hermes"
    elif "tool▁calls▁begin" in t:
        # V3/R1 fence the arguments in ```json; V3.1 writes them bare.
        v3 = "```json" in t or "function<｜tool▁sep｜>" in t
        parser = "deepseek_v3" if v3 else "deepseek_v31"
    elif "<|python_tag|>" in t or "ipython" in t:
        parser = "llama3"
    else:
        parser = "hermes"  # with kaiyuan's default tool prompt
    calls = "tool_calls" in t
    return TemplateTools(
        parser=parser,
        renders_tools=_uses(t, "tools"),
        renders_calls=calls,
        arguments_as_text=calls and not re.search(r"arguments\s*\|\s*tojson", t),
    )


def detect(template: str | None) -> tuple[str, bool]:
    """(parser name, whether the template lists tools itself) for a chat template."""
    found = traits(template)
    return found.parser, found.renders_tools


def _uses(template: str, variable: str) -> bool:
    from jinja2 import TemplateSyntaxError, meta
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    try:
        ast = ImmutableSandboxedEnvironment().parse(template)
    except TemplateSyntaxError:
        return False
    return variable in meta.find_undeclared_variables(ast)


def make(name: str, schemas: dict[str, dict[str, Any]]) -> ToolParser:
    return parser_class(name)(schemas)
