"""The tool-call parser contract and the block-parsing machinery the families share.

A parser is fed the answer text (reasoning already split off) in arbitrary fragments and
returns :class:`Text` and :class:`ToolCall` events. Text that could still grow into a call
marker is held back; a block that does not parse is returned as text, never dropped.
"""

from __future__ import annotations

import abc
import ast
import json
from dataclasses import dataclass
from typing import Any, ClassVar

from kaiyuan.chat.streaming import held_back


@dataclass(slots=True, frozen=True)
class Text:
    text: str


@dataclass(slots=True, frozen=True)
class ToolCall:
    name: str
    arguments: str  # a JSON object, as text


ParsedPiece = Text | ToolCall


@dataclass(slots=True, frozen=True)
class CallSyntax:
    """How a family writes calls, for grammars that force one: ``call`` has ``{name}`` and
    ``{args}`` placeholders (GBNF), and calls are joined by ``separator`` inside
    ``open``/``close``. ``per_parameter``: ``{args}`` is one ``<parameter=KEY>`` block per
    argument, each value JSON (Qwen3-Coder's XML), instead of one JSON object."""

    call: str
    open: str = ""
    close: str = ""
    separator: str = '"\\n"'
    per_parameter: bool = False


class ToolParser(abc.ABC):
    name: ClassVar[str]
    syntax: ClassVar[CallSyntax]
    # How one call is written, for kaiyuan's default tool prompt (templates without tools).
    example: ClassVar[str]

    def __init__(self, schemas: dict[str, dict[str, Any]] | None = None) -> None:
        self.schemas = schemas or {}

    @abc.abstractmethod
    def feed(self, text: str) -> list[ParsedPiece]: ...

    @abc.abstractmethod
    def finish(self) -> list[ParsedPiece]: ...


class BlockParser(ToolParser):
    """Calls live between ``start`` and ``end`` markers; the rest is text."""

    start: ClassVar[str]
    end: ClassVar[str]
    # The body is JSON: an end marker inside one of its strings is content, not the end
    # (a grammar-forced ``{"city": "Rome }}</tool_call> …"}`` is one valid call).
    json_body: ClassVar[bool] = False

    def __init__(self, schemas: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__(schemas)
        self._buffer = ""
        self._inside = False
        self._strings = _StringScan()

    @abc.abstractmethod
    def parse_block(self, body: str, *, closed: bool = True) -> list[ToolCall] | None:
        """The calls in one block, or None when it is not valid (it becomes text).

        ``closed`` is False for a block the generation ended inside: it counts only if what
        was written is complete (no repair of a cut-off call)."""

    def feed(self, text: str) -> list[ParsedPiece]:
        self._buffer += text
        out: list[ParsedPiece] = []
        while True:
            if not self._inside:
                i = self._buffer.find(self.start)
                if i < 0:
                    keep = held_back(self._buffer, self.start)
                    _text(out, self._buffer[: len(self._buffer) - keep])
                    self._buffer = self._buffer[len(self._buffer) - keep :]
                    return out
                _text(out, self._buffer[:i])
                self._buffer = self._buffer[i + len(self.start) :]
                self._inside = True
            else:
                j = self._end_marker()
                if j < 0:
                    return out
                body = self._buffer[:j]
                self._buffer = self._buffer[j + len(self.end) :]
                self._inside = False
                self._strings = _StringScan()
                self._emit(out, body, closed=True)

    def _end_marker(self) -> int:
        """Where the end marker starts in the buffered body, or -1 while it has not come."""
        if not self.json_body:
            return self._buffer.find(self.end)
        return self._strings.find_outside(self._buffer, self.end)

    def finish(self) -> list[ParsedPiece]:
        out: list[ParsedPiece] = []
        rest, self._buffer = self._buffer, ""
        if self._inside:
            self._inside = False
            # Stopped before (or inside) the end marker: a partial marker is not content.
            body = rest[: len(rest) - held_back(rest, self.end)]
            calls = self.parse_block(body, closed=False)
            if calls:
                out.extend(calls)
            else:
                _text(out, self.start + rest)
        else:
            _text(out, rest)
        return out

    def _emit(self, out: list[ParsedPiece], body: str, *, closed: bool) -> None:
        calls = self.parse_block(body, closed=closed)
        if calls:
            out.extend(calls)
        else:
            _text(out, self.start + body + (self.end if closed else ""))


class _StringScan:
    """Finds a marker outside JSON strings in a growing buffer, remembering how far it read
    (so a long body is scanned once however it arrives)."""

    __slots__ = ("_at", "_escaped", "_in_string")

    def __init__(self) -> None:
        self._at = 0
        self._in_string = self._escaped = False

    def find_outside(self, text: str, marker: str) -> int:
        while self._at < len(text):
            i = self._at
            ch = text[i]
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif ch == "\\":
                    self._escaped = True
                elif ch == '"':
                    self._in_string = False
            elif ch == '"':
                self._in_string = True
            elif ch == marker[0]:
                if text.startswith(marker, i):
                    return i
                if marker.startswith(text[i:]):
                    return -1  # maybe the marker, cut off: look again when more has come
            self._at += 1
        return -1


def _text(out: list[ParsedPiece], text: str) -> None:
    if text:
        if out and isinstance(out[-1], Text):
            out[-1] = Text(out[-1].text + text)
        else:
            out.append(Text(text))


def _without_trailing_commas(text: str) -> str:
    """Drop commas right before a closing bracket, outside strings only."""
    out: list[str] = []
    in_string = escaped = False
    for i, ch in enumerate(text):
        if in_string:
            escaped = not escaped and ch == "\\"
            if ch == '"' and not escaped:
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "," and text[i + 1 :].lstrip()[:1] in ("}", "]"):
            continue
        out.append(ch)
    return "".join(out)


def loads_lenient(text: str, *, complete: bool = False) -> Any:
    """JSON as models write it: strict first, then trailing commas and Python literals, and
    (unless ``complete`` is required) a missing closing brace or two (Qwen-Agent is similarly
    forgiving). Raises ValueError."""
    text = text.strip()
    candidates = [text, _without_trailing_commas(text)]
    if not complete:
        candidates += [c + "}" * n for c in candidates[:2] for n in (1, 2)]
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            pass
    try:
        return ast.literal_eval(text)  # {'a': 1, 'b': True}: literals only, never code
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise ValueError("not JSON") from None


def call_from(
    data: Any, *, args_key: str = "arguments", require_args: bool = False
) -> ToolCall | None:
    """A ToolCall from ``{"name": ..., "arguments": {...}}`` (arguments may be JSON text)."""
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    if require_args and not ({args_key, "arguments", "parameters"} & data.keys()):
        return None
    args = data.get(args_key, data.get("arguments", data.get("parameters", {})))
    if isinstance(args, str):
        try:
            args = loads_lenient(args) if args.strip() else {}
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return ToolCall(data["name"], json.dumps(args, ensure_ascii=False))
