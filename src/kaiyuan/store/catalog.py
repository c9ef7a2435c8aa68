"""The catalogue of well-known open model families, shipped as ``catalog.toml``.

It supplies provenance (publisher, origin, licence) for models pulled from known repos, hub
ids for both hubs, and the recommended quantisation per memory size for ``kaiyuan recommend``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

GIB = 2**30


@dataclass(slots=True, frozen=True)
class CatalogModel:
    id: str
    family: str
    title: str
    publisher: str
    origin: str
    licence: str
    capabilities: tuple[str, ...]
    format: str
    params_b: float | None = None
    active_params_b: float | None = None
    context_length: int | None = None
    hf: str | None = None
    ms: str | None = None
    hf_weights: str | None = None
    size_gb: float | None = None
    gguf_sizes: dict[str, float] = field(default_factory=dict)
    recommended: dict[int, str] = field(default_factory=dict)
    # recommended sampling and answer length (the model card's): the family's, then the model's
    generation: dict[str, float | int] = field(default_factory=dict)

    def repos(self) -> set[str]:
        return {r.lower() for r in (self.hf, self.ms, self.hf_weights) if r}

    def quant_for(self, memory_bytes: int) -> str | None:
        """The recommended quantisation for this much memory, or None when it does not fit.

        The catalogue's table decides from its smallest threshold up; below it (or without a
        table) the catalogue's own rule applies: the largest file within 60% of memory, and
        never Q2_K. More memory therefore never gives a smaller quantisation."""
        gib = memory_bytes / GIB
        fitting = [q for threshold, q in sorted(self.recommended.items()) if threshold <= gib]
        if fitting:
            return fitting[-1]
        sized = sorted(self.gguf_sizes.items(), key=lambda item: item[1])
        best = [q for q, gb in sized if q != "Q2_K" and gb * 1e9 <= 0.6 * memory_bytes]
        return best[-1] if best else None

    def download_gb(self, quant: str | None) -> float | None:
        if quant and quant in self.gguf_sizes:
            return self.gguf_sizes[quant]
        return self.size_gb


@lru_cache(maxsize=1)
def models() -> tuple[CatalogModel, ...]:
    text = resources.files("kaiyuan.store").joinpath("catalog.toml").read_text()
    data = tomllib.loads(text)
    out = []
    for family in data.get("family", []):
        for model in family.get("model", []):
            out.append(_model(family, model))
    return tuple(out)


def _model(family: dict[str, Any], model: dict[str, Any]) -> CatalogModel:
    return CatalogModel(
        id=model["id"],
        family=family["name"],
        title=family.get("title", family["name"]),
        publisher=model.get("publisher", family.get("publisher", "")),
        origin=model.get("origin", family.get("origin", "")),
        licence=model.get("licence", family.get("licence", "")),
        capabilities=tuple(model.get("capabilities", family.get("capabilities", []))),
        format=model.get("format", "gguf"),
        params_b=model.get("params_b"),
        active_params_b=model.get("active_params_b"),
        context_length=model.get("context_length"),
        hf=model.get("hf"),
        ms=model.get("ms"),
        hf_weights=model.get("hf_weights"),
        size_gb=model.get("size_gb"),
        gguf_sizes=dict(model.get("gguf_sizes", {})),
        recommended={int(k): v for k, v in model.get("recommended", {}).items()},
        generation={**family.get("generation", {}), **model.get("generation", {})},
    )


def by_repo(repo: str) -> CatalogModel | None:
    wanted = repo.lower()
    return next((m for m in models() if wanted in m.repos()), None)


def by_id(model_id: str) -> CatalogModel | None:
    return next((m for m in models() if m.id == model_id), None)


def publisher_of(org: str) -> tuple[str, str] | None:
    """(publisher, origin) for a hub organisation that publishes original catalogue weights.

    Only the organisations of the original weights count: a third-party quantiser (who
    re-uploads GGUF files) is not the model's publisher."""
    wanted = org.lower()
    for m in models():
        if m.hf_weights and m.hf_weights.split("/")[0].lower() == wanted:
            return m.publisher, m.origin
    return None
