"""Plots for the HTML reports, drawn by matplotlib as inline SVG (the report stays one file).

Text is kept as SVG text (escaped by matplotlib) and never read as mathtext, so a model called
``$x$`` or ``<b>`` is drawn as written.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

Point = tuple[str, float, float]  # label, x, y


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


def scatter(points: Sequence[Point], *, x: str, y: str, title: str) -> str:
    figure = _figure()
    axes = figure.subplots()
    for label, px, py in points:
        axes.scatter([px], [py], s=40)
        axes.annotate(label, (px, py), textcoords="offset points", xytext=(5, 5), fontsize=8)
    axes.set(xlabel=x, ylabel=y, title=title)
    axes.grid(alpha=0.3)
    return _svg(figure)


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
