"""POST /v1/responses: OpenAI's Responses API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kaiyuan.protocol.openai.common import Request


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
