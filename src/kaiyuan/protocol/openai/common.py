"""What every OpenAI resource shares: the request base, errors, usage."""

from __future__ import annotations

from pydantic import BaseModel
from pydantic_core import PydanticCustomError

from kaiyuan.protocol.fields import Request


def invalid(param: str, message: str) -> PydanticCustomError:
    """A cross-field error that still names its parameter (read back by the server)."""
    return PydanticCustomError("invalid_combination", message, {"param": param})


__all__ = ["ErrorBody", "ErrorResponse", "PromptTokensDetails", "Request", "Usage", "invalid"]


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
