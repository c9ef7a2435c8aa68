"""OpenAI wire models: what clients send and what they get back.

Requests forbid unknown fields (as OpenAI does: "Unrecognized request argument"), so a client
can never smuggle in e.g. a chat template, and NaN/inf are rejected in every float.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

MAX_STOP = 16
# Bounds on list sizes, checked while parsing (pydantic refuses a too-long list before it
# validates its items), so a huge list is a fast 400 (T22).
MAX_PROMPTS = 128  # prompts in one /v1/completions request (max_n is at most 128)
MAX_PROMPT_TOKENS = 2**20  # token ids in one prompt
MAX_MESSAGES = 10_000
MAX_LOGIT_BIAS = 1024


def invalid(param: str, message: str) -> PydanticCustomError:
    """A cross-field error that still names its parameter (read back by the server)."""
    return PydanticCustomError("invalid_combination", message, {"param": param})


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class StreamOptions(_Request):
    include_usage: bool = False


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ImageURL(_Request):
    url: str
    detail: Literal["auto", "low", "high"] = "auto"


class ImagePart(_Request):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


FUNCTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"


class ToolCallFunction(_Request):
    name: str = Field(pattern=FUNCTION_NAME)
    arguments: str


class AssistantToolCall(_Request):
    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = Field(None, max_length=256)
    tool_calls: list[AssistantToolCall] | None = None
    tool_call_id: str | None = Field(None, max_length=256)
    # Some clients send the previous turn's reasoning back; it is accepted and not rendered.
    reasoning_content: str | None = None

    @model_validator(mode="after")
    def _roles(self) -> ChatMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise invalid("messages", "a tool message needs the tool_call_id it answers")
        if self.tool_calls and self.role != "assistant":
            raise invalid("messages", "only assistant messages carry tool_calls")
        return self


class FunctionDefinition(_Request):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatTool(_Request):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Request):
    name: str


class NamedToolChoice(_Request):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(_Request):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise invalid("response_format", "type json_schema needs a json_schema object")
        return self


class ChatTemplateKwargs(_Request):
    """Switches a model's template offers; only known, data-only keys are accepted."""

    enable_thinking: bool | None = None


Stop = str | Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=MAX_STOP)]


class SamplingFields(_Request):
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


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[ChatTool] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    response_format: ResponseFormat | None = None
    chat_template_kwargs: ChatTemplateKwargs | None = None

    @model_validator(mode="after")
    def _top_logprobs_need_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise invalid("top_logprobs", "top_logprobs requires logprobs to be true")
        return self

    @model_validator(mode="after")
    def _tool_choice_needs_tools(self) -> ChatCompletionRequest:
        names = [t.function.name for t in self.tools or []]
        if len(set(names)) != len(names):
            raise invalid("tools", "tool function names must be unique")
        choice = self.tool_choice
        if choice is not None and choice != "none" and not names:
            raise invalid("tool_choice", "tool_choice needs tools")
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise invalid(
                "tool_choice", f"tool_choice names '{choice.function.name}', which is not in tools"
            )
        return self

    def effective_tool_choice(self) -> str | NamedToolChoice:
        if self.tool_choice is not None:
            return self.tool_choice
        return "auto" if self.tools else "none"

    def requested_max_tokens(self) -> int | None:
        return (
            self.max_completion_tokens
            if self.max_completion_tokens is not None
            else (self.max_tokens)
        )


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


class EmbeddingRequest(_Request):
    model: str = Field(min_length=1, max_length=256)
    input: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=2048)]
        | Annotated[list[int], Field(min_length=1)]
        | Annotated[list[Annotated[list[int], Field(min_length=1)]], Field(min_length=1)]
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = Field(None, max_length=256)


# --- responses (documented in /openapi.json) -------------------------------------------------
class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[ChatTokenLogprob] | None


class ResponseToolCallFunction(BaseModel):
    name: str
    arguments: str


class ResponseToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: ResponseToolCallFunction


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    reasoning_content: str | None = None
    tool_calls: list[ResponseToolCall] | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length", "tool_calls"] | None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


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


class Model(BaseModel):
    """OpenAI's model object, plus what kaiyuan knows of the model's provenance."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    format: str | None = None
    architecture: str | None = None
    parameters: int | None = None
    quantisation: str | None = None
    context_length: int | None = None
    size_bytes: int | None = None
    capabilities: list[str] = []
    publisher: str | None = None
    origin: str | None = None
    licence: str | None = None
    source: str | None = None
    sha256: str | None = None
    added: str | None = None
    loaded: bool = False


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    models: dict[str, str] = {}


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


# --- Responses API (POST /v1/responses) ------------------------------------------------------
class ResponseTool(BaseModel):
    """A tool in a Responses request: built-in (web_search, code_interpreter, file_search) or a
    function the client runs. Fields vary by type, so they are checked where they are used."""

    model_config = ConfigDict(extra="allow")
    type: str


class ResponseRequest(_Request):
    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[ResponseTool] | None = Field(None, max_length=128)
    tool_choice: Literal["auto", "required", "none"] | dict[str, Any] = "auto"
    stream: bool = False
    max_output_tokens: int | None = Field(None, ge=1)
    max_tool_calls: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    previous_response_id: str | None = None
    store: bool = True
    metadata: dict[str, str] | None = None
    parallel_tool_calls: bool = True
    user: str | None = None


# --- images and videos -------------------------------------------------------------------------
class ImageRequest(_Request):
    model: str
    prompt: str = Field(min_length=1, max_length=10_000)
    n: int = Field(1, ge=1, le=10)
    size: str | None = None
    response_format: Literal["b64_json", "url"] = "b64_json"
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    steps: int | None = Field(None, ge=1)
    guidance_scale: float | None = Field(None, ge=0, le=50)
    negative_prompt: str | None = Field(None, max_length=10_000)
    quality: str | None = None  # accepted for OpenAI clients; not used
    style: str | None = None
    user: str | None = None


class VideoRequest(_Request):
    model: str
    prompt: str = Field(min_length=1, max_length=10_000)
    size: str | None = None
    seconds: str | None = Field(None, pattern=r"^\d{1,3}(\.\d+)?$")
    frames: int | None = Field(None, ge=1, le=1000)
    fps: int = Field(16, ge=1, le=60)
    steps: int | None = Field(None, ge=1)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    guidance_scale: float | None = Field(None, ge=0, le=50)
    negative_prompt: str | None = Field(None, max_length=10_000)
    user: str | None = None
