"""GGUF embedding models (BERT-style encoders such as all-MiniLM or nomic-embed, and decoders
converted with a pooling type such as Qwen3-Embedding) through llama-cpp-python's ``embed``.

One llama.cpp context serves one batch at a time on a worker thread (llama.cpp releases the GIL
while it computes), with the model's own pooling; vectors are L2-normalised, as the
sentence-transformers engine returns them. Inputs longer than the model reads are a 400, never
silently truncated.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kaiyuan.engines.base import ModelInfo
from kaiyuan.engines.embeddings import EmbeddingEngine
from kaiyuan.engines.llamacpp.engine import DEFAULT_CONTEXT_CAP, init_backend
from kaiyuan.store.inspect import inspect_gguf


class LlamaCppEmbeddingEngine(EmbeddingEngine):
    def __init__(
        self,
        *,
        model_id: str,
        path: Path,
        context_length: int | None = None,
        threads: int | None = None,
        created: int = 0,
        owned_by: str = "kaiyuan",
        **_: Any,  # chat-engine options (queue, slots) do not apply
    ) -> None:
        from llama_cpp import Llama

        init_backend()
        trained = inspect_gguf(path).context_length or DEFAULT_CONTEXT_CAP
        self.max_tokens = min(context_length or trained, trained, DEFAULT_CONTEXT_CAP)
        self._llama: Any = Llama(
            model_path=str(path),
            embedding=True,
            n_ctx=self.max_tokens,
            n_batch=self.max_tokens,  # an encoder reads a whole input in one batch
            n_ubatch=self.max_tokens,
            n_threads=threads or os.cpu_count() or 1,
            verbose=False,
        )
        super().__init__()
        self.info = ModelInfo(
            id=model_id,
            backend="llamacpp_embedding",
            context_length=self.max_tokens,
            chat_template=None,
            capabilities=("embedding",),
            created=created,
            owned_by=owned_by,
        )

    @property
    def alive(self) -> bool:
        return self._llama is not None

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        tokens: list[int] = self._llama.tokenize(text.encode(), add_bos=add_special, special=True)
        return tokens

    def _encode(self, texts: list[str]) -> list[list[float]]:
        vectors = self._llama.embed(texts, normalize=True, truncate=False)
        return [[float(x) for x in row] for row in vectors]

    async def aclose(self) -> None:
        llama, self._llama = self._llama, None
        if llama is not None:
            llama.close()
