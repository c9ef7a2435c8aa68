"""What every local embedding backend shares: inputs checked against the model's limit (a 400,
never silent truncation) and one batch at a time on a worker thread (the event loop keeps
serving). Backends supply ``count_tokens`` and ``_encode``."""

from __future__ import annotations

import abc
import asyncio
import threading

from kaiyuan.engines.base import EmbeddingEngine, Embeddings, ModelInfo
from kaiyuan.errors import ContextLengthExceeded


class SerialEmbeddingEngine(EmbeddingEngine):
    def __init__(
        self, *, model_id: str, backend: str, max_tokens: int, created: int, owned_by: str
    ) -> None:
        self.max_tokens = max_tokens
        self.info = ModelInfo(
            id=model_id, backend=backend, context_length=max_tokens, chat_template=None,
            capabilities=("embedding",), created=created, owned_by=owned_by,
        )  # fmt: skip
        self._lock = threading.Lock()
        self._busy = 0

    @property
    def in_flight(self) -> int:
        return self._busy

    async def embed(self, texts: list[str]) -> Embeddings:
        counts = [self.count_tokens(t) for t in texts]
        for i, count in enumerate(counts):
            if count > self.max_tokens:
                raise ContextLengthExceeded(
                    f"input[{i}] has {count} tokens; model '{self.info.id}' reads at most "
                    f"{self.max_tokens}",
                    param="input",
                )
        self._busy += 1
        try:
            vectors = await asyncio.to_thread(self._locked_encode, texts)
        finally:
            self._busy -= 1
        return Embeddings(vectors=vectors, prompt_tokens=sum(counts))

    def _locked_encode(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            return self._encode(texts)

    @abc.abstractmethod
    def count_tokens(self, text: str) -> int:
        """How many tokens the model reads for ``text`` (special tokens included)."""

    @abc.abstractmethod
    def _encode(self, texts: list[str]) -> list[list[float]]:
        """L2-normalised vectors, one per text (called on a worker thread, one at a time)."""
