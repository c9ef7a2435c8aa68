"""POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API (Claude Code, the
``anthropic`` SDK) on the chat pipeline.

Claude Code's headers are accepted as they come: its key as ``x-api-key`` or a Bearer token,
``anthropic-version``, any ``anthropic-beta`` value (unknown betas are ignored, never
refused), and ``?beta=true`` on the path.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from kaiyuan.engines.base import TextEngine
from kaiyuan.protocol.anthropic.errors import AnthropicError
from kaiyuan.protocol.anthropic.messages import (
    CountTokensRequest,
    Message,
    MessagesRequest,
    TokenCount,
)
from kaiyuan.server.routing import ApiRoute
from kaiyuan.server.serving import chat, messages

router = APIRouter(tags=["anthropic"], route_class=ApiRoute)

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": AnthropicError, "description": description}
    for status, description in {
        400: "Invalid request (Anthropic's error envelope)",
        404: "Unknown model",
        503: "Server at capacity (see Retry-After)",
    }.items()
}


@router.post(
    "/v1/messages",
    response_model=Message,
    responses={
        **ERRORS,
        200: {"content": {"text/event-stream": {}}, "description": "Message or event stream"},
    },
)
async def create_message(body: MessagesRequest, request: Request) -> Any:
    state = request.app.state
    engine = await state.pool.acquire(body.model, TextEngine, "chat", route="/v1/messages")
    return await messages.serve(engine, body, state.settings, request)


@router.post("/v1/messages/count_tokens", response_model=TokenCount, responses=ERRORS)
async def count_tokens(body: CountTokensRequest, request: Request) -> TokenCount:
    state = request.app.state
    engine = await state.pool.acquire(
        body.model, TextEngine, "chat", route="/v1/messages/count_tokens"
    )
    count = await chat.count_tokens(engine, messages.to_chat(body), state.settings)
    return TokenCount(input_tokens=count)
