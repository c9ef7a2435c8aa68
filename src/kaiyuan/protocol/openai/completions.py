"""POST /v1/completions: the legacy text completion API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from kaiyuan.protocol.openai.common import Usage, invalid
from kaiyuan.protocol.openai.sampling import SamplingFields

# validates its items), so a huge list is a fast 400 (T22).
MAX_PROMPTS = 128  # prompts in one /v1/completions request (max_n is at most 128)
MAX_PROMPT_TOKENS = 2**20  # token ids in one prompt


class CompletionRequest(SamplingFields):
    prompt: (
        str
        | Annotated[list[str], Field(min_length=1, max_length=MAX_PROMPTS)]
        | Annotated[list[int], Field(min_length=1, max_length=MAX_PROMPT_TOKENS)]
        | Annotated[
            list[Annotated[list[int], Field(min_length=1, max_length=MAX_PROMPT_TOKENS)]],
            Field(min_length=1, max_length=MAX_PROMPTS),
        ]
    )
    max_tokens: int | None = Field(16, ge=1)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)
    best_of: int | None = Field(None, ge=1)
    suffix: str | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        # Before the union: each of its list members would report every bad item of a huge
        # list (a million errors for a million strings), which took 17 s on the event loop.
        if not isinstance(value, list) or not value:
            return value
        tokens = isinstance(value[0], int)
        limit = MAX_PROMPT_TOKENS if tokens else MAX_PROMPTS
        if len(value) > limit:
            what = "token ids" if tokens else "prompts"
            raise invalid("prompt", f"prompt has {len(value)} {what}; the limit is {limit}")
        if tokens and not all(type(t) is int for t in value):
            raise invalid("prompt", "prompt must be a string, a list of strings or token ids")
        return value

    @model_validator(mode="after")
    def _unsupported(self) -> CompletionRequest:
        if self.suffix:
            raise invalid("suffix", "suffix (fill-in-the-middle) is not supported")
        if self.best_of is not None and self.best_of != self.n:
            raise invalid("best_of", "best_of must equal n (server-side reranking is unsupported)")
        return self


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None
    logprobs: CompletionLogprobs | None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    system_fingerprint: str | None = None


# --- stream chunks: written with exclude_unset ------------------------------------------------
class CompletionChunkChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: Literal["stop", "length"] | None


class CompletionChunk(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChunkChoice]
    usage: Usage | None = None  # set (to null) on every chunk when include_usage
