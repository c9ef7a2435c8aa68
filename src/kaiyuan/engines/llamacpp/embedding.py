"""GGUF embedding models (BERT-style encoders such as all-MiniLM or nomic-embed, and decoders
converted with a pooling type such as Qwen3-Embedding) through llama-cpp-python's ``embed``.

One llama.cpp context serves one batch at a time on a worker thread (llama.cpp releases the GIL
while it computes), with the model's own pooling; vectors are L2-normalised, as the
sentence-transformers engine returns them. Inputs longer than the model reads are a 400, never
silently truncated.
"""

from __future__ import annotations

import os
from typing import Any

from kaiyuan.engines.base import EngineOptions
from kaiyuan.engines.embeddings import SerialEmbeddingEngine
from kaiyuan.engines.llamacpp.engine import DEFAULT_CONTEXT_CAP, init_backend
from kaiyuan.store.inspection import inspect_gguf


class LlamaCppEmbeddingEngine(SerialEmbeddingEngine):
    def __init__(self, options: EngineOptions) -> None:
        from llama_cpp import Llama

        init_backend()
        trained = inspect_gguf(options.path).context_length or DEFAULT_CONTEXT_CAP
        limit = min(options.context_length or trained, trained, DEFAULT_CONTEXT_CAP)
        super().__init__(model_id=options.model_id, backend="llamacpp_embedding",
                         max_tokens=limit, created=options.created,
                         owned_by=options.owned_by)  # fmt: skip
        self._llama: Any = Llama(
            model_path=str(options.path),
            embedding=True,
            n_ctx=limit,
            n_batch=limit,  # an encoder reads a whole input in one batch
            n_ubatch=limit,
            n_threads=options.threads or os.cpu_count() or 1,
            verbose=False,
        )

    @property
    def alive(self) -> bool:
        return self._llama is not None

    def count_tokens(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode(), add_bos=True, special=True))

    def _encode(self, texts: list[str]) -> list[list[float]]:
        vectors = self._llama.embed(texts, normalize=True, truncate=False)
        return [[float(x) for x in row] for row in vectors]

    async def aclose(self) -> None:
        llama, self._llama = self._llama, None
        if llama is not None:
            llama.close()
