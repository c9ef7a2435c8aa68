"""Grammars (GBNF, llama.cpp's format) that constrain what a model may write: any JSON
object, a JSON Schema, or a tool call in the model family's own syntax whose arguments match
the function's schema. Schemas are measured against ``bounds`` and validated first (a bad one is
a 400 saying what is wrong), counted repetition is written as GBNF repetition (``x{m,n}``)
rather than nested groups, enums become a prefix tree (few live alternatives per token), and
compiled grammars are cached with a bound (security guide T5, T21). Callers run this off the
event loop."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from kaiyuan.chat import bounds
from kaiyuan.chat.toolcalls.base import CallSyntax
from kaiyuan.errors import InvalidRequest

CACHE_SIZE = 256


def check_schema(schema: Any, param: str) -> None:
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for

    if not isinstance(schema, dict):
        raise InvalidRequest(f"{param} must be a JSON Schema object", param=param)
    bounds.check(schema, param)
    try:
        validator_for(schema).check_schema(schema)
    except RecursionError:
        raise InvalidRequest(f"{param} is nested too deeply", param=param) from None
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise InvalidRequest(
            f"{param} is not a valid JSON Schema: {exc.message}"
            + (f" (at {where})" if where else ""),
            param=param,
        ) from None


def json_object() -> str:
    from llama_cpp.llama_grammar import JSON_GBNF

    return str(JSON_GBNF)


def for_schema(schema: dict[str, Any], param: str) -> str:
    check_schema(schema, param)
    try:
        gbnf = _schema_grammar(json.dumps(schema, sort_keys=True))
    except (RecursionError, MemoryError):
        raise InvalidRequest(f"{param} is nested too deeply", param=param) from None
    except Exception as exc:  # the converter rejects constructs it cannot express
        raise InvalidRequest(
            f"{param} uses a construct kaiyuan cannot enforce: {exc}", param=param
        ) from None
    return bounds.check_grammar(gbnf, param)


def for_calls(
    syntax: CallSyntax,
    functions: list[tuple[str, dict[str, Any]]],
    *,
    parallel: bool,
    per_parameter: bool = False,
) -> str:
    """A grammar for one (or, with ``parallel``, one or more) calls of ``functions``."""
    key = json.dumps(
        [
            syntax.call,
            syntax.open,
            syntax.close,
            syntax.separator,
            functions,
            parallel,
            per_parameter,
        ],
        sort_keys=True,
    )
    try:
        gbnf = _calls_grammar(key)
    except (RecursionError, MemoryError):
        raise InvalidRequest(
            "a tool's parameters schema is nested too deeply", param="tools"
        ) from None
    except InvalidRequest:
        raise
    except Exception as exc:
        raise InvalidRequest(
            f"a tool's parameters schema uses a construct kaiyuan cannot enforce: {exc}",
            param="tools",
        ) from None
    return bounds.check_grammar(gbnf, "tools")


# The converter's string rule admits raw control characters (a newline inside a string), which
# is not JSON; llama.cpp's own converter excludes them, and so does this one.
_LOOSE_CHAR = 'char ::= [^"\\\\]'
_STRICT_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F]'


def _strict(rules: str) -> str:
    return rules.replace(_LOOSE_CHAR, _STRICT_CHAR)


def _converter() -> Any:
    return _bounded_converter_class()(
        prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
    )


@lru_cache(maxsize=1)
def _bounded_converter_class() -> type:
    """llama-cpp-python's converter, but counted repetition (string lengths, array sizes) as
    ``x{m,n}`` instead of m..n nested optional groups, and enums as a prefix tree of rules."""
    from llama_cpp.llama_grammar import RESERVED_NAMES, SchemaConverter

    class Bounded(SchemaConverter):
        def visit(self, schema: dict[str, Any], name: str) -> str:
            kind = schema.get("type")
            rule_name = name + "-" if name in RESERVED_NAMES else name or "root"
            plain = not any(k in schema for k in ("$ref", "oneOf", "anyOf", "const"))
            if plain and not isinstance(kind, list) and "enum" in schema:
                return _enum_tree(self, [json.dumps(v) for v in schema["enum"]], rule_name)
            if (
                plain
                and kind == "string"
                and "pattern" not in schema
                and not schema.get("format")
                and ("minLength" in schema or "maxLength" in schema)
            ):
                char = self._add_primitive("char", _primitive("char"))
                count = _repeat(char, schema.get("minLength", 0), schema.get("maxLength"))
                return str(self._add_rule(rule_name, f'"\\"" {count} "\\"" space'))
            items = schema.get("items")
            if (
                plain
                and kind in (None, "array")
                and isinstance(items, dict)
                and ("minItems" in schema or "maxItems" in schema)
            ):
                item = self.visit(items, f"{name}{'-' if name else ''}item")
                body = _items(item, schema.get("minItems", 0), schema.get("maxItems"))
                return str(self._add_rule(rule_name, f'"[" space {body} "]" space'))
            return str(super().visit(schema, name))

    return Bounded


def _primitive(name: str) -> Any:
    from llama_cpp.llama_grammar import PRIMITIVE_RULES

    return PRIMITIVE_RULES[name]


def _repeat(item: str, low: int, high: int | None) -> str:
    """``item`` repeated ``low`` to ``high`` (None: unbounded) times, in GBNF."""
    low = int(low)
    if high is None:
        return f"{item}*" if low == 0 else f"{item}+" if low == 1 else f"{item}{{{low},}}"
    high = int(high)
    if high <= 0 or high < low:
        return '""' if high <= 0 else f"{item}{{{low}}}"
    return f"{item}?" if (low, high) == (0, 1) else f"{item}{{{low},{high}}}"


def _items(item: str, low: int, high: int | None) -> str:
    """A comma-separated list of ``low`` to ``high`` items."""
    low, high = int(low), None if high is None else int(high)
    if high is not None and high <= 0:
        return ""
    rest = _repeat(f'("," space {item})', max(low - 1, 0), None if high is None else high - 1)
    listed = f"{item} {rest}" if rest != '""' else item
    return listed if low >= 1 else f"( {listed} )?"


def _enum_tree(conv: Any, literals: list[str], rule_name: str) -> str:
    """The enum's JSON texts as a radix tree, one rule per branching point, so the grammar
    keeps only as many live alternatives as a prefix has continuations (a flat alternation of
    N values checks every token against N stacks). Depth is bounded by the schema size limit:
    literals of lengths 1..k sum past 64 KiB at k = 362, under Python's recursion limit."""
    if not literals:
        return str(conv._add_rule(rule_name, '""'))  # jsonschema accepts an empty enum
    counter = iter(range(1, 1 << 30))

    def node(values: list[str], name: str) -> str:
        ends = "" in values
        groups: dict[str, list[str]] = {}
        for v in values:
            if v:
                groups.setdefault(v[0], []).append(v)
        alternatives = []
        for group in groups.values():
            prefix = _common_prefix(group)
            rest = [v[len(prefix) :] for v in group]
            literal = conv._format_literal(prefix)
            if rest == [""] * len(rest):
                alternatives.append(literal)
            else:
                alternatives.append(f"{literal} {node(rest, f'{rule_name}-{next(counter)}')}")
        body = " | ".join(alternatives)
        if ends:
            body = f"( {body} )?"
        return str(conv._add_rule(name, body))

    return node(sorted(set(literals)), rule_name)


def _common_prefix(values: list[str]) -> str:
    first, last = min(values), max(values)
    i = 0
    while i < len(first) and first[i] == last[i]:
        i += 1
    return first[:i]


@lru_cache(maxsize=CACHE_SIZE)
def _schema_grammar(schema_json: str) -> str:
    conv = _converter()
    conv.visit(conv.resolve_refs(json.loads(schema_json), "request"), "")
    return _strict(str(conv.format_grammar()))


@lru_cache(maxsize=CACHE_SIZE)
def _calls_grammar(key: str) -> str:
    call, open_, close, separator, functions, parallel, per_parameter = json.loads(key)
    conv = _converter()
    alternatives = []
    for i, (name, schema) in enumerate(functions):
        schema = conv.resolve_refs(schema or {"type": "object"}, f"tool-{i}")
        args = _parameters(conv, schema, i) if per_parameter else conv.visit(schema, f"fn{i}-args")
        alternatives.append("( " + call.replace("{name}", name).replace("{args}", args) + " )")
    body = "call ( " + separator + " call )*" if parallel else "call"
    empty = '""'
    rules = _strict(str(conv.format_grammar()))
    root = f"root ::= {open_ or empty} {body} {close or empty}"
    return f"{rules}\ncall ::= {' | '.join(alternatives)}\n{root}\n"


def _parameters(conv: Any, schema: dict[str, Any], i: int) -> str:
    """Qwen3-Coder style: one ``<parameter=KEY>`` block per property, each value JSON."""
    props = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    parts = []
    for key, sub in props.items():
        value = conv.visit(sub if isinstance(sub, dict) else {}, f"fn{i}-{_rule_name(key)}")
        block = f'"<parameter={_literal(key)}>\\n" {value} "\\n</parameter>\\n"'
        parts.append(block if key in required else f"( {block} )?")
    return " ".join(parts) or '""'


def _rule_name(key: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in key) or "p"


def _literal(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
