"""Ollama's REST API (``/api/...``, docs/api.md of ollama/ollama): requests and responses.

Requests derive from :class:`kaiyuan.protocol.fields.Request` (unknown fields are logged, or
refused under ``strict_params``); every list and string is bounded. Responses are written
with ``exclude_none``, so a field left ``None`` is absent, as Ollama omits empty ones.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from kaiyuan.protocol.fields import Request

# What an Ollama client sees as the server's version (clients gate features on it: `think`
# needs 0.9, structured outputs 0.5).
VERSION = "0.12.0"
MAX_NAME = 256
MAX_MESSAGES = 10_000
MAX_TEXT = 8 * 2**20  # characters of one text (far past any context; the body limit binds)
MAX_IMAGE = 32 * 2**20  # base64 characters of one image (the body limit binds first)
MAX_IMAGES = 64  # per message (settings.max_images bounds a request's total)
MAX_TOOLS = 128
MAX_STOP = 16
MAX_INPUTS = 2048  # texts in one /api/embed request

Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
Text = Annotated[str, Field(max_length=MAX_TEXT)]
Image = Annotated[str, Field(max_length=MAX_IMAGE)]

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def keep_alive_seconds(value: Any) -> float | None:
    """Ollama's ``keep_alive``: seconds as a number, or a Go duration ("5m", "1h30m", "-1m");
    negative means forever (returned as -1)."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > 64:
            raise ValueError("keep_alive is too long")
        seconds = _duration(text)
    else:
        raise ValueError('keep_alive must be a duration such as "5m" or seconds')
    if not math.isfinite(seconds):
        raise ValueError("keep_alive must be finite")
    return -1.0 if seconds < 0 else seconds


def _duration(text: str) -> float:
    sign, body = (-1.0, text[1:]) if text.startswith("-") else (1.0, text.removeprefix("+"))
    try:
        return sign * float(body)  # a bare number: seconds ("0", "300")
    except ValueError:
        pass
    total, position = 0.0, 0
    for match in _DURATION.finditer(body):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if not body or position != len(body):
        raise ValueError(f'keep_alive \'{text}\' is not a duration such as "5m", "1h" or "-1"')
    return sign * total


KeepAlive = Annotated[float | None, BeforeValidator(keep_alive_seconds)]
# "" and "json", or a JSON schema the answer must follow
Format = Literal["", "json"] | dict[str, Any]


def _missing(param: str) -> PydanticCustomError:
    return PydanticCustomError("invalid_combination", f"{param} is required", {"param": param})


class Options(Request):
    """Ollama's model options. Sampling ones map to kaiyuan's; load-time ones are accepted
    and have no effect (kaiyuan sets a model's context, threads and batch when it loads)."""

    # runtime
    num_predict: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    typical_p: float | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    stop: (
        str
        | Annotated[list[Annotated[str, Field(max_length=MAX_NAME)]], Field(max_length=MAX_STOP)]
        | None
    ) = None
    # accepted, no effect
    num_ctx: int | None = None
    num_keep: int | None = None
    repeat_last_n: int | None = None
    tfs_z: float | None = None
    mirostat: int | None = None
    mirostat_tau: float | None = None
    mirostat_eta: float | None = None
    penalize_newline: bool | None = None
    numa: bool | None = None
    num_batch: int | None = None
    num_gpu: int | None = None
    main_gpu: int | None = None
    low_vram: bool | None = None
    f16_kv: bool | None = None
    logits_all: bool | None = None
    vocab_only: bool | None = None
    use_mmap: bool | None = None
    use_mlock: bool | None = None
    embedding_only: bool | None = None
    num_thread: int | None = None


class ToolCallFunction(Request):
    name: Name
    # an object; some clients send the JSON text of one
    arguments: dict[str, Any] | Annotated[str, Field(max_length=MAX_TEXT)] = Field(
        default_factory=dict
    )
    index: int | None = None


class ToolCall(Request):
    id: str | None = Field(None, max_length=MAX_NAME)
    type: Literal["function"] | None = None
    function: ToolCallFunction


class Message(Request):
    role: Literal["system", "user", "assistant", "tool"]
    content: Text | None = ""
    thinking: Text | None = None
    images: Annotated[list[Image], Field(max_length=MAX_IMAGES)] | None = None
    tool_calls: Annotated[list[ToolCall], Field(max_length=MAX_TOOLS)] | None = None
    tool_name: str | None = Field(None, max_length=MAX_NAME)
    tool_call_id: str | None = Field(None, max_length=MAX_NAME)


class ToolFunction(Request):
    name: Name
    description: str | None = Field(None, max_length=MAX_TEXT)
    parameters: dict[str, Any] | None = None


class Tool(Request):
    type: Literal["function"] = "function"
    function: ToolFunction


class _Generation(Request):
    model: Name
    format: Format | None = None
    options: Options | None = None
    stream: bool = True
    keep_alive: KeepAlive = None
    think: bool | Literal["low", "medium", "high"] | None = None


class ChatRequest(_Generation):
    messages: Annotated[list[Message], Field(max_length=MAX_MESSAGES)] | None = None
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None


class GenerateRequest(_Generation):
    prompt: Text | None = None
    suffix: Text | None = None
    system: Text | None = None
    template: Text | None = None
    context: Annotated[list[int], Field(max_length=2**20)] | None = None
    raw: bool = False
    images: Annotated[list[Image], Field(max_length=MAX_IMAGES)] | None = None


class EmbedRequest(Request):
    model: Name
    input: (
        Text
        | Annotated[list[Annotated[str, Field(max_length=MAX_TEXT)]], Field(max_length=MAX_INPUTS)]
    ) = ""
    # accepted; kaiyuan never cuts an input: one longer than the model reads is a 400
    truncate: bool = True
    dimensions: int | None = Field(None, ge=1)
    options: Options | None = None
    keep_alive: KeepAlive = None


class EmbeddingsRequest(Request):
    model: Name
    prompt: Text = ""
    options: Options | None = None
    keep_alive: KeepAlive = None


class _Named(Request):
    """A request naming one model as ``model`` (or ``name``, the older spelling)."""

    model: str | None = Field(None, max_length=MAX_NAME)
    name: str | None = Field(None, max_length=MAX_NAME)

    @model_validator(mode="after")
    def _one_name(self) -> _Named:
        if not self.model:
            self.model = self.name
        if not self.model:
            raise _missing("model")
        return self

    @property
    def target(self) -> str:
        return self.model or ""


class ShowRequest(_Named):
    verbose: bool = False


class DeleteRequest(_Named):
    pass


class PullRequest(_Named):
    insecure: bool = False
    stream: bool = True


class CopyRequest(Request):
    source: Name
    destination: Name


# --- responses ---------------------------------------------------------------------------------
class ResponseFunction(BaseModel):
    name: str
    arguments: dict[str, Any]


class ResponseToolCall(BaseModel):
    function: ResponseFunction


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str = ""
    thinking: str | None = None
    tool_calls: list[ResponseToolCall] | None = None


class _Stats(BaseModel):
    model: str
    created_at: str
    done: bool
    done_reason: Literal["stop", "length", "load", "unload"] | None = None
    total_duration: int | None = None  # nanoseconds, all of them
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class ChatResponse(_Stats):
    message: ResponseMessage


class GenerateResponse(_Stats):
    response: str = ""
    thinking: str | None = None


class Details(BaseModel):
    parent_model: str = ""
    format: str
    family: str
    families: list[str] | None = None
    parameter_size: str
    quantization_level: str


class ListedModel(BaseModel):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: Details


class ListResponse(BaseModel):
    models: list[ListedModel]


class RunningModel(BaseModel):
    name: str
    model: str
    size: int
    digest: str
    details: Details
    expires_at: str
    size_vram: int = 0
    context_length: int | None = None


class ProcessResponse(BaseModel):
    models: list[RunningModel]


class ShowResponse(BaseModel):
    license: str = ""
    modelfile: str = ""
    parameters: str = ""
    template: str = ""
    details: Details
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str


class EmbedResponse(BaseModel):
    model: str
    embeddings: list[list[float]]
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None


class EmbeddingsResponse(BaseModel):
    embedding: list[float]


class ProgressResponse(BaseModel):
    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


class StatusResponse(BaseModel):
    status: str = "success"


class VersionResponse(BaseModel):
    version: str = VERSION
