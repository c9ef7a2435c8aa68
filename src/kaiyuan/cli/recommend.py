"""``kaiyuan recommend``: one model per task for this machine, with its expected speed and the
command that pulls it; ``--all`` lists every catalogue model that fits. Fits 80 columns."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from collections.abc import Sequence
from typing import Any

import click

from kaiyuan.cli.store import human_bytes
from kaiyuan.config import Settings
from kaiyuan.machine import Machine
from kaiyuan.store import recommend as rec
from kaiyuan.store.recommend import Option

WIDTH = 80


def run(settings: Settings, *, show_all: bool, as_json: bool) -> None:
    from kaiyuan import machine as hw

    here = hw.this_machine()
    memory = hw.model_memory(here)
    bandwidth = hw.memory_bandwidth(settings.home / "cache")
    gpu = bool(here.gpus)
    picks = {task: rec.pick(task, memory, bandwidth, gpu=gpu) for task in rec.TASKS}
    everything = rec.fitting(memory, bandwidth)
    if as_json:
        click.echo(json.dumps(_json(here, bandwidth, picks, everything), indent=2))
        return
    click.echo(_machine_line(here, bandwidth))
    if gpu:
        click.echo("(speeds are estimated for the CPU; a GPU that holds the model is faster)")
    if show_all:
        _print_all(everything)
    else:
        _print_picks(picks)


def _machine_line(here: Machine, bandwidth: float) -> str:
    counts = Counter(f"{g.name} ({human_bytes(g.memory_bytes)})" for g in here.gpus)
    gpus = ", ".join(f"{n} x {name}" if n > 1 else name for name, n in counts.items())
    text = (
        f"this machine: {here.cpus} CPUs, {human_bytes(here.total_memory)} RAM, "
        f"{'GPU ' + gpus if gpus else 'no GPU'}, memory bandwidth "
        f"{bandwidth / 1e9:.0f} GB/s"
    )
    return textwrap.fill(text, WIDTH, subsequent_indent="  ")


def _size(option: Option) -> str:
    return ("~" if option.size_estimated else "") + f"{option.size_gb:.1f} GB"


def _speed(option: Option) -> str:
    if option.tok_s is None:
        return "-"
    return f"{option.tok_s:.0f} tok/s" if option.tok_s >= 10 else f"{option.tok_s:.1f} tok/s"


def _print_picks(picks: dict[str, Option | None]) -> None:
    rows: list[Sequence[str]] = []
    notes: list[str | None] = []
    for task, option in picks.items():
        if option is None:
            rows.append((task, _none_fits(task), "", "", ""))
            notes.append(None)
            continue
        slow = option.tok_s is not None and option.tok_s < rec.USABLE_TOK_S
        rows.append(
            (task, option.model.id, option.quant or "-", _size(option),
             _speed(option) + (" (slow)" if slow else ""))
        )  # fmt: skip
        notes.append(option.pull)
    click.echo(
        "\nbest pick per task (SPEED: the decode rate estimated for this machine; a pick\n"
        f"aims at {rec.USABLE_TOK_S:g} tok/s or more):\n"
    )
    header = ("TASK", "MODEL", "QUANT", "SIZE", "SPEED")
    widths = _widths([header, *[r for r in rows if r[2]]])
    click.echo(_line(header, widths, (3,)))
    for row, note in zip(rows, notes, strict=True):
        if not row[2]:
            click.echo(f"{row[0]:<{widths[0]}}  {row[1]}")
            continue
        click.echo(_line(row, widths, (3,)))
        click.echo(f"{'':<{widths[0]}}  {note}")
    click.echo(
        "\n`kaiyuan recommend --all` lists every model that fits; names such as qwen3:8b\n"
        "also work with `kaiyuan pull`."
    )


def _none_fits(task: str) -> str:
    model = rec.smallest(task)
    if model is None:
        return "none in the catalogue"
    return f"none fits: {model.id} needs {rec.need_gb(model) or 0:.1f} GB"


def _print_all(everything: list[list[Option]]) -> None:
    header = ("MODEL", "QUANT", "SIZE", "SPEED", "USE")
    rows = [
        (o.model.id, o.quant or "-", _size(o), _speed(o),
         ",".join(c for c in o.model.capabilities if c != "tools"))
        for o in (opts[0] for opts in everything)
    ]  # fmt: skip
    click.echo(
        f"\n{len(rows)} catalogue models fit; the quantisation is chosen for this machine:\n"
    )
    widths = _widths([header, *rows])
    for row in (header, *rows):
        click.echo(_line(row, widths, (2,)))
    click.echo(
        "\npull one with `kaiyuan pull MODEL` (add :QUANT for another quantisation);\n"
        "`kaiyuan models --catalog` shows publishers, licences and hub repos."
    )


def _widths(rows: Sequence[Sequence[str]]) -> list[int]:
    return [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]


def _line(row: Sequence[str], widths: list[int], right: tuple[int, ...] = ()) -> str:
    cells = [
        f"{cell:>{widths[i]}}" if i in right else f"{cell:<{widths[i]}}"
        for i, cell in enumerate(row)
    ]
    return "  ".join(cells).rstrip()


def _row(option: Option) -> dict[str, Any]:
    m = option.model
    return {
        "id": m.id,
        "quantisation": option.quant,
        "download_gb": option.size_gb,
        "size_estimated": option.size_estimated,
        "tok_s": round(option.tok_s, 1) if option.tok_s is not None else None,
        "publisher": m.publisher,
        "origin": m.origin,
        "licence": m.licence,
        "capabilities": list(m.capabilities),
        "pull": option.pull,
    }


def _json(
    here: Machine,
    bandwidth: float,
    picks: dict[str, Option | None],
    everything: list[list[Option]],
) -> dict[str, Any]:
    return {
        "machine": {
            "cpus": here.cpus,
            "memory_bytes": here.total_memory,
            "available_memory_bytes": here.available_memory,
            "gpus": [g.name for g in here.gpus],
            "bandwidth_bytes_per_s": round(bandwidth),
        },
        "usable_tok_s": rec.USABLE_TOK_S,
        "picks": {task: _row(o) if o else None for task, o in picks.items()},
        "models": [_row(opts[0]) for opts in everything],
    }
