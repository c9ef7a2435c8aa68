"""POST /v1/completions (the legacy text completion API)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request, Response

from kaiyuan.engines.base import (
    Delta,
    EventStream,
    TextEngine,
    TokenLogprob,
    check_text_fits,
)
from kaiyuan.errors import InvalidRequest
from kaiyuan.protocol.openai.common import Usage
from kaiyuan.protocol.openai.completions import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
)
from kaiyuan.server import generation as gen
from kaiyuan.server import sse
from kaiyuan.server.errors import ERROR_RESPONSES
from kaiyuan.server.routing import ApiRoute

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
    raw = _raw_prompts(body)
    gen.check_choices(len(raw) * body.n, state.settings.max_n)  # before any tokenizing
    prompts = await asyncio.to_thread(_prompts, raw, engine)
    if body.echo and (body.logprobs is not None or any(text is None for text, _ in prompts)):
        raise InvalidRequest("echo needs text prompts and no logprobs", param="echo")
    base = gen.sampling_params(body, engine.info, max_tokens=1, logprobs=body.logprobs)
    jobs = []
    for _, tokens in prompts:
        max_tokens = gen.resolve_max_tokens(body.max_tokens, len(tokens), engine.info)
        for j in range(body.n):
            seed = None if body.seed is None else body.seed + j
            jobs.append((tokens, replace(base, max_tokens=max_tokens, seed=seed)))
    echoes = [text or "" if body.echo else "" for text, _ in prompts for _ in range(body.n)]
    streams = await gen.open_streams(engine, jobs)
    meta: dict[str, Any] = {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "created": int(time.time()),
        "model": body.model,
    }
    stall = state.settings.stall_timeout
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse.stream_response(_chunks(streams, meta, stall, include_usage, echoes, body.n))
    try:
        results = await gen.unless_disconnected(request, gen.collect(streams, stall))
    except gen.ClientGone:
        return Response(status_code=499)
    prompt_tokens = sum(len(tokens) for _, tokens in prompts)
    completion_tokens = sum(r.completion_tokens for r in results)
    return Completion(
        **meta,
        choices=[
            CompletionChoice(
                index=i,
                text=echoes[i] + r.text,
                finish_reason=r.finish_reason,
                logprobs=_logprobs(r.logprobs) if body.logprobs is not None else None,
            )
            for i, r in enumerate(results)
        ],
        usage=Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        ),
    )


def _raw_prompts(body: CompletionRequest) -> list[Any]:
    """The request's prompts: texts or token lists."""
    raw: list[Any] = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    return [raw] if isinstance(raw[0], int) else raw


def _prompts(raw: list[Any], engine: TextEngine) -> list[tuple[str | None, list[int]]]:
    """Each prompt as (its text, or None for token input; its token ids), in a worker thread."""
    out: list[tuple[str | None, list[int]]] = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            check_text_fits(engine.info, len(item), "prompt")
            tokens = engine.tokenize(item)
            if not tokens:
                raise InvalidRequest("the prompt is empty", param="prompt")
            out.append((item, tokens))
            continue
        ids = [int(t) for t in item]
        bad = [t for t in ids if not 0 <= t < engine.info.vocab_size]
        if bad:
            raise InvalidRequest(
                f"prompt[{i}] has token id {bad[0]}, outside this model's vocabulary "
                f"(0 to {engine.info.vocab_size - 1})",
                param="prompt",
            )
        out.append((None, ids))
    return out


def _logprobs(items: list[TokenLogprob], offset: int = 0) -> CompletionLogprobs:
    offsets, position = [], offset
    for lp in items:
        offsets.append(position)
        position += len(lp.token)
    return CompletionLogprobs(
        tokens=[lp.token for lp in items],
        token_logprobs=[lp.logprob for lp in items],
        top_logprobs=[{t.token: t.logprob for t in lp.top} for lp in items],
        text_offset=offsets,
    )


async def _chunks(
    streams: list[EventStream],
    meta: dict[str, Any],
    stall: float,
    include_usage: bool,
    echoes: list[str],
    per_prompt: int,
) -> AsyncIterator[bytes]:
    head = {**meta, "object": "text_completion"}
    if include_usage:
        head["usage"] = None

    def chunk(index: int, text: str, **extra: Any) -> bytes:
        choice = {"index": index, "text": text, "logprobs": None, "finish_reason": None}
        choice.update(extra)
        return sse.event({**head, "choices": [choice]})

    for i, echo in enumerate(echoes):
        if echo:
            yield chunk(i, echo)
    prompt_tokens: dict[int, int] = {}
    completion_tokens = 0
    async for index, event in gen.merge(streams, stall):
        if isinstance(event, Delta):
            extra = {"logprobs": _logprobs(event.logprobs).model_dump()} if event.logprobs else {}
            yield chunk(index, event.text, **extra)
        else:
            prompt_tokens[index] = event.prompt_tokens
            completion_tokens += event.completion_tokens
            yield chunk(index, "", finish_reason=event.reason)
    if include_usage:
        # Each prompt counts once, however many choices it had.
        total_prompt = sum(t for i, t in prompt_tokens.items() if i % per_prompt == 0)
        usage = {
            "prompt_tokens": total_prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": total_prompt + completion_tokens,
        }
        yield sse.event({**head, "choices": [], "usage": usage})
