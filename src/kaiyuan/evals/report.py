"""``report.json`` and a self-contained ``report.html`` (inline CSS and SVG, no scripts, no
network), for evals and for benchmarks. Every value that came from a model, a server or a
file is escaped before it enters the HTML.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable
from html import escape
from importlib.metadata import version
from pathlib import Path
from typing import Any

from kaiyuan.evals import charts
from kaiyuan.evals.metrics import Timing, proportion, summarise
from kaiyuan.evals.runner import Plan, read_results, results_path

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}
th{background:#f3f3f3}
.charts{display:flex;flex-wrap:wrap;gap:1em}
.charts svg{max-width:100%;height:auto}
code{background:#f3f3f3;padding:0 .2em}
"""


def header(kind: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "format": 1,
        "kaiyuan": version("kaiyuan"),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


# --- eval -----------------------------------------------------------------------------------
def eval_report(plan: Plan) -> dict[str, Any]:
    """The report of everything recorded under ``plan.out`` for the plan's models and suites
    (a resumed run reports all its items, not only this session's)."""
    results: list[dict[str, Any]] = []
    overall: dict[str, list[Timing]] = {}
    suites: dict[str, Any] = {}
    for suite in plan.suites:
        items = [item.id for item in plan.items(suite)]
        suites[suite.name] = suite.describe() | {"items": len(items)}
        for model in plan.models:
            records = read_results(results_path(plan.out, model, suite), suite)
            chosen = [records[i] for i in items if i in records]
            results.append(_pair(model, suite.name, suite.metric, len(items), chosen, plan))
            overall.setdefault(model, []).extend(
                Timing.from_dict(r["timing"]) for r in chosen if r.get("error") is None
            )
    return header("kaiyuan-eval") | {
        "endpoint": plan.endpoint,
        "models": plan.models,
        "settings": {
            "temperature": plan.temperature,
            "seed": plan.seed,
            "concurrency": plan.concurrency,
            "limit": plan.limit,
            "max_tokens": plan.max_tokens,
            "dollars_per_hour": plan.dollars_per_hour,
        },
        "suites": suites,
        "results": results,
        "overall": {m: summarise(t, plan.dollars_per_hour) for m, t in overall.items()},
    }


def _pair(
    model: str, suite: str, metric: str, items: int, records: list[dict[str, Any]], plan: Plan
) -> dict[str, Any]:
    answered = [r for r in records if r.get("error") is None]
    scores = [r["score"] for r in answered]
    judged = [s for s in scores if s["correct"] is not None]
    languages = [s["language_match"] for s in scores if s["language_match"] is not None]
    right = sum(bool(s["correct"]) for s in judged)
    return {
        "model": model,
        "suite": suite,
        "metric": metric,
        # items that errored or were not reached count against the score
        **_share("score", right, items if judged else 0),
        "items": items,
        "answered": len(answered),
        "errors": len(records) - len(answered),
        "missing": items - len(records),
        **_share("refusal_rate", sum(s["refused"] for s in scores), len(scores)),
        **_share("language_match", sum(languages), len(languages)),
        "estimated_tokens": any(r.get("estimated_tokens") for r in answered),
        "speed": summarise(
            [Timing.from_dict(r["timing"]) for r in answered], plan.dollars_per_hour
        ),
    }


SPREAD = ("n", "stderr", "ci95")
SCORE_NOTE = (
    "± is one standard error (the sample standard deviation of the items' 0/1 scores, with"
    " n − 1, over √n, as lm-eval reports it); the 95% CI is the Wilson score interval. A"
    " score's n is all the suite's items (one that errored or was not reached counts as"
    " wrong); a refusal rate's or language match's n is the items answered."
)


def _share(name: str, successes: int, n: int) -> dict[str, Any]:
    """``name`` (the share, None without items) and next to it ``name_n``, ``name_stderr``
    and ``name_ci95`` ([low, high], 95% Wilson), as lm-eval names ``acc`` and ``acc_stderr``."""
    spread = proportion(successes, n)
    return {name: spread["value"]} | {f"{name}_{key}": spread[key] for key in SPREAD}


def eval_html(report: dict[str, Any]) -> str:
    results = report["results"]
    models, suites = report["models"], list(report["suites"])
    by = {(r["model"], r["suite"]): r for r in results}
    score_rows = [[model, *(score_text(by[(model, s)]) for s in suites)] for model in models]
    detail_rows = [
        [
            r["model"], r["suite"], r["metric"], score_text(r), f"{r['answered']}/{r['items']}",
            str(r["errors"]), score_text(r, "refusal_rate"), score_text(r, "language_match"),
        ]
        for r in results
    ]  # fmt: skip
    speed_rows = [_speed_row(model, report["overall"].get(model)) for model in models]
    suite_rows = [
        [name, d["metric"], str(d["items"]), d["template_version"], d["template_hash"],
         d["source"], d["licence"]]
        for name, d in report["suites"].items()
    ]  # fmt: skip
    plots = [
        charts.score_bars(
            [f"{s} ({report['suites'][s]['metric']})" for s in suites],
            {model: [_interval(by[(model, s)]) for s in suites] for model in models},
            y="score (95% interval)",
            title="scores",
        )
    ]
    for suite in suites:
        points = [
            (r["model"], r["speed"]["output_tokens_per_second"], *interval)
            for r in results
            if r["suite"] == suite and (interval := _interval(r)) is not None
            and r["speed"]["output_tokens_per_second"] is not None
        ]  # fmt: skip
        if points:
            metric = report["suites"][suite]["metric"]
            plots.append(
                charts.score_scatter(
                    points, x="output tokens/s", y=metric, title=f"{suite}: {metric}"
                )
            )
    plots.append(_cost_or_speed_chart(report["overall"]))
    settings = report["settings"]
    return html_page(
        "kaiyuan eval",
        [
            f"<p>{escape(report['created'])} · endpoint <code>{escape(report['endpoint'])}</code>"
            f" · kaiyuan {escape(report['kaiyuan'])} · settings <code>"
            f"{escape(json.dumps(settings))}</code></p>",
            "<h2>Scores</h2>",
            f"<p>{escape(SCORE_NOTE)}</p>",
            html_table(["model", *suites], score_rows),
            "<h2>Speed and cost (all suites)</h2>",
            html_table(SPEED_HEADER, speed_rows),
            "<h2>Plots</h2>",
            f'<div class="charts">{"".join(plots)}</div>',
            "<h2>Per model and suite</h2>",
            html_table(DETAIL_HEADER, detail_rows),
            "<h2>Suites</h2>",
            html_table(
                ["suite", "metric", "items", "template", "template hash", "source", "licence"],
                suite_rows,
            ),
        ],
    )


# --- bench ----------------------------------------------------------------------------------
def bench_html(report: dict[str, Any]) -> str:
    levels = report["levels"]
    rows = [_speed_row(str(level["concurrency"]), level) for level in levels]
    failures = [[str(level["concurrency"]), str(level["failures"])] for level in levels]

    def series(key: str, pick: str = "") -> dict[str, list[tuple[float, float]]]:
        points = [
            (float(level["concurrency"]), level[key][pick] if pick else level[key])
            for level in levels
        ]
        return {report["model"]: [(x, y) for x, y in points if y is not None]}

    plots = [
        charts.lines(
            series("output_tokens_per_second"), x="concurrency", y="output tokens/s",
            title="throughput",
        ),
        charts.lines(
            {f"TTFT {p}": series("ttft", p)[report["model"]] for p in ("p50", "p90", "p99")},
            x="concurrency", y="seconds", title="time to first token",
        ),
        charts.lines(
            {f"TPOT {p}": series("tpot", p)[report["model"]] for p in ("p50", "p90", "p99")},
            x="concurrency", y="seconds", title="time per output token",
        ),
    ]  # fmt: skip
    return html_page(
        "kaiyuan bench",
        [
            f"<p>{escape(report['created'])} · <code>{escape(report['url'])}</code> · model "
            f"<code>{escape(report['model'])}</code> · {report['requests']} requests per level,"
            f" max_tokens {report['max_tokens']}</p>",
            html_table(["concurrency" if h == "model" else h for h in SPEED_HEADER], rows),
            "<h3>Failed requests</h3>",
            html_table(["concurrency", "failures"], failures),
            f'<div class="charts">{"".join(plots)}</div>',
        ],
    )


# --- shared ---------------------------------------------------------------------------------
DETAIL_HEADER = [
    "model", "suite", "metric", "score", "answered", "errors", "refusal rate", "language match",
]  # fmt: skip
SPEED_HEADER = [
    "model", "requests", "TTFT p50/p90/p99 ms", "TPOT p50/p90/p99 ms", "ITL p50/p90/p99 ms",
    "latency p50/p90/p99 s", "output tok/s", "prompt + output tokens", "$ per M tokens",
]  # fmt: skip


def _speed_row(label: str, speed: dict[str, Any] | None) -> list[str]:
    if not speed:
        return [label, "0", *["–"] * 7]
    return [
        label,
        str(speed["requests"]),
        _triple(speed["ttft"], 1000),
        _triple(speed["tpot"], 1000),
        _triple(speed["itl"], 1000),
        _triple(speed["latency"], 1),
        _num(speed["output_tokens_per_second"]),
        f"{speed['prompt_tokens']} + {speed['completion_tokens']}",
        _num(speed["cost_per_million_tokens"], 4),
    ]


def _cost_or_speed_chart(overall: dict[str, dict[str, Any]]) -> str:
    costs = [(m, s["cost_per_million_tokens"]) for m, s in overall.items()]
    if costs and all(c is not None for _, c in costs):
        return charts.bars(costs, y="$ per million tokens", title="cost")
    speeds = [(m, s["output_tokens_per_second"] or 0.0) for m, s in overall.items()]
    return charts.bars(speeds, y="output tokens/s", title="throughput")


def _triple(values: dict[str, float | None], scale: float) -> str:
    return " / ".join(_num(None if v is None else v * scale) for v in values.values())


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def score_text(row: dict[str, Any], name: str = "score") -> str:
    """A share with its uncertainty, "25.0% ± 16.4 (95% CI 7.1–59.1%, n=8)" (± one standard
    error, left out under two items), or "–" without items."""
    if row[name] is None:
        return "–"
    text, error = _pct(row[name]), row[f"{name}_stderr"]
    if error is not None:
        text += f" ± {100 * error:.1f}"
    low, high = row[f"{name}_ci95"]
    return f"{text} (95% CI {100 * low:.1f}–{100 * high:.1f}%, n={row[f'{name}_n']})"


def _interval(row: dict[str, Any]) -> charts.Interval | None:
    if row["score"] is None:
        return None
    low, high = row["score_ci95"]
    return row["score"], low, high


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def html_table(header: list[str], rows: Iterable[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_page(title: str, parts: list[str]) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}'
        f'</title><meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{CSS}</style></head><body><h1>{escape(title)}</h1>{''.join(parts)}"
        "</body></html>\n"
    )


def write(out: Path, report: dict[str, Any], html: str, stem: str = "report") -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out / f"{stem}.html").write_text(html, encoding="utf-8")
    return out / f"{stem}.html"
