"""Qwen 2.5 / Qwen3, Hermes style: ``<tool_call>{"name": …, "arguments": {…}}</tool_call>``."""

from __future__ import annotations

from kaiyuan.chat.toolcalls.base import BlockParser, CallSyntax, ToolCall, call_from, loads_lenient


class HermesParser(BlockParser):
    name = "hermes"
    start, end = "<tool_call>", "</tool_call>"
    json_body = True
    syntax = CallSyntax(
        call='"<tool_call>\\n{\\"name\\": \\"{name}\\", \\"arguments\\": " '
        '{args} "}\\n</tool_call>"'
    )

    example = (
        '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
    )

    def parse_block(self, body: str, *, closed: bool = True) -> list[ToolCall] | None:
        try:
            call = call_from(loads_lenient(body, complete=not closed))
        except ValueError:
            return None
        return [call] if call else None
