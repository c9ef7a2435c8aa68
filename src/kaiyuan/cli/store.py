"""``kaiyuan models | show | rm | import``: the model store from the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from kaiyuan.config import Settings
from kaiyuan.errors import InvalidRequest
from kaiyuan.store.inspection import is_projector
from kaiyuan.store.names import id_from
from kaiyuan.store.records import ModelRecord
from kaiyuan.store.store import Store


def human_bytes(n: int | None) -> str:
    if not n:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return "-"


def human_params(n: int | None) -> str:
    if not n:
        return "-"
    if n >= 1e9:
        return f"{n / 1e9:.1f}B"
    return f"{n / 1e6:.0f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def list_models(settings: Settings, as_json: bool) -> None:
    records = Store(settings.home).list()
    if as_json:
        click.echo(json.dumps([r.public() for r in records], indent=2))
        return
    table = Table(box=None, header_style="bold")
    for column in (
        "ID",
        "FORMAT",
        "PARAMS",
        "QUANT",
        "SIZE",
        "CAPABILITIES",
        "PUBLISHER",
        "ORIGIN",
        "LICENCE",
    ):
        table.add_column(column)
    for r in records:
        table.add_row(
            r.id,
            r.format,
            human_params(r.parameters),
            r.quantisation or "-",
            human_bytes(r.size_bytes),
            ",".join(r.capabilities),
            r.publisher or "-",
            r.origin or "-",
            r.licence or "-",
        )
    _print(table)


def show(settings: Settings, model_id: str, as_json: bool) -> None:
    from kaiyuan.cli.config import describe

    store = Store(settings.home)
    record = store.get(model_id)
    data = record.public()
    defaults = describe(settings, store, record)
    if as_json:
        data["generation"] = {k: {"value": v, "source": src} for k, (v, src) in defaults.items()}
        click.echo(json.dumps(data, indent=2))
        return
    width = max(len(k) for k in data)
    for key, value in data.items():
        shown = _shown(key, value)
        click.echo(f"{key:<{width}}  {shown}")
    if defaults:
        shown = ", ".join(f"{k}={v} ({src})" for k, (v, src) in defaults.items())
        click.echo(f"{'generation':<{width}}  {shown}")


def _shown(key: str, value: Any) -> str:
    if key == "size_bytes":
        return f"{human_bytes(value)} ({value} bytes)"
    if key == "parameters":
        return f"{human_params(value)} ({value})" if value else "-"
    if isinstance(value, list):
        return ", ".join(value) or "-"
    return "-" if value in (None, "") else str(value)


def remove(settings: Settings, model_id: str) -> None:
    record = Store(settings.home).remove(model_id)
    click.echo(f"removed {record.id} ({human_bytes(record.size_bytes)} freed)")


def import_model(
    settings: Settings,
    path: Path,
    name: str | None,
    *,
    allow_pickle: bool,
    trust_remote_code: bool,
    licence: str | None,
    publisher: str | None,
    projector: Path | None = None,
) -> ModelRecord:
    source = path.expanduser().resolve()
    if not source.exists():
        raise InvalidRequest(f"'{path}' does not exist", param="path")
    sources = [source]
    if projector is not None:
        extra = projector.expanduser().resolve()
        if not (source.suffix == ".gguf" and extra.suffix == ".gguf" and extra.is_file()):
            raise InvalidRequest(
                "--projector takes a .gguf file, for a .gguf model", param="projector"
            )
        if not is_projector(extra.name):
            raise InvalidRequest(
                f"'{projector}' is not named like a projector (mmproj-*.gguf)", param="projector"
            )
        sources.append(extra)
    model_id = (
        name if name is not None else id_from(source.stem if source.is_file() else source.name)
    )
    record = Store(settings.home).install(
        model_id,
        sources,
        move=False,
        source=f"import:{source}",
        licence=licence,
        publisher=publisher,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
    )
    click.echo(
        f"imported {record.id}: {record.format}, {record.architecture or '?'}, "
        f"{human_params(record.parameters)} parameters, {human_bytes(record.size_bytes)}"
    )
    return record


def _table(*columns: str) -> Table:
    table = Table(box=None, header_style="bold")
    for column in columns:
        table.add_column(column)
    return table


def _print(table: Table) -> None:
    # Piped output keeps whole lines (rich would otherwise squeeze to 80 columns).
    Console(width=None if sys.stdout.isatty() else 1000).print(table)


def list_catalog(as_json: bool) -> None:
    from dataclasses import asdict

    from kaiyuan.store import catalog

    entries = catalog.models()
    if as_json:
        click.echo(json.dumps([asdict(m) for m in entries], indent=2))
        return
    table = _table(
        "ID",
        "PARAMS",
        "CONTEXT",
        "PUBLISHER",
        "ORIGIN",
        "LICENCE",
        "HUGGING FACE",
        "MODELSCOPE",
        "CAPABILITIES",
    )
    for m in entries:
        params = f"{m.params_b:g}B" if m.params_b else "-"
        if m.active_params_b:
            params += f" (A{m.active_params_b:g}B)"
        table.add_row(
            m.id,
            params,
            str(m.context_length or "-"),
            m.publisher,
            m.origin,
            m.licence,
            m.hf or "-",
            m.ms or "-",
            ",".join(m.capabilities),
        )
    _print(table)


def pull(settings: Settings, ref: str, name: str | None, **options: Any) -> None:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from kaiyuan.store.pull import pull as run_pull

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    tasks: dict[str, Any] = {}
    # Started on the first byte, so an early error prints just its one line.
    progress = Progress(*columns, console=Console(stderr=True))

    def on_progress(path: str, done: int, total: int) -> None:
        if not tasks:
            progress.start()
        if path not in tasks:
            tasks[path] = progress.add_task(path, total=total)
        progress.update(tasks[path], completed=done)

    try:
        record = run_pull(ref, settings=settings, name=name, on_progress=on_progress, **options)
    except KeyboardInterrupt:
        _stop(progress, tasks)
        click.echo(
            "interrupted: the partial download is kept; run the same command to resume",
            err=True,
        )
        raise
    finally:
        _stop(progress, tasks)
    click.echo(
        f"pulled {record.id}: {record.format}, {record.quantisation or '-'}, "
        f"{human_bytes(record.size_bytes)}, licence {record.licence or 'unknown'}, "
        f"from {record.source}"
    )


def _stop(progress: Any, tasks: dict[str, Any]) -> None:
    if tasks:  # stopping a display that never started would print a stray newline
        progress.stop()
