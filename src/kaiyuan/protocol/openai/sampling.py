"""The sampling fields chat and completions share (OpenAI's, and vLLM's extensions)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator, model_validator

from kaiyuan.protocol.openai.common import Request, invalid

MAX_STOP = 16
# Bounds on list sizes, checked while parsing (pydantic refuses a too-long list before it
MAX_LOGIT_BIAS = 1024


class StreamOptions(Request):
    include_usage: bool = False


Stop = str | Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=MAX_STOP)]


class SamplingFields(Request):
    model: str = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(None, ge=1)
    # None: the model's recommended value (`kaiyuan show MODEL`), else OpenAI's 1.0
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    # vLLM's and llama.cpp's sampling extensions (extra_body); -1 is vLLM's "off" for top_k
    top_k: int | None = Field(None, ge=-1, le=1_000_000)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(None, gt=0.0, le=2.0)
    n: int = Field(1, ge=1, le=128)
    stop: Stop | None = None
    seed: int | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = Field(
        None, max_length=MAX_LOGIT_BIAS
    )
    # llama.cpp server's extension: false reads the whole prompt, reusing no cached prefix
    # (temperature-0 output independent of earlier traffic); None: the server's prompt_cache
    cache_prompt: bool | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)

    @field_validator("stop")
    @classmethod
    def _stop_not_empty(cls, value: Stop | None) -> Stop | None:
        if value == "":
            raise ValueError("stop must not be an empty string")
        return value

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> SamplingFields:
        if self.stream_options is not None and not self.stream:
            raise invalid("stream_options", "stream_options is only allowed when stream is true")
        return self

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
