"""Limits on JSON schemas and the grammars made from them (security guide T5, T21).

llama.cpp parses a grammar recursively on the C stack and checks every candidate token against
every live alternative, so an unbounded schema can crash the server (a ``maxLength`` of 20,000
written as nested groups overflowed the stack) or stall every user (an enum of 200,000 strings).
Each schema is measured here before any converter, llama.cpp or llguidance sees it, and a
request past a limit gets a 400 naming that limit.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeGuard

from kaiyuan.errors import InvalidRequest

MAX_SCHEMA_BYTES = 64 * 1024  # the schema as compact JSON
MAX_SCHEMA_DEPTH = 64  # nested objects and arrays in the schema document
MAX_SCHEMA_NODES = 4096  # objects and arrays in the schema document
MAX_REPEAT = 1000  # minLength, maxLength, minItems, maxItems (llama.cpp refuses > 2000)
MAX_ENUM = 4096  # values of one enum
MAX_ALTERNATIVES = 128  # branches of one anyOf / oneOf / allOf
MAX_PROPERTIES = 256  # properties of one object
MAX_PATTERN_CHARS = 1000
MAX_PATTERN_REPEAT = 100  # a counted repetition in a pattern, a{0,N}, becomes N nested groups
MAX_GRAMMAR_BYTES = 512 * 1024  # the GBNF text
MAX_GRAMMAR_NESTING = 256  # parentheses in one rule (llama.cpp crashes past a few thousand)
# Integers and numbers with bounds are written with at most 15 integer digits (past 2^53, about
# 9.007e15, JSON parsers that read doubles lose integer precision). A bound that widens the range
# past this is implied; one that demands a bigger value is refused when the grammar is built
# (and only then: a tool offered with tool_choice "auto" is only shown to the model).
MAX_BOUND = 10**15

_LOWER = ("minLength", "minItems")
# Upper counts past MAX_REPEAT are dropped before a grammar is made (relax): a string of at most
# 524,288 characters is, for a model answer, any string (Claude Code's tools say so), and
# max_tokens bounds what is written anyway.
_UPPER = ("maxLength", "maxItems")
_BRANCHES = ("anyOf", "oneOf", "allOf", "prefixItems")
_QUANTIFIER = re.compile(r"\{\s*(\d*)\s*(?:,\s*(\d*)\s*)?\}")


def relax(schema: Any) -> Any:
    """``schema`` (already checked) without upper counts past MAX_REPEAT."""
    if isinstance(schema, list):
        return [relax(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {
        key: relax(value)
        for key, value in schema.items()
        if not (key in _UPPER and _count(value) and value > MAX_REPEAT)
    }


def check(schema: Any, param: str) -> None:
    """Raise a 400 naming the first limit ``schema`` exceeds."""
    nodes = 0
    stack: list[tuple[Any, int]] = [(schema, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, dict | list):
            continue
        nodes += 1
        if depth > MAX_SCHEMA_DEPTH:
            _refuse(param, f"is nested more than {MAX_SCHEMA_DEPTH} levels deep")
        if nodes > MAX_SCHEMA_NODES:
            _refuse(param, f"has more than {MAX_SCHEMA_NODES} objects and arrays")
        if isinstance(node, dict):
            _check_keywords(node, param)
            children: Any = node.values()
        else:
            children = node
        stack.extend((child, depth + 1) for child in children)
    size = len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False))  # depth is bounded
    if size > MAX_SCHEMA_BYTES:
        _refuse(param, f"is {size} bytes; the limit is {MAX_SCHEMA_BYTES}")


def _count(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_keywords(node: dict[str, Any], param: str) -> None:
    for key in _LOWER:
        value = node.get(key)
        if _count(value) and value > MAX_REPEAT:
            _refuse(param, f"has {key} {value}; the limit is {MAX_REPEAT}")
    enum = node.get("enum")
    if isinstance(enum, list) and len(enum) > MAX_ENUM:
        _refuse(param, f"has an enum of {len(enum)} values; the limit is {MAX_ENUM}")
    for key in _BRANCHES:
        branches = node.get(key)
        if isinstance(branches, list) and len(branches) > MAX_ALTERNATIVES:
            _refuse(
                param, f"has {key} with {len(branches)} entries; the limit is {MAX_ALTERNATIVES}"
            )
    properties = node.get("properties")
    if isinstance(properties, dict) and len(properties) > MAX_PROPERTIES:
        _refuse(param, f"has {len(properties)} properties; the limit is {MAX_PROPERTIES}")
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        if len(pattern) > MAX_PATTERN_CHARS:
            _refuse(param, f"has a pattern of {len(pattern)} characters; the limit is "
                    f"{MAX_PATTERN_CHARS}")  # fmt: skip
        for match in _QUANTIFIER.finditer(pattern):
            counts = [int(n) for n in match.groups() if n]
            if counts and max(counts) > MAX_PATTERN_REPEAT:
                _refuse(param, f"has a pattern repetition {match.group(0)}; patterns may repeat "
                        f"at most {MAX_PATTERN_REPEAT} times")  # fmt: skip


def check_grammar(gbnf: str, param: str) -> str:
    """The grammar itself: total size and how deeply one rule nests its groups."""
    if len(gbnf) > MAX_GRAMMAR_BYTES:
        _refuse(param, f"needs a grammar of {len(gbnf)} bytes; the limit is {MAX_GRAMMAR_BYTES}")
    if nesting(gbnf) > MAX_GRAMMAR_NESTING:
        _refuse(param, f"needs groups nested more than {MAX_GRAMMAR_NESTING} deep")
    return gbnf


def nesting(gbnf: str) -> int:
    """The deepest parenthesis nesting in GBNF text (quoted strings, character classes and
    comments skipped)."""
    deepest = depth = 0
    i, n = 0, len(gbnf)
    while i < n:
        c = gbnf[i]
        if c in '"[':
            close = '"' if c == '"' else "]"
            i += 1
            while i < n and gbnf[i] != close:
                i += 2 if gbnf[i] == "\\" else 1
        elif c == "#":
            while i < n and gbnf[i] != "\n":
                i += 1
        elif c == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif c == ")":
            depth -= 1
        elif c == "\n":
            depth = 0
        i += 1
    return deepest


def _refuse(param: str, why: str) -> None:
    raise InvalidRequest(f"{param} {why}", param=param, code="schema_too_complex")
