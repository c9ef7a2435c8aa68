"""Server-sent events as OpenAI streams them: ``data: {json}`` lines, then ``data: [DONE]``."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from pydantic_core import to_json

from kaiyuan.errors import KaiyuanError
from kaiyuan.protocol.openai.responses import ResponseStreamEvent
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


HOLE = "\x00kaiyuan-hole\x00"  # stands for the one string a Template leaves open


class Template:
    """A typed chunk with one string field left open (set to :data:`HOLE`): the bytes around
    it are written once, from the model itself, so a token's chunk is one string escape and two
    concatenations instead of building and serialising models (the per-token hot path)."""

    def __init__(self, model: BaseModel) -> None:
        self._before, hole, self._after = chunk(model).partition(to_json(HOLE))
        if not hole or hole in self._after:
            raise ValueError("a template needs exactly one hole")

    def fill(self, text: str) -> bytes:
        return self._before + to_json(text) + self._after


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


def stream_events(events: AsyncIterator[ResponseStreamEvent]) -> StreamingResponse:
    """Typed events as the Responses API streams them: ``event: TYPE`` and ``data: {...}``
    with ``type`` and a ``sequence_number``, numbered here in order; no [DONE]."""

    async def lines() -> AsyncIterator[bytes]:
        number = 0
        async for typed in events:
            typed.sequence_number = number
            number += 1
            data = typed.model_dump_json().encode()
            yield f"event: {typed.type}\n".encode() + b"data: " + data + b"\n\n"

    return StreamingResponse(
        lines(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
