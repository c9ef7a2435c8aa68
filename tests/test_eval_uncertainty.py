"""Scores carry their uncertainty: the interval math, report.json's fields, report.html's text,
error bars and 0–100% score axes (issue 20, item 7)."""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from kaiyuan.evals import charts, report, suites
from kaiyuan.evals.metrics import proportion, stderr, wilson
from kaiyuan.evals.runner import Plan, results_path

SVG = "{http://www.w3.org/2000/svg}"


# --- the math -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        # statsmodels' proportion_confint(k, n, method="wilson") and scipy's
        # binomtest(k, n).proportion_ci(method="wilson") give these
        (2, 8, 0.071479, 0.590725),
        (0, 8, 0.0, 0.324408),
        (8, 8, 0.675592, 1.0),
        (1, 1, 0.206549, 1.0),
        (1, 7, 0.025680, 0.513128),
    ],
)
def test_wilson_interval_matches_published_values(
    successes: int, n: int, low: float, high: float
) -> None:
    got = wilson(successes, n)
    assert got == pytest.approx((low, high), abs=1e-4)
    assert 0.0 <= got[0] <= successes / n <= got[1] <= 1.0


def test_wilson_refuses_what_is_no_proportion() -> None:
    for successes, n in ((0, 0), (3, 2), (-1, 4)):
        with pytest.raises(ValueError, match="no proportion"):
            wilson(successes, n)


def test_stderr_is_the_sample_standard_deviation_over_root_n() -> None:
    # [1, 2, 3, 4]: mean 2.5, squared deviations sum 5, sample variance 5/3
    assert stderr([1.0, 2.0, 3.0, 4.0]) == pytest.approx(math.sqrt(5 / 3) / 2)
    assert stderr([0.5, 0.5, 0.5]) == 0.0
    assert stderr([0.7]) is None and stderr([]) is None


def test_a_proportion_has_lm_evals_stderr_and_a_wilson_interval() -> None:
    spread = proportion(2, 8)
    assert spread["value"] == 0.25 and spread["n"] == 8
    assert spread["stderr"] == pytest.approx(math.sqrt(0.25 * 0.75 / 7))  # n − 1, not n
    assert spread["stderr"] == pytest.approx(stderr([1, 1, 0, 0, 0, 0, 0, 0]))
    assert spread["ci95"] == pytest.approx([0.071479, 0.590725], abs=1e-6)
    assert proportion(1, 1) == {"value": 1.0, "n": 1, "stderr": None, "ci95": [
        pytest.approx(0.206549, abs=1e-6), 1.0]}  # fmt: skip
    assert proportion(0, 0) == {"value": None, "n": 0, "stderr": None, "ci95": None}


# --- report.json ----------------------------------------------------------------------------
def _eval_report(tmp_path: Path, outcomes: list[str | None], model: str = "m") -> dict[str, Any]:
    """A report for one model on a custom suite of ``len(outcomes)`` items, each answered
    with that reply (None: the request failed), scored by the real scorer."""
    suite_file = tmp_path / "s.jsonl"
    suite_file.write_text(
        "".join(
            json.dumps({"id": str(i), "prompt": "Capital of France?", "answers": ["Paris"],
                        "language": "en"}) + "\n"
            for i in range(len(outcomes))
        )
    )  # fmt: skip
    suite = suites.load(str(suite_file), tmp_path)
    path = results_path(tmp_path / "out", model, suite)
    path.parent.mkdir(parents=True)
    lines = []
    for item, reply in zip(suite.items(), outcomes, strict=True):
        record: dict[str, Any] = {
            "id": item.id, "model": model, "suite": suite.name,
            "template_hash": suite.template_hash, "error": None if reply else "503: overloaded",
            "timing": {"started": 1.0, "finished": 2.0, "chunk_times": [0.5, 0.6],
                       "prompt_tokens": 3, "completion_tokens": 2},
        }  # fmt: skip
        if reply is not None:
            record |= {"content": reply, "score": suite.score(item, reply).to_dict()}
        lines.append(json.dumps(record) + "\n")
    path.write_text("".join(lines))
    plan = Plan(models=[model], suites=[suite], out=tmp_path / "out", endpoint="http://x")
    return report.eval_report(plan)


# 2 right, 5 wrong (one refuses), 1 failed request: the failure counts against the score
EIGHT = ["Paris.", "It is Paris", "Lyon", "Rome", "Berlin", "Madrid",
         "I'm sorry, but I can't help with that.", None]  # fmt: skip


def test_report_json_carries_n_stderr_and_a_95_interval_next_to_each_share(
    tmp_path: Path,
) -> None:
    data = _eval_report(tmp_path, EIGHT)
    written = report.write(tmp_path / "out", data, report.eval_html(data))
    row = json.loads(written.with_suffix(".json").read_text())["results"][0]
    assert list(row)[3:7] == ["score", "score_n", "score_stderr", "score_ci95"]
    assert row["score"] == 0.25 and row["score_n"] == 8 == row["items"]
    assert row["score_stderr"] == pytest.approx(math.sqrt(0.25 * 0.75 / 7))
    assert row["score_ci95"] == pytest.approx([0.071479, 0.590725], abs=1e-6)
    # refusal rate and language match are shares of the 7 answered items
    assert row["answered"] == 7 and row["errors"] == 1
    assert row["refusal_rate"] == pytest.approx(1 / 7) and row["refusal_rate_n"] == 7
    assert row["refusal_rate_ci95"] == pytest.approx(list(wilson(1, 7)))
    assert row["refusal_rate_stderr"] == pytest.approx(math.sqrt(1 / 7 * 6 / 7 / 6))
    assert row["language_match_n"] == 7 and row["language_match"] == 1.0
    assert row["language_match_stderr"] == 0.0
    assert row["language_match_ci95"] == pytest.approx(list(wilson(7, 7)))
    for name in ("score", "refusal_rate", "language_match"):
        low, high = row[f"{name}_ci95"]
        assert 0 <= low <= row[name] <= high <= 1, name


def test_a_share_of_nothing_has_no_spread(tmp_path: Path) -> None:
    row = _eval_report(tmp_path, [None, None])["results"][0]
    assert row["score"] is None and row["score_n"] == 0
    assert row["score_stderr"] is None and row["score_ci95"] is None
    assert row["refusal_rate"] is None and row["refusal_rate_n"] == 0


# --- report.html ----------------------------------------------------------------------------
def test_html_shows_each_score_with_its_error_and_interval(tmp_path: Path) -> None:
    page = report.eval_html(_eval_report(tmp_path, EIGHT))
    assert "25.0% ± 16.4 (95% CI 7.1–59.1%, n=8)" in page
    assert "14.3% ± 14.3 (95% CI 2.6–51.3%, n=7)" in page  # the refusal rate
    assert "one standard error" in page and "Wilson" in page
    one = {"score": 1.0, "score_n": 1, "score_stderr": None, "score_ci95": [0.2066, 1.0]}
    assert report.score_text(one) == "100.0% (95% CI 20.7–100.0%, n=1)"
    assert report.score_text({"score": None}) == "–"


def test_score_axes_run_from_0_to_100_percent_with_error_bars(tmp_path: Path) -> None:
    page = report.eval_html(_eval_report(tmp_path, EIGHT))
    drawn = _svgs(page)
    scored = [svg for svg in drawn if _texts(svg) & {"scores", "custom:s: accuracy"}]
    assert len(scored) == 2 < len(drawn)  # the cost chart is no score
    for svg in scored:
        bottom, top = _frame(svg)
        ticks = _yticks(svg)
        # a lone 25% used to get an axis from 24% to 26%: now 0 and 100% sit on the frame
        assert list(ticks) == ["0%", "20%", "40%", "60%", "80%", "100%"]
        assert ticks["0%"] == pytest.approx(bottom) and ticks["100%"] == pytest.approx(top)
        # one error bar, from 7.1% to 59.1% of the axis
        bar = _error_bars(svg)
        assert len(bar) == 1
        ys = sorted(bar[0])
        assert [(bottom - y) / (bottom - top) for y in (ys[-1], ys[0])] == pytest.approx(
            [0.071479, 0.590725], abs=1e-4
        )


def test_scores_at_0_and_100_percent_and_a_missing_one_are_drawn() -> None:
    svg = _svgs(charts.score_bars(
        ["a", "b"], {"m1": [(0.0, 0.0, 0.32), (1.0, 0.68, 1.0)], "m2": [None, (0.5, 0.2, 0.8)]},
        y="score", title="scores",
    ))[0]  # fmt: skip
    bottom, top = _frame(svg)
    assert list(_yticks(svg)) == ["0%", "20%", "40%", "60%", "80%", "100%"]
    bars = _error_bars(svg)
    assert len(bars) == 3  # m1 on both suites, m2 on one
    ends = sorted(round((bottom - y) / (bottom - top), 3) for bar in bars for y in bar)
    assert ends == [0.0, 0.2, 0.32, 0.68, 0.8, 1.0]


def _svgs(page: str) -> list[ET.Element]:
    return [ET.fromstring(s) for s in re.findall(r"<svg\b.*?</svg>", page, re.DOTALL)]


def _texts(svg: ET.Element) -> set[str]:
    return {t.text or "" for t in svg.iter(f"{SVG}text")}


def _group(svg: ET.Element, gid: str) -> ET.Element:
    found = svg.find(f".//{SVG}g[@id='{gid}']")
    assert found is not None, gid
    return found


def _frame(svg: ET.Element) -> tuple[float, float]:
    """The axes' frame, bottom and top, in SVG pixels."""
    path = _group(svg, "patch_2").find(f"{SVG}path")
    assert path is not None
    ys = [float(y) for y in re.findall(r"[ML] [\d.]+ ([\d.]+)", path.get("d", ""))]
    return max(ys), min(ys)


def _yticks(svg: ET.Element) -> dict[str, float]:
    """Each y tick's label and the pixel height of its mark."""
    ticks = {}
    axis = _group(svg, "matplotlib.axis_2")
    for tick in axis.findall(f"{SVG}g"):
        if not tick.get("id", "").startswith("ytick_"):
            continue
        mark = tick.find(f".//{SVG}use")
        label = tick.find(f".//{SVG}text")
        assert mark is not None and label is not None
        ticks[label.text or ""] = float(mark.get("y", "nan"))
    return ticks


def _error_bars(svg: ET.Element) -> list[list[float]]:
    """The y pixels of each vertical error bar."""
    bars = []
    for group in svg.iter(f"{SVG}g"):
        if group.get("id", "").startswith("score-interval-"):
            for path in group.iter(f"{SVG}path"):
                for segment in re.findall(r"M [\d.]+ [\d.]+\s+L [\d.]+ [\d.]+", path.get("d", "")):
                    numbers = [float(v) for v in re.findall(r"[\d.]+", segment)]
                    assert numbers[0] == numbers[2]  # vertical
                    bars.append([numbers[1], numbers[3]])
    return bars
