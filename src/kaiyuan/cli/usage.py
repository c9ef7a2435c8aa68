"""``kaiyuan usage``: requests, tokens and dollars served, per model, maker, origin country,
key, app, endpoint or day; ``--html`` writes a one-file report with the usage share over time
(tokens by model and by the model maker's country, like OpenRouter's rankings)."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any

import click

from kaiyuan.cli.keys import store
from kaiyuan.config import Settings
from kaiyuan.db.usage import UsageStore, summary
from kaiyuan.errors import FeatureNotInstalled, InvalidRequest

UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def since(text: str) -> datetime:
    """``7d``, ``24h``, ``30m`` ago, or a date."""
    if text[-1:] in UNITS and text[:-1].isdigit() and len(text) < 8:
        return datetime.now(UTC) - timedelta(**{UNITS[text[-1]]: int(text[:-1])})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"--since '{text}' is not like 7d, 24h, 30m or a date") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def show(settings: Settings, by: str, since_text: str, as_json: bool, html: Path | None) -> None:
    start = since(since_text)
    engine = store(settings).engine
    rows = summary(engine, by, start)
    if html is not None:
        out = report(settings, rows, by, start, since_text, html)
        click.echo(f"wrote {out}", err=True)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo(f"no requests since {since_text} ago")
        return
    click.echo(table(rows, by))


def table(rows: list[dict[str, Any]], by: str) -> str:
    total = sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows) or 1
    lines = [
        f"{by:<32} {'requests':>9} {'prompt':>10} {'cached':>10} {'completion':>11} "
        f"{'share':>6} {'cost $':>9}"
    ]
    for r in rows:
        tokens = r["prompt_tokens"] + r["completion_tokens"]
        name = str(r["group"] if r["group"] is not None else "-")[:32]
        lines.append(f"{name:<32} {r['requests']:>9} {r['prompt_tokens']:>10} "
                     f"{r['cached_tokens']:>10} {r['completion_tokens']:>11} "
                     f"{100 * tokens / total:>5.1f}% {r['cost_usd'] or 0:>9.4f}")  # fmt: skip
    return "\n".join(lines)


def report(
    settings: Settings,
    rows: list[dict[str, Any]],
    by: str,
    start: datetime,
    since_text: str,
    out: Path,
) -> Path:
    """One self-contained HTML file: the table, and the daily shares by model and origin."""
    try:
        from kaiyuan.evals import charts
        from kaiyuan.evals.report import html_page, html_table
    except ImportError:
        raise FeatureNotInstalled.of("eval", "the usage report's plots", "matplotlib") from None
    days, by_model, by_origin = _series(UsageStore(store(settings).engine).daily(start))
    cells = [
        [str(r["group"] if r["group"] is not None else "-"), r["requests"], r["prompt_tokens"],
         r["cached_tokens"], r["completion_tokens"], f"{r['cost_usd'] or 0:.4f}"]
        for r in rows
    ]  # fmt: skip
    header = [by, "requests", "prompt", "cached", "completion", "cost $"]
    parts = [
        f"<p>Since {escape(start.strftime('%Y-%m-%d %H:%M'))} UTC ({escape(since_text)}).</p>",
        html_table(header, cells),
    ]
    if days:
        parts.append(charts.shares(days, by_model, title="Tokens by model, per day"))
        parts.append(
            charts.shares(days, by_origin, title="Tokens by the model maker's country, per day")
        )
    out = out.with_suffix(".html") if out.suffix.lower() not in (".html", ".htm") else out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html_page("kaiyuan usage", parts), encoding="utf-8")
    return out


def _series(
    daily: list[dict[str, Any]],
) -> tuple[list[str], dict[str, list[float]], dict[str, list[float]]]:
    days = sorted({r["day"] for r in daily})
    index = {day: i for i, day in enumerate(days)}
    by_model: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(days))
    by_origin: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(days))
    for r in daily:
        tokens = r["prompt_tokens"] + r["completion_tokens"]
        by_model[r["model"] or "-"][index[r["day"]]] += tokens
        by_origin[r["origin"] or "unknown"][index[r["day"]]] += tokens
    return days, dict(by_model), dict(by_origin)
