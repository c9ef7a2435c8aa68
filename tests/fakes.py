"""A scripted engine for serving-layer tests (in the spirit of llm's MockModel.enqueue)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from kaiyuan.engines.base import (
    AdmittedStream,
    Delta,
    EventStream,
    Finish,
    GenerationEvent,
    ModelInfo,
    SamplingParams,
    TextEngine,
    check_fits,
)
from kaiyuan.errors import Overloaded

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass
class Reply:
    """What the engine does for one generation: emit ``pieces`` (one token each), then stop.

    ``hang_after``: go silent forever after that many pieces; ``die_after``: the engine dies.
    """

    pieces: list[str]
    delay: float = 0.0
    hang_after: int | None = None
    die_after: int | None = None


@dataclass
class Record:
    prompt: list[int]
    params: SamplingParams
    emitted: int = 0
    closed: bool = False


class ScriptedEngine(TextEngine):
    def __init__(
        self,
        model_id: str = "fake-model",
        *,
        replies: list[Reply] | None = None,
        context_length: int = 256,
        capacity: int = 4,
        chat_template: str | None = CHATML,
    ) -> None:
        self.info = ModelInfo(
            id=model_id,
            backend="fake",
            context_length=context_length,
            chat_template=chat_template,
            vocab_size=0x110000,
        )
        self.replies: deque[Reply] = deque(replies or [])
        self.capacity = capacity
        self.admitted = 0
        self.records: list[Record] = []
        self._dead = False

    def enqueue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    @property
    def in_flight(self) -> int:
        return self.admitted

    @property
    def alive(self) -> bool:
        return not self._dead

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return [ord(c) for c in text]  # one token per character: exact, easy to count

    def generate(self, prompt: list[int], params: SamplingParams, media: Any = None) -> EventStream:
        check_fits(self.info, len(prompt), params.max_tokens)
        if self.admitted >= self.capacity:
            raise Overloaded("fake engine full")
        self.admitted += 1
        record = Record(list(prompt), params)
        self.records.append(record)
        reply = self.replies.popleft() if self.replies else Reply(list("ok"))

        def release() -> None:
            record.closed = True
            self.admitted -= 1

        return AdmittedStream(self._events(record, reply), on_close=release)

    async def _events(self, record: Record, reply: Reply) -> AsyncIterator[GenerationEvent]:
        produced = 0
        for i, piece in enumerate(reply.pieces[: record.params.max_tokens]):
            if reply.hang_after is not None and i >= reply.hang_after:
                await asyncio.Event().wait()
            if reply.die_after is not None and i >= reply.die_after:
                self._dead = True
                raise RuntimeError("engine crashed: /secret/path/model.gguf at 0xdeadbeef")
            if reply.delay:
                await asyncio.sleep(reply.delay)
            produced += 1
            record.emitted = produced
            yield Delta(piece)
        reason = "length" if produced >= record.params.max_tokens else "stop"
        yield Finish(reason, len(record.prompt), produced)

    async def aclose(self) -> None:
        self._dead = True
