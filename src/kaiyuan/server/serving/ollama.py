"""Ollama's /api/chat, /api/generate, /api/embed and /api/embeddings on kaiyuan's pipelines.

A chat or generate request, translated into an OpenAI chat request (``ollama_requests.py``),
runs through ``serving/chat.start``: templates, tool-call parsers, the reasoning split,
grammars, batching, prefix reuse and the control-marker guard all apply unchanged. ``raw``
generate runs through ``serving/completions.start`` (the client wrote the whole prompt). The
run's parsed output becomes Ollama's objects: newline-delimited JSON (``stream``, the
default), or one object. Every object carries ``created_at``; the last one ``done: true``,
``done_reason`` and the counts and durations (nanoseconds).

An empty prompt (or no messages) only loads the model (``done_reason`` "load"), or with
``keep_alive`` 0 unloads it ("unload"), as Ollama's clients use it. ``keep_alive`` is handed
to the pool when the request ends, so it counts from then.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from kaiyuan.chat.output import Call, Content, Thought
from kaiyuan.engines.base import Delta, EmbeddingEngine, EventStream, Finish, TextEngine
from kaiyuan.engines.pool import EnginePool
from kaiyuan.errors import InvalidRequest, KaiyuanError
from kaiyuan.protocol.ollama import api
from kaiyuan.protocol.openai.chat import ChatCompletionRequest
from kaiyuan.protocol.openai.completions import CompletionRequest
from kaiyuan.server.serving import chat, completions, streams
from kaiyuan.server.serving.choices import body_or_499
from kaiyuan.server.serving.ollama_models import resolve, rfc3339

log = logging.getLogger(__name__)
T = TypeVar("T")
NDJSON = "application/x-ndjson"
INTERNAL = "the server had an internal error; see its log"


@dataclass(slots=True)
class Clock:
    """Ollama's durations (nanoseconds) from four moments: the request, the model in hand,
    the prompt's preparation, the first generated text."""

    start: int = field(default_factory=time.perf_counter_ns)
    load: int = 0
    admitted: int = 0
    first: int = 0

    def tick(self) -> None:
        if not self.first:
            self.first = time.perf_counter_ns()

    def stats(self, finish: Finish) -> dict[str, int]:
        end = time.perf_counter_ns()
        first = self.first or end
        return {
            "total_duration": end - self.start,
            "load_duration": self.load,
            "prompt_eval_count": finish.prompt_tokens,
            "prompt_eval_duration": max(first - (self.admitted or self.start), 0),
            "eval_count": finish.completion_tokens,
            "eval_duration": end - first,
        }


@dataclass(slots=True)
class Served:
    """One request's model: the name it used (echoed back), the id that name means, the
    keep-alive it asked for, and its clock."""

    pool: EnginePool
    name: str
    model_id: str
    keep_alive: float | None
    stall: float
    clock: Clock = field(default_factory=Clock)

    async def loaded(self, engine: Awaitable[T]) -> T:
        """The engine the pool hands out, with the time it took (loading, when it had to)."""
        got = await engine
        self.clock.load = time.perf_counter_ns() - self.clock.start
        return got

    def done(self) -> None:
        """The request is over: the model's keep-alive counts from now."""
        self.pool.keep_alive(self.model_id, self.keep_alive)


def served(request: Request, name: str, keep_alive: float | None) -> Served:
    """The model an Ollama request names (its id for the pool: ``model_id``)."""
    state = request.app.state
    pool: EnginePool = state.pool
    model_id = pool.canonical(resolve(pool, name))
    return Served(pool, name, model_id, keep_alive, state.settings.stall_timeout)


# --- chat and generate ---------------------------------------------------------------------------
async def serve_chat(
    request: Request, served: Served, engine: TextEngine, body: ChatCompletionRequest, stream: bool
) -> Any:
    return await _serve(request, served, stream, _chat_lines(served, engine, body))


async def serve_generate(
    request: Request,
    served: Served,
    engine: TextEngine,
    body: ChatCompletionRequest | CompletionRequest,
    stream: bool,
) -> Any:
    if isinstance(body, CompletionRequest):
        return await _serve(request, served, stream, _raw_lines(served, engine, body))
    return await _serve(request, served, stream, _generate_lines(served, engine, body))


async def _serve(
    request: Request, served: Served, stream: bool, lines: AsyncGenerator[BaseModel, None]
) -> Any:
    """The objects streamed, or gathered into one. The prompt is admitted before anything is
    sent, so its errors (too long, server full) are still HTTP statuses."""
    try:
        first = await anext(lines)
    except BaseException:
        served.done()
        await lines.aclose()
        raise
    whole = _finally(_chain(first, lines), served.done)
    if stream:
        return ndjson(whole)
    return await body_or_499(request, _gathered(whole))


async def _chain(first: BaseModel, rest: AsyncIterator[BaseModel]) -> AsyncIterator[BaseModel]:
    yield first
    async for item in rest:
        yield item


async def _finally(
    source: AsyncIterator[BaseModel], then: Callable[[], None]
) -> AsyncIterator[BaseModel]:
    try:
        async for item in source:
            yield item
    finally:
        then()


class _Admitted(BaseModel):
    """Not sent: marks that the prompt was admitted (the first item of every run's lines)."""


async def _gathered(lines: AsyncIterator[BaseModel]) -> BaseModel:
    """One object from a stream's: texts joined, tool calls together, the last one's stats."""
    text: list[str] = []
    thinking: list[str] = []
    calls: list[api.ResponseToolCall] = []
    last: BaseModel | None = None
    async for line in lines:
        last = line
        if isinstance(line, api.ChatResponse):
            text.append(line.message.content)
            thinking.append(line.message.thinking or "")
            calls += line.message.tool_calls or []
        elif isinstance(line, api.GenerateResponse):
            text.append(line.response)
            thinking.append(line.thinking or "")
    if isinstance(last, api.ChatResponse):
        message = api.ResponseMessage(
            content="".join(text), thinking="".join(thinking) or None, tool_calls=calls or None
        )
        return last.model_copy(update={"message": message})
    assert isinstance(last, api.GenerateResponse)  # every run ends with its final object
    return last.model_copy(
        update={"response": "".join(text), "thinking": "".join(thinking) or None}
    )


def _head(served: Served, done: bool = False) -> dict[str, Any]:
    return {"model": served.name, "created_at": rfc3339(), "done": done}


def tool_call(call: Call) -> api.ResponseToolCall:
    """A parsed call in Ollama's shape: arguments as an object."""
    try:
        arguments = json.loads(call.arguments or "{}")
    except ValueError:
        arguments = {}
    if not isinstance(arguments, dict):
        arguments = {}
    return api.ResponseToolCall(function=api.ResponseFunction(name=call.name, arguments=arguments))


async def _started(served: Served, engine: TextEngine, body: ChatCompletionRequest) -> chat.Run:
    served.clock.admitted = time.perf_counter_ns()
    return await chat.start(engine, body, served.pool.settings)


async def _chat_lines(
    served: Served, engine: TextEngine, body: ChatCompletionRequest
) -> AsyncGenerator[BaseModel, None]:
    run = await _started(served, engine, body)
    yield _Admitted()
    async for _, items, event in run.events(served.stall):
        served.clock.tick()
        for item in items:
            if isinstance(item, Content):
                message = api.ResponseMessage(content=item.text)
            elif isinstance(item, Thought):
                message = api.ResponseMessage(thinking=item.text)
            else:
                message = api.ResponseMessage(tool_calls=[tool_call(item)])
            yield api.ChatResponse(**_head(served), message=message)
        if isinstance(event, Finish):
            yield api.ChatResponse(
                **_head(served, True),
                message=api.ResponseMessage(),
                done_reason=event.reason,
                **served.clock.stats(event),
            )


async def _generate_lines(
    served: Served, engine: TextEngine, body: ChatCompletionRequest
) -> AsyncGenerator[BaseModel, None]:
    run = await _started(served, engine, body)
    yield _Admitted()
    async for _, items, event in run.events(served.stall):
        served.clock.tick()
        for item in items:
            if isinstance(item, Thought):
                yield api.GenerateResponse(**_head(served), thinking=item.text)
            elif isinstance(item, Content):
                yield api.GenerateResponse(**_head(served), response=item.text)
        if isinstance(event, Finish):
            yield api.GenerateResponse(
                **_head(served, True), done_reason=event.reason, **served.clock.stats(event)
            )


async def _raw_lines(
    served: Served, engine: TextEngine, body: CompletionRequest
) -> AsyncGenerator[BaseModel, None]:
    served.clock.admitted = time.perf_counter_ns()
    opened: list[EventStream] = (await completions.start(engine, body, served.pool.settings))[0]
    yield _Admitted()
    async for _, event in streams.merge(opened, served.stall):
        served.clock.tick()
        if isinstance(event, Delta):
            if event.text:
                yield api.GenerateResponse(**_head(served), response=event.text)
        else:
            yield api.GenerateResponse(
                **_head(served, True), done_reason=event.reason, **served.clock.stats(event)
            )


async def answer_load(served: Served, stream: bool, *, chat: bool, unloaded: bool) -> Any:
    """The answer to Ollama's load (or, ``unloaded``, unload) idiom: one final object."""
    head = {**_head(served, True), "done_reason": "unload" if unloaded else "load"}
    line: BaseModel = (
        api.ChatResponse(**head, message=api.ResponseMessage())
        if chat
        else api.GenerateResponse(**head)
    )
    return ndjson(_one(line)) if stream else line


async def _one(line: BaseModel) -> AsyncIterator[BaseModel]:
    yield line


def ndjson(lines: AsyncIterator[BaseModel]) -> StreamingResponse:
    """Objects as newline-delimited JSON; an error once the 200 is sent ends the stream as one
    last ``{"error": "..."}`` object (the ollama client raises it)."""

    async def body() -> AsyncIterator[bytes]:
        try:
            async for line in lines:
                if not isinstance(line, _Admitted):
                    yield line.model_dump_json(exclude_none=True).encode() + b"\n"
        except KaiyuanError as exc:
            log.warning("stream ended by %s: %s", type(exc).__name__, exc.message)
            yield _error(exc.message)
        except Exception:
            log.exception("stream failed")
            yield _error(INTERNAL)

    return StreamingResponse(body(), media_type=NDJSON, headers={"X-Accel-Buffering": "no"})


def _error(message: str) -> bytes:
    return json.dumps({"error": message}, ensure_ascii=False).encode() + b"\n"


# --- embeddings ----------------------------------------------------------------------------------
def embed_inputs(body: api.EmbedRequest) -> list[str]:
    """The texts to embed: an empty string is none (Ollama's load idiom); an empty text in a
    list is a 400."""
    if isinstance(body.input, str):
        return [body.input] if body.input else []
    for i, text in enumerate(body.input):
        if not text:
            raise InvalidRequest(f"input[{i}] is empty", param="input")
    return list(body.input)


async def serve_embed(
    served: Served, engine: EmbeddingEngine, body: api.EmbedRequest
) -> api.EmbedResponse:
    texts = embed_inputs(body)
    try:
        result = await engine.embed(texts) if texts else None
    finally:
        served.done()
    vectors = result.vectors if result else []
    native = len(vectors[0]) if vectors else 0
    if body.dimensions is not None and vectors and body.dimensions != native:
        raise InvalidRequest(
            f"model '{body.model}' makes {native}-dimensional embeddings and cannot shorten "
            f"them (it was not trained for it); omit dimensions or ask for {native}",
            param="dimensions",
        )
    return api.EmbedResponse(
        model=body.model,
        embeddings=vectors,
        total_duration=time.perf_counter_ns() - served.clock.start,
        load_duration=served.clock.load,
        prompt_eval_count=result.prompt_tokens if result else 0,
    )


async def serve_embeddings(
    served: Served, engine: EmbeddingEngine, body: api.EmbeddingsRequest
) -> api.EmbeddingsResponse:
    try:
        result = await engine.embed([body.prompt]) if body.prompt else None
    finally:
        served.done()
    return api.EmbeddingsResponse(embedding=result.vectors[0] if result else [])
