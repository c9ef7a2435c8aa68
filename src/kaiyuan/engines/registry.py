"""Backends by name, imported on first use so that importing the server never imports them."""

from __future__ import annotations

import importlib
from typing import Any

from kaiyuan.engines.base import Engine

BACKENDS: dict[str, str] = {
    "llamacpp": "kaiyuan.engines.llamacpp:LlamaCppEngine",
    "llamacpp_embedding": "kaiyuan.engines.llamacpp.embedding:LlamaCppEmbeddingEngine",
    "sentence_transformers": "kaiyuan.engines.sentence:SentenceTransformerEngine",
    "transformers": "kaiyuan.engines.hf_transformers:TransformersEngine",
    "diffusers": "kaiyuan.engines.diffusion:DiffusionEngine",
}


def engine_class(backend: str) -> type[Engine]:
    """The backend's class; KeyError when kaiyuan has no such backend or its optional
    dependencies (e.g. torch for sentence-transformers) are not installed."""
    target = BACKENDS.get(backend)
    if target is None:
        raise KeyError(f"unknown engine backend '{backend}'")
    module, _, name = target.partition(":")
    try:
        cls: type[Engine] = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise KeyError(f"engine backend '{backend}' is not installed") from exc
    return cls


def load_engine(backend: str, **kwargs: Any) -> Engine:
    return engine_class(backend)(**kwargs)
