"""Qwen3-Coder's XML form::

    <tool_call>
    <function=NAME>
    <parameter=KEY>
    VALUE
    </parameter>
    </function>
    </tool_call>

Values are text; where the function's schema says a parameter is not a string, the value is
read as JSON (numbers, booleans, objects, arrays).
"""

from __future__ import annotations

import json
import re
from typing import Any

from kaiyuan.chat.toolcalls.base import BlockParser, CallSyntax, ToolCall, loads_lenient

_FUNCTION = re.compile(r"<function=([^>\n]+)>(.*?)(?:</function>|$)", re.DOTALL)
_PARAMETER = re.compile(r"<parameter=([^>\n]+)>(.*?)(?:</parameter>|(?=<parameter=)|$)", re.DOTALL)


class Qwen3CoderParser(BlockParser):
    name = "qwen3_coder"
    start, end = "<tool_call>", "</tool_call>"
    # Forced calls write each value as JSON; parse_block reads JSON values back.
    syntax = CallSyntax(
        call='"<tool_call>\\n<function={name}>\\n" {args} "</function>\\n</tool_call>"',
        per_parameter=True,
    )

    example = (
        "<tool_call>\n<function=FUNCTION_NAME>\n<parameter=PARAMETER_NAME>\nVALUE\n"
        "</parameter>\n</function>\n</tool_call>"
    )

    def parse_block(self, body: str, *, closed: bool = True) -> list[ToolCall] | None:
        if not closed and "</function>" not in body:
            return None  # cut off inside a call: its last value may be truncated
        calls = []
        for match in _FUNCTION.finditer(body):
            name = match.group(1).strip()
            types = _types(self.schemas.get(name, {}))
            args: dict[str, Any] = {}
            for param in _PARAMETER.finditer(match.group(2)):
                key = param.group(1).strip()
                raw = param.group(2).removeprefix("\n").removesuffix("\n")
                args[key] = _value(raw, types.get(key))
            calls.append(ToolCall(name, json.dumps(args, ensure_ascii=False)))
        return calls or None


def _types(schema: dict[str, Any]) -> dict[str, Any]:
    props = schema.get("properties", {}) if isinstance(schema, dict) else {}
    return {k: v.get("type") for k, v in props.items() if isinstance(v, dict)}


def _value(raw: str, kind: Any) -> Any:
    if kind == "string" or (isinstance(kind, list) and "string" in kind):
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            try:
                return json.loads(raw)
            except ValueError:
                pass
        return raw
    try:
        return loads_lenient(raw)
    except ValueError:
        return raw
