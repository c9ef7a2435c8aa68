"""POST /v1/chat/completions: text, tools, structured output and reasoning."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from kaiyuan.engines.base import TextEngine
from kaiyuan.protocol.openai.chat import ChatCompletion, ChatCompletionRequest
from kaiyuan.server.errors import ERROR_RESPONSES
from kaiyuan.server.routing import ApiRoute
from kaiyuan.server.serving import chat

router = APIRouter(tags=["chat"], route_class=ApiRoute)


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={
        **ERROR_RESPONSES,
        200: {"content": {"text/event-stream": {}}, "description": "Completion or SSE stream"},
    },
)
async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Any:
    state = request.app.state
    engine = await state.pool.acquire(body.model, TextEngine, "chat", route="/v1/chat/completions")
    return await chat.serve(engine, body, state.settings, request)
