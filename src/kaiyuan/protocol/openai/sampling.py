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
    typical_p: float | None = Field(None, gt=0.0, le=1.0)
    ignore_eos: bool = False  # run to max_tokens (or a stop string)
    min_tokens: int = Field(0, ge=0, le=1_000_000)  # no end token before this many
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
    # OpenAI fields accepted and not acted on (README: "Fields accepted and ignored")
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(None, max_length=16)
    store: bool | None = None
    service_tier: str | None = Field(None, max_length=32)
    prompt_cache_key: str | None = Field(None, max_length=1024)
    safety_identifier: str | None = Field(None, max_length=256)

    @field_validator("stop")
    @classmethod
    def _stop_not_empty(cls, value: Stop | None) -> Stop | None:
        if value == "":
            raise ValueError("stop must not be an empty string")
        return value

    # vLLM's field for a template of the client's own: refused, never ignored (T7, template
    # injection); kaiyuan renders each model's own template in a sandbox
    chat_template: str | None = None

    @model_validator(mode="after")
    def _no_client_template(self) -> SamplingFields:
        if self.chat_template is not None:
            raise invalid(
                "chat_template",
                "a request cannot supply a chat template; each model's own template is used",
            )
        return self

    @model_validator(mode="after")
    def _min_within_max(self) -> SamplingFields:
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise invalid("min_tokens", "min_tokens must not be more than max_tokens")
        return self

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> SamplingFields:
        if self.stream_options is not None and not self.stream:
            raise invalid("stream_options", "stream_options is only allowed when stream is true")
        return self

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
