"""POST /v1/responses: OpenAI's Responses API: the request, the output items, the response
object and its stream events (the names follow the openai SDK's ``types/responses``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from kaiyuan.protocol.openai.common import ErrorBody, Request

ToolChoice = Literal["auto", "required", "none"] | dict[str, Any]


class ResponseTool(BaseModel):
    """A tool in a Responses request: built-in (web_search, code_interpreter, file_search) or a
    function the client runs. Fields vary by type, so they are checked where they are used."""

    model_config = ConfigDict(extra="allow")
    type: str


class ResponseRequest(Request):
    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[ResponseTool] | None = Field(None, max_length=128)
    tool_choice: ToolChoice = "auto"
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


# --- output items ---------------------------------------------------------------------------------
def _absent(value: object) -> bool:
    return value is None


# A tool's argument as the model wrote it: a string, unless the model's arguments were malformed.
Argument = JsonValue


class UrlCitation(BaseModel):
    type: Literal["url_citation"] = "url_citation"
    url: str
    title: str
    start_index: int
    end_index: int


class ResponseOutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[UrlCitation] = Field(default_factory=list)
    logprobs: list[dict[str, Any]] = Field(default_factory=list)  # none are returned


class ResponseOutputMessage(BaseModel):
    type: Literal["message"] = "message"
    id: str
    status: Literal["in_progress", "completed", "incomplete"]
    role: Literal["assistant"] = "assistant"
    content: list[ResponseOutputText]


ToolCallStatus = Literal["in_progress", "completed", "failed"]
# kaiyuan's, on a tool call item: why the call failed; absent unless it did
Failure = Annotated[str | None, Field(exclude_if=_absent)]


class ToolCallItem(BaseModel):
    """A call of a tool run here: these fields, the tool's own, then ``error``."""

    type: str
    id: str
    status: ToolCallStatus = "in_progress"


class ResponseFunctionToolCall(BaseModel):
    """A call of a function the client runs (or, failed, of a tool the request did not offer)."""

    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    arguments: str
    status: ToolCallStatus = "in_progress"
    error: Failure = None


class ActionSearch(BaseModel):
    type: Literal["search"] = "search"
    query: Argument


class ActionOpenPage(BaseModel):
    type: Literal["open_page"] = "open_page"
    url: Argument


class ResponseFunctionWebSearch(ToolCallItem):
    type: Literal["web_search_call"] = "web_search_call"
    action: Annotated[ActionSearch | ActionOpenPage, Field(discriminator="type")]
    error: Failure = None


class CodeInterpreterLogs(BaseModel):
    type: Literal["logs"] = "logs"
    logs: str


class ResponseCodeInterpreterToolCall(ToolCallItem):
    type: Literal["code_interpreter_call"] = "code_interpreter_call"
    code: Argument
    container_id: str
    outputs: list[CodeInterpreterLogs] | None = None
    error: Failure = None


class FileSearchResult(BaseModel):
    file_id: str | None
    filename: str | None
    score: float | None
    text: str | None
    attributes: dict[str, str | None]


class ResponseFileSearchToolCall(ToolCallItem):
    type: Literal["file_search_call"] = "file_search_call"
    queries: list[Argument]
    results: list[FileSearchResult] | None = None
    error: Failure = None


class McpCall(ToolCallItem):
    type: Literal["mcp_call"] = "mcp_call"
    server_label: str
    name: str
    arguments: str
    output: str | None = None
    error: Failure = None
    # the request the user approved to run it; absent for a call that needed no approval
    approval_request_id: Annotated[str | None, Field(exclude_if=_absent)] = None


class McpApprovalRequest(BaseModel):
    """A call of an MCP tool that needs the user's approval: the response ends with it, and the
    client answers with an ``mcp_approval_response`` input item and ``previous_response_id``."""

    type: Literal["mcp_approval_request"] = "mcp_approval_request"
    id: str  # the answer's approval_request_id
    server_label: str
    name: str
    arguments: str


ToolCall = (
    ResponseFunctionToolCall
    | ResponseFunctionWebSearch
    | ResponseCodeInterpreterToolCall
    | ResponseFileSearchToolCall
    | McpCall
)
OutputItem = Annotated[
    ResponseOutputMessage | ToolCall | McpApprovalRequest, Field(discriminator="type")
]


# --- the response object --------------------------------------------------------------------------
class InputTokensDetails(BaseModel):
    cached_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


IncompleteReason = Literal["max_output_tokens", "max_steps", "max_tool_calls", "max_seconds"]
ResponseStatus = Literal["in_progress", "completed", "incomplete", "failed"]


class IncompleteDetails(BaseModel):
    reason: IncompleteReason


class TextFormat(BaseModel):
    type: Literal["text"] = "text"


class TextConfig(BaseModel):
    format: TextFormat = Field(default_factory=TextFormat)


class Response(BaseModel):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: ResponseStatus
    error: ErrorBody | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None
    max_output_tokens: int | None
    model: str
    output: list[OutputItem]
    parallel_tool_calls: bool
    previous_response_id: str | None
    temperature: float | None
    top_p: float | None
    tool_choice: ToolChoice
    tools: list[ResponseTool]
    usage: ResponseUsage | None = None
    metadata: dict[str, str]
    store: bool
    text: TextConfig = Field(default_factory=TextConfig)
    truncation: Literal["disabled"] = "disabled"
    user: str | None


# --- stream events --------------------------------------------------------------------------------
class ResponseStreamEvent(BaseModel):
    """One streamed event; ``sequence_number`` is its place in the stream, set as it is sent."""

    type: str
    sequence_number: int = 0


class ResponseLifecycleEvent(ResponseStreamEvent):
    """The response as it stands: created, in progress, then how it ended."""

    type: Literal[
        "response.created", "response.in_progress", "response.completed",
        "response.incomplete", "response.failed",
    ]  # fmt: skip
    response: Response


class ResponseOutputItemEvent(ResponseStreamEvent):
    type: Literal["response.output_item.added", "response.output_item.done"]
    output_index: int
    item: OutputItem


class ResponseToolCallProgressEvent(ResponseStreamEvent):
    """A tool call item's progress: ``response.<item type>.in_progress`` when it starts,
    ``.completed`` when it has finished (failed or not)."""

    type: Literal[
        "response.web_search_call.in_progress", "response.web_search_call.completed",
        "response.code_interpreter_call.in_progress", "response.code_interpreter_call.completed",
        "response.file_search_call.in_progress", "response.file_search_call.completed",
        "response.mcp_call.in_progress", "response.mcp_call.completed",
        "response.function_call.in_progress", "response.function_call.completed",
    ]  # fmt: skip
    output_index: int
    item_id: str


class ResponseContentPartEvent(ResponseStreamEvent):
    type: Literal["response.content_part.added", "response.content_part.done"]
    output_index: int
    item_id: str
    content_index: int
    part: ResponseOutputText


class ResponseTextDeltaEvent(ResponseStreamEvent):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    output_index: int
    item_id: str
    content_index: int
    delta: str
    logprobs: list[dict[str, Any]] = Field(default_factory=list)


class ResponseTextDoneEvent(ResponseStreamEvent):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    output_index: int
    item_id: str
    content_index: int
    text: str
    logprobs: list[dict[str, Any]] = Field(default_factory=list)


class ResponseFunctionCallArgumentsDoneEvent(ResponseStreamEvent):
    type: Literal["response.function_call_arguments.done"] = "response.function_call_arguments.done"
    output_index: int
    item_id: str
    arguments: str
