"""POST /v1/messages and /v1/messages/count_tokens: requests, the message, stream events.

Requests accept every content block a client such as Claude Code sends back (thinking,
redacted thinking, server tool results, ``cache_control`` markers, citations); what kaiyuan
does not act on is accepted and ignored. Fields no model here knows are dropped with one log
warning, as on every surface (``protocol/fields.py``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from kaiyuan.protocol.fields import Request

MAX_MESSAGES = 10_000
MAX_BLOCKS = 1_000
MAX_TOOLS = 256
MAX_STOP = 16
TOOL_NAME = r"^[a-zA-Z0-9_-]{1,128}$"


class CacheControl(Request):
    type: str = Field("ephemeral", max_length=32)
    ttl: str | None = Field(None, max_length=16)


class TextBlock(Request):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None
    citations: list[dict[str, Any]] | None = Field(None, max_length=MAX_BLOCKS)


class Base64Source(Request):
    type: Literal["base64"]
    media_type: str = Field(max_length=64)
    data: str


class UrlSource(Request):
    type: Literal["url"]
    url: str = Field(max_length=8192)


class ImageBlock(Request):
    type: Literal["image"]
    source: Annotated[Base64Source | UrlSource, Field(discriminator="type")]
    cache_control: CacheControl | None = None


class ToolUseBlock(Request):
    type: Literal["tool_use"]
    id: str = Field(min_length=1, max_length=256)
    name: str = Field(pattern=TOOL_NAME)
    input: dict[str, Any] = Field(default_factory=dict)
    cache_control: CacheControl | None = None


ToolResultPart = Annotated[TextBlock | ImageBlock, Field(discriminator="type")]


class ToolResultBlock(Request):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1, max_length=256)
    content: str | list[ToolResultPart] | None = None
    is_error: bool = False
    cache_control: CacheControl | None = None


class ThinkingBlock(Request):
    """A previous turn's reasoning, sent back: accepted, not rendered (as templates drop it)."""

    type: Literal["thinking"]
    thinking: str = ""
    signature: str | None = None


class RedactedThinkingBlock(Request):
    type: Literal["redacted_thinking"]
    data: str = ""


class OtherBlock(Request):
    """Blocks of Anthropic's server tools (web search results, documents, containers...):
    accepted in a conversation sent back, and left out of the prompt."""

    type: Literal[
        "document",
        "search_result",
        "server_tool_use",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
        "mcp_tool_use",
        "mcp_tool_result",
        "container_upload",
    ]


ContentBlock = Annotated[
    TextBlock
    | ImageBlock
    | ToolUseBlock
    | ToolResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock
    | OtherBlock,
    Field(discriminator="type"),
]


class MessageParam(Request):
    # "system": Claude Code's mid-conversation system messages (a beta it sends)
    role: Literal["user", "assistant", "system"]
    content: str | Annotated[list[ContentBlock], Field(max_length=MAX_BLOCKS)]


class Tool(Request):
    """A client tool (``type`` absent or "custom"), or one of Anthropic's server tools
    (``web_search_20250305``, ``bash_20250124``...), which kaiyuan does not run: those are
    left out of the prompt, so the model cannot call them."""

    type: str | None = Field(None, max_length=64)
    name: str = Field(pattern=TOOL_NAME)
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    cache_control: CacheControl | None = None

    @property
    def is_custom(self) -> bool:
        return self.type in (None, "custom")


class ToolChoice(Request):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = Field(None, pattern=TOOL_NAME)
    disable_parallel_tool_use: bool = False


class Thinking(Request):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(None, ge=0)


class Metadata(Request):
    user_id: str | None = Field(None, max_length=1024)  # Claude Code sends a JSON object here


class JsonOutputFormat(Request):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(Request):
    """Structured output (grammar-enforced, as ``response_format`` on OpenAI's surface) and
    effort (accepted: thinking stays as the ``thinking`` field sets it)."""

    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: JsonOutputFormat | None = None


class CountTokensRequest(Request):
    model: str = Field(min_length=1, max_length=256)
    messages: list[MessageParam] = Field(min_length=1, max_length=MAX_MESSAGES)
    system: str | Annotated[list[TextBlock], Field(max_length=MAX_BLOCKS)] | None = None
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    cache_control: CacheControl | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1)
    stop_sequences: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None, max_length=MAX_STOP
    )
    stream: bool = False
    temperature: float | None = Field(None, ge=0.0, le=1.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    metadata: Metadata | None = None
    # accepted, not acted on
    service_tier: str | None = Field(None, max_length=32)
    inference_geo: str | None = Field(None, max_length=64)
    speed: str | None = Field(None, max_length=32)
    user_profile_id: str | None = Field(None, max_length=256)
    workspace_id: str | None = Field(None, max_length=256)
    diagnostics: dict[str, Any] | None = None
    container: Any = None
    context_management: dict[str, Any] | None = None
    mcp_servers: list[dict[str, Any]] | None = Field(None, max_length=64)


# --- the answer ----------------------------------------------------------------------------------
class TextContent(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ThinkingContent(BaseModel):
    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str = ""


class ToolUseContent(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


OutputBlock = Annotated[TextContent | ThinkingContent | ToolUseContent, Field(discriminator="type")]
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class Usage(BaseModel):
    """Input is split as Anthropic counts it: ``input_tokens`` were read, the cache-read ones
    came from prefix reuse; their sum is the prompt."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class Message(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[OutputBlock]
    stop_reason: StopReason | None
    stop_sequence: str | None = None
    usage: Usage


class TokenCount(BaseModel):
    input_tokens: int


# --- stream events (each written as ``event: TYPE`` + ``data: {...}``) ---------------------------
class MessageStart(BaseModel):
    type: Literal["message_start"] = "message_start"
    message: Message


class BlockStart(BaseModel):
    type: Literal["content_block_start"] = "content_block_start"
    index: int
    content_block: OutputBlock


class TextDelta(BaseModel):
    type: Literal["text_delta"] = "text_delta"
    text: str


class ThinkingDelta(BaseModel):
    type: Literal["thinking_delta"] = "thinking_delta"
    thinking: str


class SignatureDelta(BaseModel):
    type: Literal["signature_delta"] = "signature_delta"
    signature: str


class InputJsonDelta(BaseModel):
    type: Literal["input_json_delta"] = "input_json_delta"
    partial_json: str


BlockDeltaBody = Annotated[
    TextDelta | ThinkingDelta | SignatureDelta | InputJsonDelta, Field(discriminator="type")
]


class BlockDelta(BaseModel):
    type: Literal["content_block_delta"] = "content_block_delta"
    index: int
    delta: BlockDeltaBody


class BlockStop(BaseModel):
    type: Literal["content_block_stop"] = "content_block_stop"
    index: int


class MessageDeltaBody(BaseModel):
    stop_reason: StopReason
    stop_sequence: str | None = None


class MessageDelta(BaseModel):
    type: Literal["message_delta"] = "message_delta"
    delta: MessageDeltaBody
    usage: Usage


class MessageStop(BaseModel):
    type: Literal["message_stop"] = "message_stop"


class Ping(BaseModel):
    type: Literal["ping"] = "ping"


StreamEvent = MessageStart | BlockStart | BlockDelta | BlockStop | MessageDelta | MessageStop | Ping
