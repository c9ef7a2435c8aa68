"""Client text in chat prompts (security guide T25).

A chat prompt is rendered as one text, yet only the template's own markers may become control
tokens. So before rendering, every client string (contents, names, tool calls, results, tool
definitions) has each control text in it written as a guard: GUARD_OPEN, the text's UTF-8 in
hex, GUARD_CLOSE. Templates pass guards through untouched (they are neither whitespace nor
markup); TextEngine.encode then tokenizes each guard's text as plain text and the rest with
special tokens parsed. The guard characters are Unicode noncharacters, and a client's own are
guarded too, so client text can never forge a guard. A string's tail that begins a control
text ("...<|im_") is guarded as well: otherwise the next client string rendered right after it
("start|>...", as templates join a message's text parts) would complete the marker.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

GUARD_OPEN, GUARD_CLOSE = "\U0010fffe", "\U0010ffff"
_GUARD = re.compile(f"{GUARD_OPEN}([0-9a-f]*){GUARD_CLOSE}")


@dataclass(slots=True, frozen=True)
class _Guards:
    pattern: re.Pattern[str]
    prefixes: frozenset[str]  # the proper prefixes of the control texts
    longest: int


@functools.lru_cache(maxsize=16)
def _guards(texts: tuple[str, ...]) -> _Guards:
    texts = tuple(t for t in texts if t)
    return _Guards(
        pattern=re.compile(_trie_regex({*texts, GUARD_OPEN, GUARD_CLOSE})),
        prefixes=frozenset(t[:i] for t in texts for i in range(1, len(t))),
        longest=max(map(len, texts), default=1),
    )


def _trie_regex(words: set[str]) -> str:
    """One regex matching any of ``words``, the longest where several start at one place; a
    trie, so a position costs one step per character, however many words (Gemma: thousands)."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}  # a word ends here

    def emit(node: dict[str, Any]) -> str:
        branches = [re.escape(c) + emit(child) for c, child in sorted(node.items()) if c]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"
        return f"(?:{body})?" if "" in node else body

    return emit(trie)


def _guard(text: str) -> str:
    return f"{GUARD_OPEN}{text.encode().hex()}{GUARD_CLOSE}"


def guard_text(text: str, controls: tuple[str, ...]) -> str:
    """``text`` (from a client) with every occurrence of a control text, of a guard character,
    and a tail that begins a control text written as guards (see above)."""
    guards = _guards(controls)
    out: list[str] = []
    start = 0
    for match in guards.pattern.finditer(text):
        out += [text[start : match.start()], _guard(match.group())]
        start = match.end()
    tail = text[start:]
    for n in range(min(len(tail), guards.longest - 1), 0, -1):
        if tail[-n:] in guards.prefixes:
            out += [tail[:-n], _guard(tail[-n:])]
            break
    else:
        out.append(tail)
    return "".join(out)


def split_guarded(text: str) -> list[tuple[str, bool]]:
    """A rendered prompt as (piece, plain) pairs: template text (``plain`` False; always the
    first pair, possibly empty) and the texts of guards (adjacent guards joined)."""
    pieces: list[tuple[str, bool]] = []
    start = 0
    for match in _GUARD.finditer(text):
        try:
            plain = bytes.fromhex(match.group(1)).decode()
        except ValueError:  # not one of ours (a template changed it): it stays text
            continue
        before, start = text[start : match.start()], match.end()
        if before or not pieces:
            pieces.append((before, False))
        if pieces[-1][1]:
            pieces[-1] = (pieces[-1][0] + plain, True)
        else:
            pieces.append((plain, True))
    if start < len(text) or not pieces:
        pieces.append((text[start:], False))
    return pieces
