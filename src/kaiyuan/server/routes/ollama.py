"""Ollama's API under /api/ (``kaiyuan serve --port 11434`` for apps that speak only Ollama:
the ``ollama`` library, Open WebUI, Home Assistant, editor plugins). Errors are Ollama's
``{"error": "..."}`` (server/errors.py writes that envelope for every path under /api/)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from kaiyuan.engines.base import EmbeddingEngine, TextEngine
from kaiyuan.protocol.ollama import api
from kaiyuan.protocol.ollama.errors import OllamaError
from kaiyuan.server.auth import visible
from kaiyuan.server.routing import ApiRoute
from kaiyuan.server.serving import ollama, ollama_models, ollama_requests

router = APIRouter(tags=["ollama"], route_class=ApiRoute)

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": OllamaError, "description": description}
    for status, description in {
        400: "Invalid request",
        404: "Unknown model",
        413: "Request body too large",
        500: "Internal or engine error",
        501: "The feature needs a kaiyuan extra this install lacks (named in the message)",
        503: "Server at capacity, or the hub unreachable",
        504: "The engine stopped answering",
    }.items()
}


def _streamed(description: str) -> dict[int | str, dict[str, Any]]:
    return {**ERRORS, 200: {"content": {ollama.NDJSON: {}}, "description": description}}


@router.get("/api/version", response_model=api.VersionResponse)
async def version() -> api.VersionResponse:
    return api.VersionResponse()


@router.get("/api/tags", response_model=api.ListResponse, response_model_exclude_none=True)
async def list_models(request: Request) -> api.ListResponse:
    listed = await asyncio.to_thread(ollama_models.tags, request.app.state.pool)
    listed.models = visible(request, listed.models, _bare_name)
    return listed


@router.get("/api/ps", response_model=api.ProcessResponse, response_model_exclude_none=True)
async def running_models(request: Request) -> api.ProcessResponse:
    running = await asyncio.to_thread(ollama_models.running, request.app.state.pool)
    running.models = visible(request, running.models, _bare_name)
    return running


@router.post(
    "/api/show", response_model=api.ShowResponse, response_model_exclude_none=True, responses=ERRORS
)
async def show_model(body: api.ShowRequest, request: Request) -> api.ShowResponse:
    state = request.app.state
    return await asyncio.to_thread(ollama_models.show, state.pool, state.settings, body.target)


@router.post(
    "/api/chat",
    response_model=api.ChatResponse,
    response_model_exclude_none=True,
    responses=_streamed("One object, or newline-delimited objects when stream is true"),
)
async def chat(body: api.ChatRequest, request: Request) -> Any:
    served = ollama.served(request, body.model, body.keep_alive)
    if not body.messages:
        return await _load(request, served, body.stream, chat=True)
    translated = ollama_requests.to_chat(body, served.model_id)
    engine = await served.loaded(
        request.app.state.pool.acquire(served.model_id, TextEngine, "chat", route="/api/chat")
    )
    return await ollama.serve_chat(request, served, engine, translated, body.stream)


@router.post(
    "/api/generate",
    response_model=api.GenerateResponse,
    response_model_exclude_none=True,
    responses=_streamed("One object, or newline-delimited objects when stream is true"),
)
async def generate(body: api.GenerateRequest, request: Request) -> Any:
    ollama_requests.check_generate(body)
    served = ollama.served(request, body.model, body.keep_alive)
    if not body.prompt and not body.images:
        return await _load(request, served, body.stream, chat=False)
    translated: Any
    if body.raw:
        translated, capability = (
            ollama_requests.generate_to_completion(body, served.model_id),
            "completion",
        )
    else:
        translated, capability = ollama_requests.generate_to_chat(body, served.model_id), "chat"
    engine = await served.loaded(
        request.app.state.pool.acquire(
            served.model_id, TextEngine, capability, route="/api/generate"
        )
    )
    return await ollama.serve_generate(request, served, engine, translated, body.stream)


async def _load(request: Request, served: ollama.Served, stream: bool, *, chat: bool) -> Any:
    """Ollama's idiom: nothing to answer loads the model, or with keep_alive 0 unloads it."""
    pool = request.app.state.pool
    unload = served.keep_alive == 0
    if unload:
        pool.unloaded_record(served.model_id)  # an unknown model is a 404 here too
        await pool.unload_idle(served.model_id, reason="asked by keep_alive 0")
    else:
        route = "/api/chat" if chat else "/api/generate"
        capability = "chat" if chat else "completion"
        await served.loaded(pool.acquire(served.model_id, TextEngine, capability, route=route))
        served.done()
    return await ollama.answer_load(served, stream, chat=chat, unloaded=unload)


@router.post(
    "/api/embed",
    response_model=api.EmbedResponse,
    response_model_exclude_none=True,
    responses=ERRORS,
)
async def embed(body: api.EmbedRequest, request: Request) -> api.EmbedResponse:
    ollama.embed_inputs(body)  # a bad input is a 400 before any model loads
    served = ollama.served(request, body.model, body.keep_alive)
    engine = await served.loaded(
        request.app.state.pool.acquire(
            served.model_id, EmbeddingEngine, "embedding", route="/api/embed"
        )
    )
    return await ollama.serve_embed(served, engine, body)


@router.post("/api/embeddings", response_model=api.EmbeddingsResponse, responses=ERRORS)
async def embeddings(body: api.EmbeddingsRequest, request: Request) -> api.EmbeddingsResponse:
    served = ollama.served(request, body.model, body.keep_alive)
    engine = await served.loaded(
        request.app.state.pool.acquire(
            served.model_id, EmbeddingEngine, "embedding", route="/api/embeddings"
        )
    )
    return await ollama.serve_embeddings(served, engine, body)


@router.post(
    "/api/pull",
    response_model=api.ProgressResponse,
    response_model_exclude_none=True,
    responses=_streamed("The final status, or progress objects when stream is true"),
)
async def pull(body: api.PullRequest, request: Request) -> Any:
    state = request.app.state
    progress = ollama_models.pull(state.pool, state.settings, body.target)
    if body.stream:
        return ollama.ndjson(progress)
    return [status async for status in progress][-1]


@router.delete("/api/delete", response_model=api.StatusResponse, responses=ERRORS)
async def delete(body: api.DeleteRequest, request: Request) -> api.StatusResponse:
    state = request.app.state
    await ollama_models.delete(state.pool, state.settings, body.target)
    return api.StatusResponse()


@router.post("/api/copy", response_model=api.StatusResponse, responses=ERRORS)
async def copy(body: api.CopyRequest, request: Request) -> api.StatusResponse:
    state = request.app.state
    await ollama_models.copy(state.pool, state.settings, body.source, body.destination)
    return api.StatusResponse()


def _bare_name(entry: Any) -> str:
    return str(entry.name).removesuffix(":latest")
