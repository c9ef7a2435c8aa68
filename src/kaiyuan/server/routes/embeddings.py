"""POST /v1/embeddings."""

from __future__ import annotations

import base64
import struct

from fastapi import APIRouter, Request

from kaiyuan.engines.base import EmbeddingEngine
from kaiyuan.errors import InvalidRequest
from kaiyuan.protocol.openai.embeddings import (
    Embedding,
    EmbeddingList,
    EmbeddingRequest,
    EmbeddingUsage,
)
from kaiyuan.server.errors import ERROR_RESPONSES
from kaiyuan.server.routing import ApiRoute

router = APIRouter(tags=["embeddings"], route_class=ApiRoute)


@router.post("/v1/embeddings", response_model=EmbeddingList, responses=ERROR_RESPONSES)
async def create_embeddings(body: EmbeddingRequest, request: Request) -> EmbeddingList:
    engine = await request.app.state.pool.acquire(
        body.model, EmbeddingEngine, "embedding", route="/v1/embeddings"
    )
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not all(isinstance(t, str) for t in texts):
        raise InvalidRequest(
            f"model '{body.model}' takes text input; token-id input is not supported",
            param="input",
        )
    result = await engine.embed([str(t) for t in texts])
    native = len(result.vectors[0]) if result.vectors else 0
    if body.dimensions is not None and body.dimensions != native:
        raise InvalidRequest(
            f"model '{body.model}' makes {native}-dimensional embeddings and cannot shorten "
            f"them (it was not trained for it); omit dimensions or ask for {native}",
            param="dimensions",
        )
    data = [
        Embedding(index=i, embedding=_encode(v, body.encoding_format))
        for i, v in enumerate(result.vectors)
    ]
    usage = EmbeddingUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens)
    return EmbeddingList(data=data, model=body.model, usage=usage)


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    # OpenAI's base64 format: little-endian float32 values.
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
