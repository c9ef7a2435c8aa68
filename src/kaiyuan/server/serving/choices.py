"""What chat and completions assemble alike: the response head, usage, and a body that is
dropped (499) when the client leaves before it is ready."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request, Response
from pydantic import BaseModel

from kaiyuan.engines.base import Finish
from kaiyuan.protocol.openai.common import PromptTokensDetails, Usage
from kaiyuan.server.serving.streams import ClientGone, unless_disconnected

B = TypeVar("B", bound=BaseModel)


@dataclass(slots=True, frozen=True)
class Head:
    """The fields every body and chunk of one response repeats."""

    id: str
    created: int
    model: str

    @classmethod
    def new(cls, prefix: str, model: str) -> Head:
        return cls(f"{prefix}-{uuid.uuid4().hex}", int(time.time()), model)

    def stream_fields(self, object_: str, include_usage: bool) -> dict[str, Any]:
        """What every chunk of a stream repeats; ``usage`` is null on each when a usage chunk
        comes last (OpenAI's include_usage)."""
        fields: dict[str, Any] = {"id": self.id, "object": object_, "created": self.created,
                                  "model": self.model}  # fmt: skip
        return {**fields, "usage": None} if include_usage else fields


@dataclass(slots=True)
class Totals:
    """Usage over a request's choices: each prompt counts once, however many choices it has
    (``per_prompt``: the choices of each prompt, which come in order), with the most of its
    tokens any of its choices found cached."""

    per_prompt: int
    completion: int = 0
    _prompts: dict[int, int] = field(default_factory=dict)
    _cached: dict[int, int] = field(default_factory=dict)

    def add(self, index: int, finish: Finish) -> None:
        self.completion += finish.completion_tokens
        first = index - index % self.per_prompt
        self._prompts[first] = finish.prompt_tokens
        self._cached[first] = max(self._cached.get(first, 0), finish.cached_tokens)

    def usage(self, *, details: bool) -> Usage:
        prompt = sum(self._prompts.values())
        usage = Usage(
            prompt_tokens=prompt,
            completion_tokens=self.completion,
            total_tokens=prompt + self.completion,
        )
        if details:
            usage.prompt_tokens_details = PromptTokensDetails(
                cached_tokens=sum(self._cached.values())
            )
        return usage


async def body_or_499(request: Request, body: Awaitable[B]) -> B | Response:
    """The response body once ready; a 499 (and the work cancelled) if the client leaves."""
    try:
        return await unless_disconnected(request, body)
    except ClientGone:
        return Response(status_code=499)
