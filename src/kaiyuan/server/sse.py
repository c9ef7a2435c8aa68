"""Server-sent events as OpenAI streams them: ``data: {json}`` lines, then ``data: [DONE]``."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from kaiyuan.errors import KaiyuanError
from kaiyuan.server.errors import envelope, error_body

log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"


def event(data: dict[str, Any]) -> bytes:
    return (
        b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
    )


def chunk(model: BaseModel) -> bytes:
    """A typed stream chunk; fields left unset are absent (see ``kaiyuan.protocol.openai``)."""
    return b"data: " + model.__pydantic_serializer__.to_json(model, exclude_unset=True) + b"\n\n"


async def _terminated(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    # Once the 200 is sent, an error can only travel as a final event (the openai client
    # raises it as an APIError); the stream then ends without [DONE].
    try:
        async for chunk in chunks:
            yield chunk
    except KaiyuanError as exc:
        log.warning("stream ended by %s: %s", type(exc).__name__, exc.message)
        yield event(envelope(exc))
        return
    except Exception:
        log.exception("stream failed")
        yield event(error_body("the server had an internal error; see its log", "server_error"))
        return
    yield DONE


def stream_response(chunks: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        _terminated(chunks),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def stream_events(events: AsyncIterator[tuple[str, dict[str, Any]]]) -> StreamingResponse:
    """Typed events as the Responses API streams them: ``event: TYPE`` and ``data: {...}``
    with ``type`` and a ``sequence_number``; no [DONE]."""

    async def lines() -> AsyncIterator[bytes]:
        number = 0
        async for kind, payload in events:
            data = {"type": kind, "sequence_number": number, **payload}
            number += 1
            yield f"event: {kind}\n".encode() + event(data)

    return StreamingResponse(
        lines(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
