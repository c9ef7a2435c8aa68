"""Backends by name, imported on first use so that importing the server never imports them."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from kaiyuan.engines.base import Engine, EngineOptions
from kaiyuan.extras import require

BACKENDS: dict[str, str] = {
    "llamacpp": "kaiyuan.engines.llamacpp:LlamaCppEngine",
    "llamacpp_embedding": "kaiyuan.engines.llamacpp.embedding:LlamaCppEmbeddingEngine",
    "sentence_transformers": "kaiyuan.engines.sentence:SentenceTransformerEngine",
    "transformers": "kaiyuan.engines.hf_transformers:TransformersEngine",
    "diffusers": "kaiyuan.engines.diffusion:DiffusionEngine",
}

# The pip extra each optional backend needs (the others come with a core install).
BACKEND_EXTRAS: dict[str, str] = {
    "sentence_transformers": "transformers",
    "transformers": "transformers",
    "diffusers": "diffusion",
}


def engine_class(backend: str) -> type[Engine]:
    """The backend's class; KeyError when kaiyuan has no such backend or it cannot be
    imported, FeatureNotInstalled (naming the extra) when its extra is not installed."""
    target = BACKENDS.get(backend)
    if target is None:
        raise KeyError(f"unknown engine backend '{backend}'")
    if backend in BACKEND_EXTRAS:
        require(BACKEND_EXTRAS[backend], f"the {backend} engine")
    module, _, name = target.partition(":")
    try:
        cls: type[Engine] = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise KeyError(f"engine backend '{backend}' is not installed") from exc
    return cls


def load_engine(backend: str, options: EngineOptions) -> Engine:
    """A loaded model: every backend is built from the one options object."""
    factory: Callable[[EngineOptions], Engine] = engine_class(backend)
    return factory(options)
