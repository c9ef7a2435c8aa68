"""``kaiyuan config``: a model's generation defaults in config.toml, as Ollama's Modelfile
parameters are set per model. The file keeps its comments and layout (tomlkit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import tomlkit
from pydantic import ValidationError

from kaiyuan.config import GenerationDefaults, Settings, config_file
from kaiyuan.errors import InvalidRequest
from kaiyuan.store import generation
from kaiyuan.store.records import ModelRecord
from kaiyuan.store.store import Store

KEYS = generation.KEYS
# other servers' names for the same settings
ALIASES = {"repeat_penalty": "repetition_penalty", "num_predict": "max_tokens"}


def parse_pairs(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` words -> validated values (one readable error for the first bad one)."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = ALIASES.get(key.strip(), key.strip())
        if not sep or key not in KEYS:
            raise InvalidRequest(
                f"'{pair}' is not KEY=VALUE with KEY one of {', '.join(KEYS)}", param=key
            )
        try:
            parsed = GenerationDefaults(**{key: text.strip()})
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"]
            raise InvalidRequest(f"{key}={text.strip()}: {reason}", param=key) from None
        values[key] = getattr(parsed, key)
    return values


def _read(path: Path) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(path.read_text()) if path.exists() else tomlkit.document()
    except tomlkit.exceptions.ParseError as exc:
        raise InvalidRequest(f"{path} is not valid TOML: {exc}") from None


def _write(path: Path, document: tomlkit.TOMLDocument) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.write_text(tomlkit.dumps(document))
    part.replace(path)


def set_defaults(settings: Settings, model_id: str, pairs: tuple[str, ...]) -> None:
    Store(settings.home).get(model_id)  # an unknown id is the store's clear error
    values = parse_pairs(pairs)
    if not values:
        raise InvalidRequest(f"nothing to set: give KEY=VALUE pairs ({', '.join(KEYS)})")
    path = config_file()
    document = _read(path)
    table = document.setdefault("generation", tomlkit.table(is_super_table=True))
    entry = table.setdefault(model_id, tomlkit.table())
    for key, value in values.items():
        entry[key] = value
    _write(path, document)
    shown = " ".join(f"{k}={v}" for k, v in values.items())
    click.echo(f"{model_id}: {shown} (in {path}; a running server applies it when it restarts)")


def unset_defaults(settings: Settings, model_id: str, keys: tuple[str, ...]) -> None:
    path = config_file()
    document = _read(path)
    table = document.get("generation", {})
    entry = table.get(model_id)
    if entry is None:
        click.echo(f"{model_id} has no defaults of its own in {path}")
        return
    names = [ALIASES.get(k, k) for k in keys] or list(entry)
    for name in names:
        entry.pop(name, None)
    if not entry:
        table.pop(model_id)
    if not table:
        document.pop("generation", None)
    _write(path, document)
    click.echo(f"{model_id}: {', '.join(names)} back to the model's defaults")


def describe(settings: Settings, store: Store, record: ModelRecord) -> dict[str, tuple[Any, str]]:
    """key -> (value, source) of a stored model's generation defaults."""
    return generation.sources(generation.layers(record, settings, store.weights(record)))
