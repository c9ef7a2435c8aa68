"""Embedding models through sentence-transformers (torch, imported only when one loads).

One model instance serves requests one batch at a time on a worker thread (torch releases the
GIL while it computes; see ``EmbeddingEngine``), so the event loop keeps serving chat.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kaiyuan.engines.embeddings import EmbeddingEngine


class SentenceTransformerEngine(EmbeddingEngine):
    def __init__(
        self,
        *,
        model_id: str,
        path: Path,
        threads: int | None = None,
        created: int = 0,
        owned_by: str = "kaiyuan",
        trust_remote_code: bool = False,
        **_: Any,  # chat-engine options (context, queue, slots) do not apply
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local folders only, never a hub
        import torch
        from sentence_transformers import SentenceTransformer

        if threads:
            torch.set_num_threads(threads)
        self._model: Any = SentenceTransformer(
            str(path), device="cpu", local_files_only=True, trust_remote_code=trust_remote_code
        )
        self._model.eval()
        super().__init__(
            model_id=model_id, backend="sentence_transformers",
            max_tokens=int(self._model.max_seq_length or 512), created=created, owned_by=owned_by,
        )  # fmt: skip
        self.dimensions = int(self._model.get_sentence_embedding_dimension() or 0)

    @property
    def alive(self) -> bool:
        return True

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        ids: list[int] = self._model.tokenizer(text, add_special_tokens=add_special)["input_ids"]
        return ids

    def _encode(self, texts: list[str]) -> list[list[float]]:
        array = self._model.encode(
            texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True
        )
        return [[float(x) for x in row] for row in array]

    async def aclose(self) -> None:
        self._model = None  # the weights go with the last reference
