"""Grammars (GBNF, llama.cpp's format) that constrain what a model may write: any JSON
object, a JSON Schema, or a tool call in the model family's own syntax whose arguments match
the function's schema. Schemas are measured against ``bounds`` and validated first (a bad one is
a 400 saying what is wrong), counted repetition is written as GBNF repetition (``x{m,n}``)
rather than nested groups, enums become a prefix tree (few live alternatives per token), numeric
bounds become exact digit ranges, and compiled grammars are cached with a bound (security guide
T5, T21). Callers run this off the event loop."""

from __future__ import annotations

import json
import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext
from functools import lru_cache
from typing import Any, NamedTuple

from kaiyuan.chat import bounds
from kaiyuan.chat.toolcalls.base import CallSyntax
from kaiyuan.errors import InvalidRequest

CACHE_SIZE = 256
FRACTION_DIGITS = 16  # decimal places a bounded number may have (llama.cpp writes 16 as well)


class Unenforceable(ValueError):
    """Numeric bounds the grammar cannot meet: none of the values it writes is in range."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


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
        gbnf = _schema_grammar(json.dumps(bounds.relax(schema), sort_keys=True))
    except (RecursionError, MemoryError):
        raise InvalidRequest(f"{param} is nested too deeply", param=param) from None
    except Unenforceable as exc:
        raise InvalidRequest(f"{param} {exc}", param=param, code=exc.code) from None
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
) -> str:
    """A grammar for one (or, with ``parallel``, one or more) calls of ``functions``."""
    key = json.dumps(
        [
            syntax.call,
            syntax.open,
            syntax.close,
            syntax.separator,
            [(name, bounds.relax(schema)) for name, schema in functions],
            parallel,
            syntax.per_parameter,
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
    except Unenforceable as exc:
        message = f"a tool's parameters schema {exc}"
        raise InvalidRequest(message, param="tools", code=exc.code) from None
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
    ``x{m,n}`` instead of m..n nested optional groups, enums as a prefix tree of rules, numeric
    bounds enforced, and a list of types keeping the keywords that apply to each type."""
    from llama_cpp.llama_grammar import RESERVED_NAMES, SchemaConverter

    class Bounded(SchemaConverter):
        def visit(self, schema: dict[str, Any], name: str) -> str:
            kind = schema.get("type")
            rule_name = name + "-" if name in RESERVED_NAMES else name or "root"
            plain = not any(k in schema for k in ("$ref", "oneOf", "anyOf", "const"))
            if plain and "enum" in schema:
                values = [json.dumps(v) for v in _enum_values(schema)]
                return _enum_tree(self, values, rule_name)
            if plain and isinstance(kind, list):
                # llama.cpp's converter keeps only the type names, dropping bounds and lengths
                each = [{**schema, "type": k} for k in kind]
                return str(self._add_rule(rule_name, self._generate_union_rule(name, each)))
            if plain and kind in ("integer", "number") and any(k in schema for k in _BOUNDS):
                # A rule of its own holding only terminals: llguidance lexes it as one token
                # (its lexer is greedy, so "12" split over alternatives "12" [0-2] and [1-9]
                # [0-9] would fail); llama.cpp matches it character by character either way.
                digits = self._add_rule(f"{rule_name}-value", _numeric(schema, kind))
                return str(self._add_rule(rule_name, f"{digits} space"))
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


_TYPES = {"array", "boolean", "integer", "null", "number", "object", "string"}


def _enum_values(schema: dict[str, Any]) -> list[Any]:
    """The enum's values that the schema's type and numeric bounds allow as well."""
    from jsonschema import Draft202012Validator

    rules = {k: schema[k] for k in ("type", *_BOUNDS) if k in schema}
    kinds = rules.get("type", [])
    if not set(kinds if isinstance(kinds, list) else [kinds]) <= _TYPES or any(
        isinstance(v, bool)
        for v in rules.values()  # draft 4's boolean exclusive bounds
    ):
        return list(schema["enum"])
    validator = Draft202012Validator(rules)
    return [v for v in schema["enum"] if validator.is_valid(v)]


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


# --- numeric bounds ------------------------------------------------------------------------------
# A bounded integer or number is written in plain decimal (no exponent, no "-0", no leading
# zeros) and its grammar accepts exactly the values in range: the digit strings between two
# bounds are a short list of alternatives, each a literal prefix, one digit class and free
# digits ("1" [3-9] [0-9]{2}), at most a few per digit, so the grammar stays small for any range.
# A number's fraction is compared the same way, as 16 digits padded with zeros.

_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _numeric(schema: dict[str, Any], kind: str) -> str:
    """The GBNF body for the integers (or numbers) ``schema``'s bounds admit; a bound past
    ``bounds.MAX_BOUND`` that only widens the range is implied by the digit limit."""
    integer = kind == "integer"
    with localcontext() as ctx:
        ctx.prec = 64  # 15 integer and 16 fraction digits, exactly
        step = Decimal(1) if integer else Decimal(10) ** -FRACTION_DIGITS
        cap = Decimal(bounds.MAX_BOUND) - step
        low, high = -cap, cap
        for key in _BOUNDS:
            value = schema.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue  # draft 4's boolean exclusiveMinimum is read with minimum
            upper = key.endswith("aximum")
            exclusive = key.startswith("exclusive") or (
                schema.get("exclusiveMaximum" if upper else "exclusiveMinimum") is True
            )
            bound = _limit(value, exclusive=exclusive, upper=upper, step=step)
            low, high = (low, min(high, bound)) if upper else (max(low, bound), high)
        if low > high:
            given = ", ".join(f"{k} {schema[k]}" for k in _BOUNDS if k in schema)
            if low >= bounds.MAX_BOUND or high <= -bounds.MAX_BOUND:
                raise Unenforceable(
                    f"has bounds ({given}) that need a value past ±10^15; bounded numbers "
                    "are written with at most 15 integer digits",
                    code="schema_too_complex",
                )
            written = "" if integer else f" written with at most {FRACTION_DIGITS} decimal places"
            raise Unenforceable(f"has bounds that no {kind}{written} meets ({given})")
        if integer:
            return _integers(int(low), int(high))
        return _decimals(low, high)


def _limit(value: float, *, exclusive: bool, upper: bool, step: Decimal) -> Decimal:
    """The bound as the last value on the grammar's grid (multiples of ``step``) inside it, so
    every written value is in range, also as a JSON parser reads it: a number parsed as a
    double compares with the double of the bound, and rounding to double never crosses it."""
    if isinstance(value, float) and math.isnan(value):
        raise Unenforceable("has a bound that is not a number (NaN)")
    exact = Decimal(value)  # an int or a double, exactly; infinities stay infinite
    if not exact.is_finite() or abs(exact) >= bounds.MAX_BOUND:
        return exact  # the digit limit decides; _numeric refuses a bound it cannot meet
    rounding = ROUND_FLOOR if upper else ROUND_CEILING
    if step == 1:  # integers: JSON parsers read them exactly
        limit = exact.to_integral_value(rounding)
        if exclusive and limit == exact:
            limit += -1 if upper else 1
        return limit
    if exclusive:  # the next double inside, so that no number rounds onto the bound itself
        value = math.nextafter(float(value), -math.inf if upper else math.inf)
    # The shortest decimal that reads back as the bound (0.1, not 0.1000000000000000055...).
    return Decimal(repr(float(value))).quantize(step, rounding)


def _integers(low: int, high: int) -> str:
    alternatives = []
    if low < 0:
        alternatives.append('"-" ' + _group(_naturals(max(-high, 1), -low)))
    if high >= 0:
        alternatives += _naturals(max(low, 0), high)
    return " | ".join(alternatives)


def _naturals(low: int, high: int) -> list[str]:
    """Alternatives for the integers in [low, high] (0 <= low <= high), one digit count after
    another; the counts strictly between the two bounds' are free."""
    a, b = str(low), str(high)
    if len(a) == len(b):
        return _rendered(_between(a, b, len(a), fixed=True))
    alts = _between(a, None, len(a), fixed=True)
    if len(b) - len(a) > 1:
        alts.append(_Digits("", (1, 9), len(a), len(b) - 2))
    alts += _between("1" + "0" * (len(b) - 1), b, len(b), fixed=True)
    return _rendered(alts)


def _decimals(low: Decimal, high: Decimal) -> str:
    alternatives = []
    if low < 0:
        tick = Decimal(10) ** -FRACTION_DIGITS  # a negative number is at least one tick from 0
        alternatives.append('"-" ' + _group(_magnitudes(max(-high, tick), -low)))
    if high >= 0:
        alternatives += _magnitudes(max(low, Decimal(0)), high)
    return " | ".join(alternatives)


def _magnitudes(low: Decimal, high: Decimal) -> list[str]:
    """Alternatives for the decimals in [low, high] (0 <= low, both on the grid): the integer
    part at the low bound, strictly between, or at the high bound, and a fraction to suit."""
    (low_int, low_frac), (high_int, high_frac) = _split(low), _split(high)
    if low_int == high_int:
        return [f'"{low_int}" {_fraction(low_frac, high_frac)}'.rstrip()]
    head, tail = [], []
    first, last = low_int, high_int
    if low_frac.strip("0"):
        head.append(f'"{low_int}" {_fraction(low_frac, None)}')
        first += 1
    if high_frac.strip("9"):
        tail.append(f'"{high_int}" {_fraction(None, high_frac)}'.rstrip())
        last -= 1
    if first <= last:
        head.append(f"{_group(_naturals(first, last))} {_fraction(None, None)}")
    return head + tail


def _split(value: Decimal) -> tuple[int, str]:
    """A non-negative decimal's integer part and its fraction as FRACTION_DIGITS digits."""
    whole = int(value)
    fraction = int((value - whole).scaleb(FRACTION_DIGITS))
    return whole, str(fraction).zfill(FRACTION_DIGITS)


def _fraction(low: str | None, high: str | None) -> str:
    """An optional ``.digits`` part whose value, padded with zeros, is in [low, high]."""
    parts, optional = [], False
    for alt in _between(low, high, FRACTION_DIGITS, fixed=False):
        if not alt.literal and alt.span is None:  # free from the first digit: may be left out
            optional, alt = True, alt._replace(least=max(alt.least, 1))
            if alt.most == 0:
                continue
        parts.append(alt)
    if not parts:
        return ""
    body = '"." ' + _group(_rendered(parts))
    return f"( {body} )?" if optional else body


class _Digits(NamedTuple):
    """One alternative of a digit range: a literal prefix, one digit from ``span``, then
    ``least`` to ``most`` digits from [0-``top``] (``top`` 0: only zeros may follow)."""

    literal: str
    span: tuple[int, int] | None = None
    least: int = 0
    most: int = 0
    top: int = 9


def _between(low: str | None, high: str | None, n: int, *, fixed: bool) -> list[_Digits]:
    """Digit strings of length ``n`` (``fixed``), or of up to ``n`` digits with the missing
    ones read as trailing zeros, whose ``n``-digit value lies in [low, high] (``n``-digit
    strings; None: no bound). Recursion follows a bound's digits, so depth is at most ``n``."""
    if low is not None and not low.strip("0"):
        low = None
    if high is not None and not high.strip("9"):
        high = None
    if low is None and high is None:
        return [_Digits("", None, n if fixed else 0, n)]
    if low is None and high is not None and not high.strip("0"):  # only zeros fit
        return [_Digits("0" * n) if fixed else _Digits("", None, 0, n, top=0)]
    alts = [] if fixed or low is not None else [_Digits("")]  # the rest read as zeros
    if low is not None and high is not None and low[0] == high[0]:
        return alts + _prefixed(low[0], _between(low[1:], high[1:], n - 1, fixed=fixed))
    first = int(low[0]) if low is not None else 0
    last = int(high[0]) if high is not None else 9
    tail: list[_Digits] = []
    if low is not None and low[1:].strip("0"):  # this digit needs the rest at least low's
        alts += _prefixed(low[0], _between(low[1:], None, n - 1, fixed=fixed))
        first += 1
    if high is not None and high[1:].strip("9"):
        tail = _prefixed(high[0], _between(None, high[1:], n - 1, fixed=fixed))
        last -= 1
    if first <= last:
        alts.append(_Digits("", (first, last), n - 1 if fixed else 0, n - 1))
    return alts + tail


def _prefixed(digit: str, alts: list[_Digits]) -> list[_Digits]:
    return [alt._replace(literal=digit + alt.literal) for alt in alts]


def _rendered(alts: list[_Digits]) -> list[str]:
    """GBNF for each alternative, neighbours that differ only in how many free digits they
    take merged into one."""
    merged: list[_Digits] = []
    for alt in alts:
        last = merged[-1] if merged else None
        if (
            last
            and last._replace(least=alt.least, most=alt.most) == alt
            and alt.least <= last.most + 1
        ):
            merged[-1] = last._replace(most=max(last.most, alt.most))
        else:
            merged.append(alt)
    return [_render(alt) for alt in merged]


def _render(alt: _Digits) -> str:
    literal, span = alt.literal, alt.span
    if span is not None and span[0] == span[1]:
        literal, span = literal + str(span[0]), None
    parts = [f'"{literal}"'] if literal else []
    if span is not None:
        parts.append(f"[{span[0]}-{span[1]}]")
    if alt.most:
        parts.append(("[0-9]" if alt.top else '"0"') + _count(alt.least, alt.most))
    return " ".join(parts) or '""'


def _count(least: int, most: int) -> str:
    if least == most:
        return "" if most == 1 else f"{{{most}}}"
    return "?" if (least, most) == (0, 1) else f"{{{least},{most}}}"


def _group(alternatives: list[str]) -> str:
    return alternatives[0] if len(alternatives) == 1 else "( " + " | ".join(alternatives) + " )"
