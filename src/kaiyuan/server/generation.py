"""Running generations for a request: admission, choices, stall timeouts, disconnects.

Every choice of a request is admitted before the response starts, so capacity and context
errors are still real HTTP statuses; after that, errors travel inside the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request

from kaiyuan.engines.base import (
    Delta,
    EventStream,
    Finish,
    GenerationEvent,
    ModelInfo,
    SamplingParams,
    TextEngine,
    TokenLogprob,
    check_fits,
)
from kaiyuan.errors import EngineTimeout, InvalidRequest
from kaiyuan.protocol.openai.sampling import SamplingFields

T = TypeVar("T")


@dataclass(slots=True)
class ChoiceResult:
    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


def resolve_max_tokens(requested: int | None, prompt_len: int, info: ModelInfo) -> int:
    """``requested``; else the model's default answer length, or the room left in the context
    when that is less (a default never makes a request fail); raises when nothing fits."""
    if requested is None:
        check_fits(info, prompt_len, 1)
        room = info.context_length - prompt_len
        default = info.defaults.max_tokens
        return room if default is None else min(default, room)
    check_fits(info, prompt_len, requested)
    return requested


def sampling_params(body: SamplingFields, info: ModelInfo, **fields: Any) -> SamplingParams:
    """The request's sampling, over the model's defaults (store/generation.py), over OpenAI's.

    ``fields`` are the route's own (max_tokens, logprobs, grammar)."""
    d = info.defaults

    def pick(requested: Any, default: Any, fallback: Any) -> Any:
        return requested if requested is not None else default if default is not None else fallback

    return SamplingParams(
        temperature=pick(body.temperature, d.temperature, 1.0),
        top_p=pick(body.top_p, d.top_p, 1.0),
        top_k=max(pick(body.top_k, d.top_k, 0), 0),
        min_p=pick(body.min_p, d.min_p, 0.0),
        repetition_penalty=pick(body.repetition_penalty, d.repetition_penalty, 1.0),
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        stop=body.stop_list(),
        logit_bias=logit_bias(body.logit_bias, info),
        **fields,
    )


_TOKEN_ID = re.compile(r"[0-9]{1,10}")


def logit_bias(raw: dict[str, float] | None, info: ModelInfo) -> tuple[tuple[int, float], ...]:
    if not raw:
        return ()
    out = []
    for key, bias in raw.items():
        # ASCII digits only: str.isdigit() admits '²', and int() of 5,000 digits raises.
        if not _TOKEN_ID.fullmatch(key) or not 0 <= int(key) < info.vocab_size:
            raise InvalidRequest(
                f"logit_bias key '{key[:20]}' is not a token id of this model "
                f"(0 to {info.vocab_size - 1})",
                param="logit_bias",
            )
        out.append((int(key), float(bias)))
    return tuple(out)


def check_choices(count: int, limit: int) -> None:
    if count > limit:
        raise InvalidRequest(
            f"{count} choices were requested; this server allows at most {limit} per request",
            param="n",
        )


async def open_streams(
    engine: TextEngine, jobs: Sequence[tuple[list[int], SamplingParams]], media: Any = None
) -> list[EventStream]:
    """Admit every job (all with the same ``media``: images' pixels) or none."""
    opened: list[EventStream] = []
    try:
        for prompt, params in jobs:
            opened.append(engine.generate(prompt, params, media))
    except BaseException:
        for stream in opened:
            await stream.aclose()
        raise
    return opened


async def guarded(stream: EventStream, stall: float) -> AsyncIterator[GenerationEvent]:
    """The stream's events; a silent engine becomes :class:`EngineTimeout`. Always closes."""
    try:
        while True:
            try:
                async with asyncio.timeout(stall):
                    event = await anext(stream)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise EngineTimeout(
                    f"the engine produced nothing for {stall:g} s; the request was stopped"
                ) from None
            yield event
    finally:
        await stream.aclose()


async def merge(
    streams: list[EventStream], stall: float
) -> AsyncIterator[tuple[int, GenerationEvent]]:
    """Events of all streams as ``(stream index, event)``, in arrival order."""
    if len(streams) == 1:
        async for event in guarded(streams[0], stall):
            yield 0, event
        return
    queue: asyncio.Queue[tuple[int, GenerationEvent | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, stream: EventStream) -> None:
        try:
            async for event in guarded(stream, stall):
                await queue.put((index, event))
        except Exception as exc:
            await queue.put((index, exc))
        finally:
            await queue.put((index, None))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        running = len(tasks)
        while running:
            index, item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def collect(streams: list[EventStream], stall: float) -> list[ChoiceResult]:
    results = [ChoiceResult() for _ in streams]
    async for index, event in merge(streams, stall):
        result = results[index]
        if isinstance(event, Delta):
            result.text += event.text
            result.logprobs.extend(event.logprobs)
        elif isinstance(event, Finish):
            result.finish_reason = event.reason
            result.prompt_tokens = event.prompt_tokens
            result.completion_tokens = event.completion_tokens
    return results


async def unless_disconnected(request: Request, work: Awaitable[T], poll: float = 0.5) -> T:
    """Await ``work``, cancelling it (and raising :class:`ClientGone`) if the client leaves."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientGone
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
