"""POST /v1/completions (the legacy text completion API)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from kaiyuan.engines.base import TextEngine
from kaiyuan.protocol.openai.completions import Completion, CompletionRequest
from kaiyuan.server.errors import ERROR_RESPONSES
from kaiyuan.server.routing import ApiRoute
from kaiyuan.server.serving import completions

router = APIRouter(tags=["completions"], route_class=ApiRoute)


@router.post(
    "/v1/completions",
    response_model=Completion,
    responses={
        **ERROR_RESPONSES,
        200: {"content": {"text/event-stream": {}}, "description": "Completion or SSE stream"},
    },
)
async def create_completion(body: CompletionRequest, request: Request) -> Any:
    state = request.app.state
    engine = await state.pool.acquire(body.model, TextEngine, "completion", route="/v1/completions")
    return await completions.serve(engine, body, state.settings, request)
