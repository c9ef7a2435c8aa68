"""Embedding models through sentence-transformers (torch, imported only when one loads).

One model instance serves requests one batch at a time on a worker thread (torch releases the
GIL while it computes; see ``SerialEmbeddingEngine``), so the event loop keeps serving chat.
"""

from __future__ import annotations

import os
from typing import Any

from kaiyuan.engines.base import EngineOptions
from kaiyuan.engines.embeddings import SerialEmbeddingEngine


class SentenceTransformerEngine(SerialEmbeddingEngine):
    def __init__(self, options: EngineOptions) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local folders only, never a hub
        import torch
        from sentence_transformers import SentenceTransformer

        if options.threads:
            torch.set_num_threads(options.threads)
        self._model: Any = SentenceTransformer(
            str(options.path), device="cpu", local_files_only=True,
            trust_remote_code=options.trust_remote_code,
        )  # fmt: skip
        self._model.eval()
        super().__init__(
            model_id=options.model_id, backend="sentence_transformers",
            max_tokens=int(self._model.max_seq_length or 512), created=options.created,
            owned_by=options.owned_by,
        )  # fmt: skip
        # get_embedding_dimension since sentence-transformers 6.x; the old name before it
        size = getattr(self._model, "get_embedding_dimension", None)
        size = size or self._model.get_sentence_embedding_dimension
        self.dimensions = int(size() or 0)

    @property
    def alive(self) -> bool:
        return self._model is not None

    def count_tokens(self, text: str) -> int:
        return len(self._model.tokenizer(text, add_special_tokens=True)["input_ids"])

    def _encode(self, texts: list[str]) -> list[list[float]]:
        array = self._model.encode(
            texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True
        )
        return [[float(x) for x in row] for row in array]

    async def aclose(self) -> None:
        self._model = None  # the weights go with the last reference
