"""GET /health (the process and its engines are up) and GET /ready (they really generate)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from kaiyuan.engines.base import EmbeddingEngine, Engine, Finish, SamplingParams, TextEngine
from kaiyuan.errors import KaiyuanError
from kaiyuan.protocol.openai.models import Health
from kaiyuan.server.errors import ERROR_RESPONSES
from kaiyuan.server.routing import ApiRoute
from kaiyuan.server.serving.streams import guarded

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"], route_class=ApiRoute)

_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": Health, "description": "An engine is dead or not generating"}
}


def _report(states: dict[str, str]) -> JSONResponse:
    ok = all(state == "ok" for state in states.values())
    body = Health(status="ok" if ok else "unavailable", models=states)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/health", response_model=Health, responses=_UNAVAILABLE)
async def health(request: Request) -> JSONResponse:
    return _report({e.info.id: "ok" if e.alive else "dead" for e in request.app.state.pool})


@router.get("/ready", response_model=Health, responses={**_UNAVAILABLE, 500: ERROR_RESPONSES[500]})
async def ready(request: Request) -> JSONResponse:
    timeout = request.app.state.settings.ready_timeout
    states = await asyncio.gather(*(_probe(e, timeout) for e in request.app.state.pool))
    return _report(dict(states))


async def _probe(engine: Engine, limit: float) -> tuple[str, str]:
    """A real one-token generation, or one embedding; a loaded media pipeline is ready while
    it is alive (one real denoising step of a large pipeline costs seconds to minutes)."""
    if not engine.alive:
        return engine.info.id, "dead"
    if isinstance(engine, EmbeddingEngine):
        return await _probe_embedding(engine, limit)
    if not isinstance(engine, TextEngine):
        return engine.info.id, "ok"
    try:
        prompt = engine.tokenize("Hello")
        stream = engine.generate(prompt, SamplingParams(max_tokens=1, temperature=0))
        async with asyncio.timeout(limit):
            async for event in guarded(stream, limit):
                if isinstance(event, Finish) and event.completion_tokens == 1:
                    return engine.info.id, "ok"
    except TimeoutError:
        return engine.info.id, "timeout"
    except KaiyuanError as exc:
        return engine.info.id, exc.code or "error"
    except Exception:
        log.exception("readiness probe failed for %s", engine.info.id)
        return engine.info.id, "error"
    return engine.info.id, "error"


async def _probe_embedding(engine: EmbeddingEngine, limit: float) -> tuple[str, str]:
    """Embed one word."""
    try:
        async with asyncio.timeout(limit):
            done = await engine.embed(["ready"])
        return engine.info.id, "ok" if done.vectors else "error"
    except TimeoutError:
        return engine.info.id, "timeout"
    except Exception:
        log.exception("readiness probe failed for %s", engine.info.id)
        return engine.info.id, "error"
