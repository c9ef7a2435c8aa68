"""Numeric bounds in grammars (issue 15): ``minimum``, ``maximum`` and the exclusive bounds, on
integers and numbers, hold exactly in both engines' matchers: llama.cpp's own grammar sampler
(over the bundled model's vocabulary) and llguidance (on the Lark grammar the transformers engine
compiles from the same GBNF). Exhaustive over small ranges, property-tested over random ones, and
end to end: forced tool calls and ``json_schema`` answers from the bundled model and from a tiny
random-weight transformers model validate against their schemas."""

from __future__ import annotations

import ctypes
import json
import math
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import jsonschema
import llama_cpp
import llguidance
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kaiyuan.chat import bounds, grammar
from kaiyuan.errors import InvalidRequest
from kaiyuan.store import bundled
from tests.conftest import MODEL
from tests.harness import KaiyuanServer

slow = pytest.mark.slow
LIMIT = bounds.MAX_BOUND  # bounded values are written with at most 15 integer digits

# The `files` tool's schema (kaiyuan/tools/files.py), max_results required so every call has one.
FILES: Any = {
    "type": "function",
    "function": {
        "name": "files",
        "description": "Search the user's own documents and return the most relevant passages.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1, "maxLength": 60},
                "max_results": {"type": "integer", "minimum": 1, "maximum": 20},
            },
            "required": ["query", "max_results"],
            "additionalProperties": False,
        },
    },
}
ASK_FILES: Any = [
    {"role": "user", "content": "Find all 2022 and 2023 tax notes, as many as exist."}
]


# --- two matchers that decide whether a grammar accepts a text -----------------------------------
class LlamaCpp:
    """llama.cpp's grammar sampler over the bundled model's vocabulary (loaded vocab-only): a
    text is accepted when each character's token is allowed in turn, and then end of text."""

    name = "llama.cpp"

    def __init__(self) -> None:
        _, path = bundled.resolve(MODEL)
        self.llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.tokens: dict[str, int] = {}

    def token(self, char: str) -> int:
        if char not in self.tokens:
            ids = self.llm.tokenize(char.encode(), add_bos=False, special=False)
            assert len(ids) == 1, (char, ids)
            self.tokens[char] = ids[0]
        return self.tokens[char]

    def accepts(self, gbnf: str, text: str) -> bool:
        sampler = llama_cpp.llama_sampler_init_grammar(self.vocab, gbnf.encode(), b"root")
        assert sampler, f"llama.cpp could not parse the grammar:\n{gbnf}"
        try:
            for char in text:
                if not self._allowed(sampler, self.token(char)):
                    return False
                llama_cpp.llama_sampler_accept(sampler, self.token(char))
            return self._allowed(sampler, self.llm.token_eos())
        finally:
            llama_cpp.llama_sampler_free(sampler)

    @staticmethod
    def _allowed(sampler: Any, token: int) -> bool:
        data = (llama_cpp.llama_token_data * 1)(llama_cpp.llama_token_data(token, 0.0, 0.0))
        candidates = llama_cpp.llama_token_data_array(data, 1, -1, False)
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(candidates))
        return bool(data[0].logit != -math.inf)


class _Bytes:
    """A vocabulary of the 256 bytes and an end token, in llguidance's tokenizer shape."""

    def __init__(self) -> None:
        self.eos_token_id = 256
        self.bos_token_id = None
        self.tokens = [bytes([i]) for i in range(256)] + [b"<end>"]
        self.special_token_ids = [256]

    def __call__(self, text: bytes) -> list[int]:
        return list(text)


class Llguidance:
    """llguidance over a byte vocabulary, on exactly the grammar the transformers engine
    compiles (``torch_sampling.lark_grammar``)."""

    name = "llguidance"

    def __init__(self) -> None:
        from kaiyuan.engines.torch_sampling import lark_grammar

        self.compile = lark_grammar
        self.tokenizer = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_Bytes()))
        self.matchers: dict[str, llguidance.LLMatcher] = {}

    def accepts(self, gbnf: str, text: str) -> bool:
        if gbnf not in self.matchers:
            fresh = llguidance.LLMatcher(self.tokenizer, self.compile(gbnf), log_level=0)
            assert not fresh.is_error(), fresh.get_error()
            self.matchers[gbnf] = fresh
        matcher = self.matchers[gbnf].deep_copy()  # a refused byte leaves a matcher in error
        return matcher.consume_tokens(list(text.encode())) and matcher.is_accepting()


Oracle = LlamaCpp | Llguidance


@pytest.fixture(scope="module", params=[LlamaCpp, Llguidance], ids=["llama.cpp", "llguidance"])
def oracle(request: pytest.FixtureRequest) -> Oracle:
    made: Oracle = request.param()
    return made


def bounded(kind: str, **limits: Any) -> tuple[dict[str, Any], str]:
    schema = {"type": kind, **limits}
    return schema, grammar.for_schema(schema, "response_format")


def valid(schema: dict[str, Any], text: str) -> bool:
    """What the grammar must accept: in plain decimal within its digit limits, in range as
    written (the decimal against the bound as written) and as parsed (a JSON parser's double
    against the bound's; ``1.0000000000000001`` reads back as 1.0)."""
    value = Decimal(text)
    places = -value.as_tuple().exponent  # type: ignore[operator]
    as_written = all(
        {
            "minimum": value >= bound,
            "exclusiveMinimum": value > bound,
            "maximum": value <= bound,
            "exclusiveMaximum": value < bound,
        }[key]
        for key, bound in ((k, Decimal(repr(v))) for k, v in schema.items() if k != "type")
    )
    return (
        abs(value) < LIMIT
        and places <= grammar.FRACTION_DIGITS
        and as_written
        and jsonschema.Draft202012Validator(schema).is_valid(json.loads(text))
    )


# --- integers ------------------------------------------------------------------------------------
INTEGER_BOUNDS = [
    {"minimum": 1, "maximum": 20},  # the files tool's max_results
    {"minimum": 0},
    {"minimum": 1},
    {"maximum": 0},
    {"maximum": -5},
    {"minimum": -37, "maximum": 1234},
    {"minimum": -1000, "maximum": -999},
    {"minimum": 7, "maximum": 7},
    {"minimum": 0, "maximum": 0},
    {"minimum": 99, "maximum": 101},
    {"minimum": 10, "maximum": 99},
    {"minimum": 5, "maximum": 123456},
    {"minimum": -(10**15) + 3, "maximum": 10**15 - 3},
    {"exclusiveMinimum": 0, "exclusiveMaximum": 10},
    {"exclusiveMinimum": -3.5, "maximum": 2.5},
    {"minimum": 0.5},
    {"exclusiveMaximum": 0},
    {"minimum": -(2**63), "maximum": 2**63 - 1},  # int64's range: past the digit limit, implied
]


@pytest.mark.parametrize("limits", INTEGER_BOUNDS, ids=json.dumps)
def test_integers_are_accepted_exactly_in_range(oracle: Oracle, limits: dict[str, Any]) -> None:
    schema, gbnf = bounded("integer", **limits)
    edges = [math.floor(v) for v in limits.values()]
    low, high = min(edges) - 25, max(edges) + 25
    if high - low <= 3000:  # every integer around and inside the range
        candidates = set(range(low, high + 1))
    else:  # around each bound, and across the digit counts
        candidates = {e + d for e in edges for d in range(-25, 26)}
        candidates |= {s * 10**k + d for s in (1, -1) for k in range(16) for d in (-1, 0, 1)}
    for n in sorted(candidates):
        assert oracle.accepts(gbnf, str(n)) == valid(schema, str(n)), (n, gbnf)


def test_integers_are_written_in_one_plain_form(oracle: Oracle) -> None:
    _, gbnf = bounded("integer", minimum=-50, maximum=50)
    for text in ("007", "01", "-0", "+1", "1.0", "1e1", "--1", "", " 1", "1 "):
        assert oracle.accepts(gbnf, text) == (text == "1 "), text  # a trailing space is JSON


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    low=st.none() | st.integers(-(10**6), 10**6),
    width=st.none() | st.integers(0, 10**6),
    exclusive=st.sampled_from(["", "low", "high", "both"]),
    probes=st.lists(st.integers(-60, 60), min_size=8, max_size=8),
)
def test_random_integer_ranges(
    oracle: Oracle, low: int | None, width: int | None, exclusive: str, probes: list[int]
) -> None:
    limits: dict[str, int] = {}
    if low is not None:
        limits["exclusiveMinimum" if exclusive in ("low", "both") else "minimum"] = low
    if width is not None:
        high = (low or 0) + width + (2 if exclusive != "" else 0)
        limits["exclusiveMaximum" if exclusive in ("high", "both") else "maximum"] = high
    schema, gbnf = bounded("integer", **limits)
    for edge in [*limits.values(), 0]:
        for n in (edge + d for d in probes):
            assert oracle.accepts(gbnf, str(n)) == valid(schema, str(n)), (n, limits)


# --- numbers -------------------------------------------------------------------------------------
NUMBER_BOUNDS = [
    {"minimum": 0, "maximum": 1},
    {"minimum": -2.75, "maximum": 0.125},
    {"exclusiveMinimum": 0},
    {"exclusiveMaximum": 1},
    {"minimum": 0.1, "maximum": 0.3},
    {"minimum": 1, "maximum": 1},
    {"exclusiveMinimum": -1.5, "exclusiveMaximum": 2.5},
    {"minimum": -100, "maximum": -99.99},
    {"maximum": 0.001},
    {"minimum": 12.5, "exclusiveMaximum": 1000},
]


def _decimal_texts(edge: float) -> set[str]:
    """Numbers around ``edge`` in steps of 0.001, written with and without trailing zeros, and
    one step of the last decimal place either side of it."""
    center = round(edge * 1000)
    texts = set()
    for k in range(center - 40, center + 41):
        value = Decimal(k).scaleb(-3)
        texts |= {str(value), f"{value.normalize():f}"}
    tick = Decimal(1).scaleb(-grammar.FRACTION_DIGITS)
    exact = Decimal(repr(float(edge)))
    texts |= {f"{exact + tick:f}", f"{exact - tick:f}"}
    return {t for t in texts if t not in ("-0", "-0.000")}


@pytest.mark.parametrize("limits", NUMBER_BOUNDS, ids=json.dumps)
def test_numbers_are_accepted_exactly_in_range(oracle: Oracle, limits: dict[str, Any]) -> None:
    schema, gbnf = bounded("number", **limits)
    texts = {t for v in limits.values() for t in _decimal_texts(v)}
    texts |= {"0", "0.5", "1", "-1", "999999999999999.9", "-999999999999999.9", "1000000000000000"}
    for text in sorted(texts):
        assert oracle.accepts(gbnf, text) == valid(schema, text), (text, gbnf)


def test_numbers_are_written_in_plain_decimal(oracle: Oracle) -> None:
    _, gbnf = bounded("number", minimum=-10, maximum=10)
    for text in ("1.", ".5", "-0", "-0.0", "05", "1e0", "1E-1", "0.12345678901234567"):
        assert not oracle.accepts(gbnf, text), text
    for text in ("0", "0.0", "-9.5", "10.0000000000000000", "0.1234567890123456"):
        assert oracle.accepts(gbnf, text), text


def test_exclusive_number_bounds_hold_after_parsing_as_doubles(oracle: Oracle) -> None:
    """A decimal a hair inside an exclusive bound may read back as the bound itself; the
    grammar stops at the next double inside, so what it accepts still validates."""
    for key, bound, text, ok in [
        ("exclusiveMinimum", 1, "1.0000000000000001", False),  # reads back as 1.0
        ("exclusiveMinimum", 1, "1.0000000000000002", True),  # the next double
        ("exclusiveMaximum", 123456.7, "123456.6999999999999", False),  # reads back as the bound
        ("exclusiveMaximum", 123456.7, "123456.69999999998", True),
        ("exclusiveMaximum", 0.1, "0.0999999999999999", True),
        ("exclusiveMinimum", 0, "0.0000000000000001", True),
    ]:
        schema, gbnf = bounded("number", **{key: bound})
        assert oracle.accepts(gbnf, text) == ok, (key, bound, text)
        assert jsonschema.Draft202012Validator(schema).is_valid(json.loads(text)) == ok


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    low=st.none() | st.decimals(-1000, 1000, places=3),
    width=st.none() | st.decimals(0, 500, places=3),
    exclusive=st.sampled_from(["", "low", "high"]),
    probes=st.lists(st.decimals(-2, 2, places=4), min_size=8, max_size=8),
)
def test_random_number_ranges(
    oracle: Oracle,
    low: Decimal | None,
    width: Decimal | None,
    exclusive: str,
    probes: list[Decimal],
) -> None:
    limits: dict[str, float] = {}
    if low is not None:
        limits["exclusiveMinimum" if exclusive == "low" else "minimum"] = float(low)
    if width is not None:
        high = (low or 0) + width + Decimal("0.001")
        limits["exclusiveMaximum" if exclusive == "high" else "maximum"] = float(high)
    schema, gbnf = bounded("number", **limits)
    for edge in [*limits.values(), 0.0]:
        for text in (f"{Decimal(repr(edge)) + d:f}" for d in probes):
            if text.startswith("-") and not Decimal(text):
                continue  # "-0.0000" is not written
            assert oracle.accepts(gbnf, text) == valid(schema, text), (text, limits)


# --- bounds in context ---------------------------------------------------------------------------
def test_a_type_list_keeps_its_bounds(oracle: Oracle) -> None:
    _, gbnf = bounded(["integer", "null"], minimum=1, maximum=3)  # type: ignore[arg-type]
    for text, ok in [("null", True), ("1", True), ("3", True), ("0", False), ("4", False)]:
        assert oracle.accepts(gbnf, text) == ok, text


def test_an_enum_keeps_only_values_its_type_and_bounds_allow(oracle: Oracle) -> None:
    _, gbnf = bounded(["string", "null"], enum=["a", None, 3])  # type: ignore[arg-type]
    for text, ok in [('"a"', True), ("null", True), ("3", False), ('"b"', False)]:
        assert oracle.accepts(gbnf, text) == ok, text
    _, gbnf = bounded("integer", enum=[0, 1, 20, 50, 2.5], minimum=1, maximum=20)
    for text, ok in [("1", True), ("20", True), ("0", False), ("50", False), ("2.5", False)]:
        assert oracle.accepts(gbnf, text) == ok, text


def test_bounds_nested_in_objects_and_arrays(oracle: Oracle) -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 1, "maximum": 20},
            "xs": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}},
        },
        "required": ["n", "xs"],
        "additionalProperties": False,
    }
    gbnf = grammar.for_schema(schema, "response_format")
    for text in ['{"n": 20, "xs": [0.5, 3]}', '{"n": 1, "xs": []}']:
        assert oracle.accepts(gbnf, text), text
    for text in ['{"n": 21, "xs": []}', '{"n": 0, "xs": []}', '{"n": 2, "xs": [0.5, 0]}']:
        assert not oracle.accepts(gbnf, text), text


def test_grammars_stay_small_for_any_range() -> None:
    """The digit-range alternatives grow with the digit count, not with the range."""
    widest = [
        {"type": "integer", "minimum": -(10**15) + 1, "maximum": 10**15 - 1},
        {"type": "integer", "minimum": -123456789012345, "maximum": 987654321098765},
        {"type": "number", "minimum": -0.1234567890123456, "maximum": 98765432109876.54},
        {"type": "number", "exclusiveMinimum": 0.0000000000000001, "exclusiveMaximum": 0.9999},
    ]
    for schema in widest:
        gbnf = grammar.for_schema(schema, "response_format")
        assert len(gbnf) < 6000 and bounds.nesting(gbnf) <= 4, (schema, len(gbnf))


@pytest.mark.parametrize(
    ("schema", "words", "code"),
    [
        ({"type": "integer", "minimum": 5, "maximum": 3}, "no integer meets (minimum 5, maximum 3)",
         None),
        ({"type": "integer", "exclusiveMinimum": 1, "exclusiveMaximum": 2}, "no integer meets",
         None),
        ({"type": "number", "minimum": 1e-20, "maximum": 2e-20}, "at most 16 decimal places",
         None),
        ({"type": "integer", "minimum": 10**18}, "past ±10^15", "schema_too_complex"),
        ({"type": "number", "maximum": -1e16}, "past ±10^15", "schema_too_complex"),
        ({"type": "integer", "maximum": float("nan")}, "not a number", None),
    ],
)  # fmt: skip
def test_bounds_no_written_value_meets_are_a_clear_400(
    schema: dict[str, Any], words: str, code: str | None
) -> None:
    with pytest.raises(InvalidRequest) as err:
        grammar.for_schema(schema, "response_format.json_schema.schema")
    assert words in err.value.message and err.value.code == code, err.value.message
    assert err.value.param == "response_format.json_schema.schema"


def test_a_tool_whose_bounds_no_value_meets_is_a_400_on_tools() -> None:
    from kaiyuan.chat.toolcalls.base import CallSyntax

    syntax = CallSyntax(call='"{\\"name\\": \\"{name}\\", \\"arguments\\": " {args} "}"')
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 10**16}}}
    with pytest.raises(InvalidRequest) as err:
        grammar.for_calls(syntax, [("f", schema)], parallel=False)
    assert err.value.param == "tools" and err.value.code == "schema_too_complex"


def test_a_huge_bound_only_matters_when_a_grammar_is_built() -> None:
    """A tool offered with tool_choice "auto" is shown to the model, never constrained."""
    bounds.check({"type": "integer", "minimum": 10**18}, "tools[0].function.parameters")


# --- end to end: the bundled model (llama.cpp) ---------------------------------------------------
def _files_args(reply: Any) -> dict[str, Any]:
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    calls = choice.message.tool_calls
    assert calls and calls[0].function.name == "files"
    args: dict[str, Any] = json.loads(calls[0].function.arguments)
    jsonschema.validate(args, FILES["function"]["parameters"])
    assert 1 <= args["max_results"] <= 20
    return args


# Without the bounds in its grammar the bundled model wrote max_results 150 at seed 5 here, and
# 50 for the named call below.
@slow
@pytest.mark.parametrize("seed", [4, 5])
def test_forced_files_call_keeps_max_results_in_range(server: KaiyuanServer, seed: int) -> None:
    reply = server.client().chat.completions.create(
        model=MODEL, messages=ASK_FILES, tools=[FILES], tool_choice="required",
        parallel_tool_calls=False, temperature=1.0, seed=seed, max_tokens=400,
    )  # fmt: skip
    _files_args(reply)


@slow
def test_named_files_call_keeps_max_results_in_range(server: KaiyuanServer) -> None:
    ask: Any = [{"role": "user", "content": "Search my files for notes about the budget."}]
    reply = server.client().chat.completions.create(
        model=MODEL, messages=ask, tools=[FILES],
        tool_choice={"type": "function", "function": {"name": "files"}},
        temperature=1.0, seed=5, max_tokens=400,
    )  # fmt: skip
    _files_args(reply)


def _leaves() -> st.SearchStrategy[dict[str, Any]]:
    integers = st.builds(
        lambda low, width, lo_key, hi_key: {"type": "integer", lo_key: low, hi_key: low + width},
        st.integers(-3000, 3000),
        st.integers(2, 5000),
        st.sampled_from(["minimum", "exclusiveMinimum"]),
        st.sampled_from(["maximum", "exclusiveMaximum"]),
    )
    one_sided = st.builds(
        lambda kind, key, value: {"type": kind, key: value},
        st.sampled_from(["integer", "number"]),
        st.sampled_from(["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]),
        st.integers(-100, 100),
    )
    numbers = st.builds(
        lambda low, width, lo_key, hi_key: {"type": "number", lo_key: low, hi_key: low + width},
        st.integers(-2000, 2000).map(lambda n: n / 8),
        st.integers(1, 400).map(lambda n: n / 4),
        st.sampled_from(["minimum", "exclusiveMinimum"]),
        st.sampled_from(["maximum", "exclusiveMaximum"]),
    )
    nullable = integers.map(lambda s: {**s, "type": ["integer", "null"]})
    return st.one_of(integers, one_sided, numbers, nullable)


def _bounded_schemas() -> st.SearchStrategy[dict[str, Any]]:
    objects = st.dictionaries(st.sampled_from(["a", "b", "c"]), _leaves(), min_size=1, max_size=3)
    return st.one_of(
        _leaves(),
        objects.map(
            lambda props: {
                "type": "object",
                "properties": props,
                "required": sorted(props),
                "additionalProperties": False,
            }
        ),
        _leaves().map(lambda s: {"type": "array", "items": s, "minItems": 1, "maxItems": 3}),
    )


@slow
def test_generated_bounded_schemas_validate_on_the_bundled_model(server: KaiyuanServer) -> None:
    client = server.client()
    seen: list[dict[str, Any]] = []

    @settings(max_examples=20, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(schema=_bounded_schemas(), seed=st.integers(0, 1000))
    def answer(schema: dict[str, Any], seed: int) -> None:
        seen.append(schema)
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Give some numbers."}],
            response_format={"type": "json_schema",
                             "json_schema": {"name": "numbers", "schema": schema}},
            temperature=1.0, seed=seed, max_tokens=400,
        )  # fmt: skip
        choice = reply.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        jsonschema.validate(json.loads(choice.message.content or ""), schema)

    answer()
    kinds = {json.dumps(s.get("type")) for s in seen}
    assert len(seen) == 20 and len(kinds) >= 3, kinds  # leaves, objects and arrays all came


# --- end to end: a tiny random-weight model on the transformers engine (llguidance) --------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KaiyuanServer]:
    """Random weights write noise: only the grammar keeps its numbers in range."""
    from kaiyuan.store.store import Store
    from tests.test_transformers_engine import tiny_checkpoint

    home = tmp_path_factory.mktemp("bounds-hf-home")
    folder = tiny_checkpoint(tmp_path_factory.mktemp("qwen2"), "qwen2")
    Store(home).install("tiny-qwen2", [folder], move=False, source="test")
    with KaiyuanServer(home=home, args=["--threads", "1"]) as running:
        yield running


@slow
def test_forced_files_call_on_the_transformers_engine(tiny: KaiyuanServer) -> None:
    # A short query: the tiny model's 1024-token context holds a 680-token prompt, and random
    # weights may fill a string to its maxLength with \u escapes.
    files: Any = json.loads(json.dumps(FILES).replace('"maxLength": 60', '"maxLength": 10'))
    for seed in range(3):
        reply = tiny.client().chat.completions.create(
            model="tiny-qwen2", messages=ASK_FILES, tools=[files], tool_choice="required",
            parallel_tool_calls=False, temperature=1.0, seed=seed, max_tokens=300,
        )  # fmt: skip
        _files_args(reply)


@slow
def test_bounded_json_schema_on_the_transformers_engine(tiny: KaiyuanServer) -> None:
    schema = {
        "type": "object",
        "properties": {
            "rank": {"type": "integer", "exclusiveMinimum": -3, "maximum": 12},
            "share": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
            "score": {"type": ["number", "null"], "minimum": -2.5, "maximum": 7.25},
        },
        "required": ["rank", "share", "score"],
        "additionalProperties": False,
    }
    for seed in range(3):
        reply = tiny.client().chat.completions.create(
            model="tiny-qwen2", messages=[{"role": "user", "content": "Numbers?"}],
            response_format={"type": "json_schema",
                             "json_schema": {"name": "numbers", "schema": schema}},
            temperature=1.0, seed=seed, max_tokens=300,
        )  # fmt: skip
        choice = reply.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        jsonschema.validate(json.loads(choice.message.content or ""), schema)
