"""Plots for the HTML reports, drawn by matplotlib as inline SVG (the report stays one file).

Text is kept as SVG text (escaped by matplotlib) and never read as mathtext, so a model called
``$x$`` or ``<b>`` is drawn as written.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

Interval = tuple[float, float, float]  # a score (0–1) and its 95% interval, low and high
ScorePoint = tuple[str, float, float, float, float]  # label, x, and an Interval


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "kaiyuan"})
    matplotlib.rcParams["text.parse_math"] = False
    return Figure(figsize=(6.4, 3.8), layout="constrained")


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # no XML prolog or doctype inside HTML


def score_scatter(points: Sequence[ScorePoint], *, x: str, y: str, title: str) -> str:
    """Scores against a speed, each with its 95% interval as an error bar, on a 0–100% axis."""
    figure = _figure()
    axes = figure.subplots()
    for index, (label, px, score, low, high) in enumerate(points):
        _interval(axes, index, [px], [score], [low], [high], fmt="o", markersize=6)
        axes.annotate(  # beside the point: above it, a score of 100% meets the title
            label, (px, score), textcoords="offset points", xytext=(7, 0), va="center", fontsize=8
        )
    axes.set(xlabel=x, ylabel=y, title=title)
    axes.set_xlim(0, 1.15 * max((p[1] for p in points), default=0) or 1)  # speeds from zero too
    _score_axis(axes)
    return _svg(figure)


def score_bars(
    groups: Sequence[str],
    series: Mapping[str, Sequence[Interval | None]],
    *,
    y: str,
    title: str,
) -> str:
    """One bar per series in each group (a model's score on each suite), with its 95%
    interval as an error bar, on a 0–100% axis; a missing score leaves a gap."""
    figure = _figure()
    axes = figure.subplots()
    width = 0.8 / max(1, len(series))
    for index, (label, values) in enumerate(series.items()):
        kept = [(g, v) for g, v in enumerate(values) if v is not None]
        xs = [g - 0.4 + width * (index + 0.5) for g, _ in kept]
        scores = [v[0] for _, v in kept]
        axes.bar(xs, scores, width=width * 0.9, label=label)
        lows, highs = [v[1] for _, v in kept], [v[2] for _, v in kept]
        _interval(axes, index, xs, scores, lows, highs, fmt="none", ecolor="black")
    axes.set_xticks(range(len(groups)), list(groups), rotation=20, ha="right", fontsize=8)
    axes.set(ylabel=y, title=title)
    _score_axis(axes)
    if series:
        axes.legend(fontsize=8)
    return _svg(figure)


def _interval(
    axes: Any,
    index: int,
    xs: list[float],
    ys: list[float],
    lows: list[float],
    highs: list[float],
    **style: Any,
) -> None:
    """Points with error bars from ``lows`` to ``highs``, the bars' SVG group named
    ``score-interval-<index>``; a score at 0 or 100% is drawn whole, not cut by the frame."""
    if not xs:
        return
    spans = [[y - low for y, low in zip(ys, lows, strict=True)],
             [high - y for y, high in zip(ys, highs, strict=True)]]  # fmt: skip
    drawn = axes.errorbar(xs, ys, yerr=spans, capsize=4, **style)
    for artist in drawn.get_children():
        artist.set_clip_on(False)
    drawn.lines[2][0].set_gid(f"score-interval-{index}")


def _score_axis(axes: Any) -> None:
    """Scores are drawn on all of 0–100% whatever they are: a zoomed axis makes 25% and 26%
    look far apart."""
    from matplotlib.ticker import PercentFormatter

    axes.set_ylim(0, 1)
    axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    axes.grid(alpha=0.3)


def bars(values: Sequence[tuple[str, float]], *, y: str, title: str) -> str:
    figure = _figure()
    axes = figure.subplots()
    labels = [label for label, _ in values]
    axes.bar(range(len(values)), [value for _, value in values])
    axes.set_xticks(range(len(values)), labels, rotation=20, ha="right", fontsize=8)
    axes.set(ylabel=y, title=title)
    axes.grid(alpha=0.3, axis="y")
    return _svg(figure)


def lines(
    series: Mapping[str, Sequence[tuple[float, float]]], *, x: str, y: str, title: str
) -> str:
    figure = _figure()
    axes = figure.subplots()
    for label, points in series.items():
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    axes.set(xlabel=x, ylabel=y, title=title)
    axes.grid(alpha=0.3)
    if series:
        axes.legend(fontsize=8)
    return _svg(figure)


def shares(
    days: Sequence[str], series: Mapping[str, Sequence[float]], *, title: str, top: int = 8
) -> str:
    """Each day's total split into the share of each series (stacked to 100%), the ``top``
    largest series by name and the rest as "other"."""
    ranked = sorted(series, key=lambda name: -sum(series[name]))
    kept = {name: list(series[name]) for name in ranked[:top]}
    rest = [sum(series[name][i] for name in ranked[top:]) for i in range(len(days))]
    if any(rest):
        kept["other"] = rest
    totals = [sum(values[i] for values in kept.values()) or 1.0 for i in range(len(days))]
    figure = _figure()
    axes = figure.subplots()
    bottom = [0.0] * len(days)
    for name, values in kept.items():
        share = [100 * v / t for v, t in zip(values, totals, strict=True)]
        axes.bar(range(len(days)), share, bottom=bottom, label=name)
        bottom = [b + s for b, s in zip(bottom, share, strict=True)]
    axes.set_xticks(range(len(days)), list(days), rotation=30, ha="right", fontsize=8)
    axes.set(ylabel="share of tokens (%)", title=title, ylim=(0, 100))
    if kept:
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _svg(figure)
