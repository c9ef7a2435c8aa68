"""POST /v1/chat/completions: text, tools, structured output and reasoning."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import APIRouter, Request, Response

from kaiyuan.chat import bounds, grammar, images
from kaiyuan.chat.output import Call, ChoiceOutput, Content, Out, Thought
from kaiyuan.chat.prompt import Prompt, build
from kaiyuan.chat.toolcalls import parser_class
from kaiyuan.config import Settings
from kaiyuan.engines.base import Delta, EventStream, TextEngine, TokenLogprob
from kaiyuan.protocol.openai.chat import ChatCompletion, ChatCompletionRequest, NamedToolChoice
from kaiyuan.server import generation as gen
from kaiyuan.server import sse
from kaiyuan.server.errors import ERROR_RESPONSES
from kaiyuan.server.routing import ApiRoute

router = APIRouter(tags=["chat"], route_class=ApiRoute)
FRAGMENT = 24  # streamed tool-call arguments go out in pieces of this many characters


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={
        **ERROR_RESPONSES,
        200: {"content": {"text/event-stream": {}}, "description": "Completion or SSE stream"},
    },
)
async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Any:
    state = request.app.state
    engine = await state.pool.acquire(body.model, TextEngine, "chat", route="/v1/chat/completions")
    gen.check_choices(body.n, state.settings.max_n)
    # Rendering, grammar compilation and tokenizing are CPU work: never on the event loop.
    prompt, constraint = await asyncio.to_thread(_prepare, engine, body, state.settings)
    tokens, media = await _encode(engine, prompt, state.settings)
    max_tokens = gen.resolve_max_tokens(body.requested_max_tokens(), len(tokens), engine.info)
    base = gen.sampling_params(
        body,
        engine.info,
        max_tokens=max_tokens,
        logprobs=(body.top_logprobs or 0) if body.logprobs else None,
        grammar=constraint,
    )
    jobs = [
        (tokens, base if body.seed is None else replace(base, seed=body.seed + i))
        for i in range(body.n)
    ]
    streams = await gen.open_streams(engine, jobs, media)
    meta: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "created": int(time.time()),
        "model": body.model,
    }
    schemas = {t.function.name: t.function.parameters or {} for t in body.tools or []}
    outputs = [
        ChoiceOutput(
            parser=prompt.parser if prompt.tools else None,
            schemas=schemas,
            thinking_open=prompt.thinking_open,
        )
        for _ in streams
    ]
    stall = state.settings.stall_timeout
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse.stream_response(_chunks(streams, outputs, meta, stall, include_usage))
    try:
        choices = await gen.unless_disconnected(request, _collect(streams, outputs, stall))
    except gen.ClientGone:
        return Response(status_code=499)
    return _completion(choices, meta, with_logprobs=body.logprobs)


def _prepare(
    engine: TextEngine, body: ChatCompletionRequest, settings: Settings
) -> tuple[Prompt, str | None]:
    """The rendered prompt and the output grammar (in a worker thread)."""
    for i, tool in enumerate(body.tools or []):  # rendered into the prompt: bounded first
        if tool.function.parameters is not None:
            bounds.check(tool.function.parameters, f"tools[{i}].function.parameters")
    prompt = build(engine.info, body, parser=settings.tool_parsers.get(body.model))
    return prompt, _grammar(body, prompt)


async def _encode(engine: TextEngine, prompt: Prompt, settings: Settings) -> tuple[list[int], Any]:
    """The prompt's tokens, and for images the pixels the engine's processor made of them."""
    if not prompt.images:
        return await asyncio.to_thread(engine.encode, prompt.text, [])
    limits = images.Limits(
        max_images=settings.max_images,
        max_bytes=settings.max_image_bytes,
        max_pixels=settings.max_image_pixels,
        timeout=settings.image_fetch_timeout,
    )
    capabilities = ", ".join(engine.info.capabilities)
    loaded = await images.load(list(prompt.images), limits, capabilities=capabilities)
    return await asyncio.to_thread(engine.encode, prompt.text, loaded)


def _grammar(body: ChatCompletionRequest, prompt: Prompt) -> str | None:
    choice = body.effective_tool_choice()
    if body.tools and (choice == "required" or isinstance(choice, NamedToolChoice)):
        named = choice.function.name if isinstance(choice, NamedToolChoice) else None
        indexed = [(i, t) for i, t in enumerate(body.tools) if named in (None, t.function.name)]
        for i, tool in indexed:  # i: the index in the request, for the error's param
            if tool.function.parameters is not None:
                grammar.check_schema(tool.function.parameters, f"tools[{i}].function.parameters")
        tools = [t for _, t in indexed]
        return grammar.for_calls(
            parser_class(prompt.parser).syntax,
            [(t.function.name, t.function.parameters or {"type": "object"}) for t in tools],
            parallel=body.parallel_tool_calls and not isinstance(choice, NamedToolChoice),
        )
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object" or fmt.json_schema is None:
        return grammar.json_object()
    return grammar.for_schema(fmt.json_schema.schema_, "response_format.json_schema.schema")


@dataclass(slots=True)
class _Choice:
    content: str = ""
    reasoning: str = ""
    calls: list[Call] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def add(self, items: list[Out]) -> None:
        for item in items:
            if isinstance(item, Content):
                self.content += item.text
            elif isinstance(item, Thought):
                self.reasoning += item.text
            else:
                self.calls.append(item)


async def _collect(
    streams: list[EventStream], outputs: list[ChoiceOutput], stall: float
) -> list[_Choice]:
    choices = [_Choice() for _ in streams]
    async for index, event in gen.merge(streams, stall):
        choice, output = choices[index], outputs[index]
        if isinstance(event, Delta):
            choice.add(output.feed(event.text))
            choice.logprobs.extend(event.logprobs)
        else:
            choice.add(output.finish())
            choice.finish_reason = _finish_reason(event.reason, output)
            choice.prompt_tokens = event.prompt_tokens
            choice.completion_tokens = event.completion_tokens
            choice.cached_tokens = event.cached_tokens
    return choices


def _finish_reason(engine_reason: str, output: ChoiceOutput) -> str:
    return "tool_calls" if output.calls and engine_reason == "stop" else engine_reason


def _logprobs(items: list[TokenLogprob]) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": lp.token,
                "logprob": lp.logprob,
                "bytes": list(lp.bytes),
                "top_logprobs": [
                    {"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes)} for t in lp.top
                ],
            }
            for lp in items
        ]
    }


def _tool_calls(calls: list[Call]) -> list[dict[str, Any]] | None:
    if not calls:
        return None
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]


def _completion(
    choices: list[_Choice], meta: dict[str, Any], *, with_logprobs: bool
) -> ChatCompletion:
    prompt_tokens = choices[0].prompt_tokens
    completion_tokens = sum(c.completion_tokens for c in choices)
    return ChatCompletion.model_validate(
        {
            **meta,
            "choices": [
                {
                    "index": i,
                    "message": {
                        "role": "assistant",
                        "content": c.content if (c.content or not c.calls) else None,
                        "reasoning_content": c.reasoning or None,
                        "tool_calls": _tool_calls(c.calls),
                    },
                    "finish_reason": c.finish_reason,
                    "logprobs": _logprobs(c.logprobs) if with_logprobs else None,
                }
                for i, c in enumerate(choices)
            ],
            "usage": usage(prompt_tokens, completion_tokens, choices[0].cached_tokens),
        }
    )


def usage(prompt: int, completion: int, cached: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def _delta(item: Out) -> list[dict[str, Any]]:
    if isinstance(item, Content):
        return [{"content": item.text}]
    if isinstance(item, Thought):
        return [{"reasoning_content": item.text}]
    first = {
        "index": item.index,
        "id": item.id,
        "type": "function",
        "function": {"name": item.name, "arguments": ""},
    }
    pieces = [item.arguments[i : i + FRAGMENT] for i in range(0, len(item.arguments), FRAGMENT)]
    return [{"tool_calls": [first]}] + [
        {"tool_calls": [{"index": item.index, "function": {"arguments": piece}}]}
        for piece in pieces
    ]


async def _chunks(
    streams: list[EventStream],
    outputs: list[ChoiceOutput],
    meta: dict[str, Any],
    stall: float,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    head = {**meta, "object": "chat.completion.chunk"}
    if include_usage:
        head["usage"] = None

    def chunk(index: int, delta: dict[str, Any], **extra: Any) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}
        choice.update(extra)
        return sse.event({**head, "choices": [choice]})

    for i in range(len(streams)):
        yield chunk(i, {"role": "assistant", "content": ""})
    pending: dict[int, list[TokenLogprob]] = {}  # logprobs wait for the next chunk to carry them
    prompt_tokens = completion_tokens = cached_tokens = 0
    async for index, event in gen.merge(streams, stall):
        output = outputs[index]
        if isinstance(event, Delta):
            pending.setdefault(index, []).extend(event.logprobs)
            items = output.feed(event.text)
        else:
            items = output.finish()
        for item in items:
            for delta in _delta(item):
                lps = pending.pop(index, None)
                extra = {"logprobs": _logprobs(lps)} if lps else {}
                yield chunk(index, delta, **extra)
        if not isinstance(event, Delta):
            prompt_tokens = event.prompt_tokens
            completion_tokens += event.completion_tokens
            cached_tokens = cached_tokens or event.cached_tokens
            lps = pending.pop(index, None)
            extra = {"logprobs": _logprobs(lps)} if lps else {}
            yield chunk(index, {}, finish_reason=_finish_reason(event.reason, output), **extra)
    if include_usage:
        totals = usage(prompt_tokens, completion_tokens, cached_tokens)
        yield sse.event({**head, "choices": [], "usage": totals})
