"""A model's generation defaults, as vLLM (``generation_config``) and Ollama (Modelfile
parameters) apply them: sampling parameters and a default answer length.

Layers, lowest first — each key comes from the highest layer that sets it:

1. kaiyuan's fallback: ``max_tokens`` from settings, so no answer runs to the end of the
   context by default;
2. the catalogue, for known families (GGUF files carry no sampling metadata);
3. the model's own ``generation_config.json`` (safetensors folders);
4. the user's ``[generation.MODEL]`` table in config.toml (``kaiyuan config set``).

A request's own values win over all of them (the server applies that last).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kaiyuan.config import GenerationDefaults, Settings
from kaiyuan.store import catalog
from kaiyuan.store.records import ModelRecord

log = logging.getLogger(__name__)

KEYS = tuple(GenerationDefaults.model_fields)
# generation_config.json (transformers) names -> ours
_HF_NAMES = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repetition_penalty": "repetition_penalty",
    "max_new_tokens": "max_tokens",
}
Layer = tuple[str, GenerationDefaults]


def checked(raw: dict[str, Any], source: str) -> GenerationDefaults:
    """The valid keys of ``raw`` (others are logged and dropped: a model file must not stop
    the model from loading)."""
    kept: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            GenerationDefaults(**{key: value})
        except ValidationError:
            log.warning("ignoring %s=%r from %s", key, value, source)
            continue
        kept[key] = value
    return GenerationDefaults(**kept)


def from_generation_config(folder: Path) -> GenerationDefaults | None:
    path = folder / "generation_config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    raw = {ours: data[theirs] for theirs, ours in _HF_NAMES.items() if theirs in data}
    if data.get("do_sample") is False:
        # transformers decodes greedily then, whatever temperature says
        raw = {k: v for k, v in raw.items() if k == "max_tokens"} | {"temperature": 0.0}
    return checked(raw, str(path))


def catalogue_defaults(record: ModelRecord) -> GenerationDefaults | None:
    entry = catalog.by_id(record.id)
    if entry is None and record.source:
        repo = record.source.split(":", 1)[-1].split("@", 1)[0]
        entry = catalog.by_repo(repo)
    if entry is None or not entry.generation:
        return None
    return checked(dict(entry.generation), f"the catalogue ({entry.id})")


def layers(record: ModelRecord, settings: Settings, weights: Path | None = None) -> list[Layer]:
    """The defaults that apply to ``record``, lowest precedence first, each with its source."""
    out: list[Layer] = []
    if settings.max_tokens:
        out.append(("kaiyuan", GenerationDefaults(max_tokens=settings.max_tokens)))
    if (found := catalogue_defaults(record)) is not None:
        out.append(("catalogue", found))
    own = from_generation_config(weights) if weights is not None and weights.is_dir() else None
    if own is not None:
        out.append(("generation_config.json", own))
    if (user := settings.generation.get(record.id)) is not None:
        out.append(("config", user))
    return out


def merge(stack: list[Layer]) -> GenerationDefaults:
    values: dict[str, Any] = {}
    for _, layer in stack:
        values |= layer.model_dump(exclude_none=True)
    return GenerationDefaults(**values)


def sources(stack: list[Layer]) -> dict[str, tuple[Any, str]]:
    """key -> (value, where it came from), for `kaiyuan show`."""
    out: dict[str, tuple[Any, str]] = {}
    for source, layer in stack:
        for key, value in layer.model_dump(exclude_none=True).items():
            out[key] = (value, source)
    return out
