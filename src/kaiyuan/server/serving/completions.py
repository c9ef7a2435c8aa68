"""Text completions: prompts (text or token ids) -> choices, a body or chunks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import Request, Response

from kaiyuan.config import Settings
from kaiyuan.engines.base import Delta, EventStream, TextEngine, TokenLogprob, check_text_fits
from kaiyuan.errors import InvalidRequest
from kaiyuan.protocol.openai.completions import (
    Completion,
    CompletionChoice,
    CompletionChunk,
    CompletionChunkChoice,
    CompletionLogprobs,
    CompletionRequest,
)
from kaiyuan.server import sse
from kaiyuan.server.serving import streams
from kaiyuan.server.serving.choices import Head, Totals, body_or_499
from kaiyuan.server.serving.sampling import check_choices, resolve_max_tokens, sampling_params


async def serve(
    engine: TextEngine, body: CompletionRequest, settings: Settings, request: Request
) -> Completion | Response:
    opened, echoes = await start(engine, body, settings)
    head = Head.new("cmpl", body.model)
    stall = settings.stall_timeout
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse.stream_response(_chunks(opened, head, stall, include_usage, echoes, body.n))
    work = _completion(opened, head, stall, echoes, body.n, body.logprobs is not None)
    return await body_or_499(request, work)


async def start(
    engine: TextEngine, body: CompletionRequest, settings: Settings
) -> tuple[list[EventStream], list[str]]:
    """Every choice of every prompt admitted (or none), in order, with the text each choice
    echoes first (empty unless ``echo``). Other surfaces' raw prompts (Ollama's ``raw``
    generate) start here too."""
    raw = _raw_prompts(body)
    check_choices(len(raw) * body.n, settings.max_n)  # before any tokenizing
    prompts = await asyncio.to_thread(_prompts, raw, engine)
    if body.echo and (body.logprobs is not None or any(text is None for text, _ in prompts)):
        raise InvalidRequest("echo needs text prompts and no logprobs", param="echo")
    base = sampling_params(
        body, engine.info, settings.prompt_cache, max_tokens=1, logprobs=body.logprobs
    )
    jobs = []
    for _, tokens in prompts:
        max_tokens = resolve_max_tokens(body.max_tokens, len(tokens), engine.info)
        for j in range(body.n):
            seed = None if body.seed is None else body.seed + j
            jobs.append((tokens, replace(base, max_tokens=max_tokens, seed=seed)))
    echoes = [text or "" if body.echo else "" for text, _ in prompts for _ in range(body.n)]
    return await streams.open_streams(engine, jobs), echoes


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


@dataclass(slots=True)
class _Choice:
    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: Any = None


async def _completion(
    opened: list[EventStream],
    head: Head,
    stall: float,
    echoes: list[str],
    per_prompt: int,
    with_logprobs: bool,
) -> Completion:
    choices = [_Choice() for _ in opened]
    totals = Totals(per_prompt=per_prompt)
    async for index, event in streams.merge(opened, stall):
        choice = choices[index]
        if isinstance(event, Delta):
            choice.text += event.text
            choice.logprobs.extend(event.logprobs)
        else:
            choice.finish_reason = event.reason
            totals.add(index, event)
    return Completion(
        id=head.id,
        created=head.created,
        model=head.model,
        choices=[
            CompletionChoice(
                index=i,
                text=echoes[i] + c.text,
                finish_reason=c.finish_reason,
                logprobs=_logprobs(c.logprobs) if with_logprobs else None,
            )
            for i, c in enumerate(choices)
        ],
        usage=totals.usage(details=False),
    )


async def _chunks(
    opened: list[EventStream],
    head: Head,
    stall: float,
    include_usage: bool,
    echoes: list[str],
    per_prompt: int,
) -> AsyncIterator[bytes]:
    base = head.stream_fields("text_completion", include_usage)

    def chunk_model(
        index: int, text: str, logprobs: list[TokenLogprob] | None = None, finish: Any = None
    ) -> CompletionChunk:
        choice = CompletionChunkChoice(
            index=index,
            text=text,
            logprobs=_logprobs(logprobs) if logprobs else None,
            finish_reason=finish,
        )
        return CompletionChunk(**base, choices=[choice])

    def chunk(
        index: int, text: str, logprobs: list[TokenLogprob] | None = None, finish: Any = None
    ) -> bytes:
        return sse.chunk(chunk_model(index, text, logprobs, finish))

    texts = [sse.Template(chunk_model(i, sse.HOLE)) for i in range(len(opened))]
    for i, echo in enumerate(echoes):
        if echo:
            yield chunk(i, echo)
    totals = Totals(per_prompt=per_prompt)
    async for index, event in streams.merge(opened, stall):
        if isinstance(event, Delta):
            if event.logprobs:
                yield chunk(index, event.text, event.logprobs)
            else:  # the hot path: a token's text
                yield texts[index].fill(event.text)
        else:
            totals.add(index, event)
            yield chunk(index, "", finish=event.reason)
    if include_usage:
        usage = totals.usage(details=False)
        yield sse.chunk(CompletionChunk(**{**base, "usage": usage}, choices=[]))
