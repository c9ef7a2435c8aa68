"""Llama 3.x: a bare JSON object ``{"name": …, "parameters": {…}}`` as the whole answer,
optionally after ``<|python_tag|>``; several calls are separated by ``;``."""

from __future__ import annotations

from typing import Any

from kaiyuan.chat.toolcalls.base import (
    CallSyntax,
    ParsedPiece,
    Text,
    ToolCall,
    ToolParser,
    call_from,
    loads_lenient,
)

PYTHON_TAG = "<|python_tag|>"


class Llama3Parser(ToolParser):
    name = "llama3"
    syntax = CallSyntax(
        call='"{\\"name\\": \\"{name}\\", \\"parameters\\": " {args} "}"', separator='"; "'
    )

    example = '{"name": FUNCTION_NAME, "parameters": ARGUMENTS_JSON_OBJECT}'

    def __init__(self, schemas: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__(schemas)
        self._buffer = ""
        self._mode = "undecided"  # then "call" (buffer to the end) or "text" (pass through)

    def feed(self, text: str) -> list[ParsedPiece]:
        if self._mode == "text":
            return [Text(text)] if text else []
        self._buffer += text
        head = self._buffer.lstrip()
        if not head:
            return []
        if head.startswith(("{", PYTHON_TAG)):
            self._mode = "call"
            return []
        if PYTHON_TAG.startswith(head):
            return []  # may still become the tag
        self._mode = "text"
        out, self._buffer = self._buffer, ""
        return [Text(out)]

    def finish(self) -> list[ParsedPiece]:
        rest, self._buffer = self._buffer, ""
        if not rest:
            return []
        if self._mode != "call":
            return [Text(rest)]
        body = rest.lstrip().removeprefix(PYTHON_TAG)
        calls: list[ToolCall] = []
        for part in _split_calls(body):
            try:
                # A bare JSON answer with a "name" key is not a call: it needs its arguments,
                # and a function the request offered.
                call = call_from(
                    loads_lenient(part, complete=True), args_key="parameters", require_args=True
                )
            except ValueError:
                call = None
            if call is None or (self.schemas and call.name not in self.schemas):
                return [Text(rest)]
            calls.append(call)
        return list(calls) if calls else [Text(rest)]


def _split_calls(body: str) -> list[str]:
    """Top-level ``;``-separated JSON objects (a ';' inside strings or braces is kept)."""
    parts, depth, in_string, escaped, start = [], 0, False, False, 0
    for i, ch in enumerate(body):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        elif ch == ";" and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    parts.append(body[start:])
    return [p for p in (p.strip() for p in parts) if p]
