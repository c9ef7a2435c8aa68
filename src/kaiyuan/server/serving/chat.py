"""Chat completions: a request -> prompt, grammar and sampling -> choices, a body or chunks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import Request, Response

from kaiyuan.chat import bounds, grammar, images
from kaiyuan.chat.output import Call, ChoiceOutput, Content, Out, Thought
from kaiyuan.chat.prompt import Prompt, build
from kaiyuan.chat.toolcalls import parser_class
from kaiyuan.config import Settings
from kaiyuan.engines.base import Delta, EventStream, TextEngine, TokenLogprob
from kaiyuan.protocol.openai.chat import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatTokenLogprob,
    ChoiceDelta,
    ChoiceLogprobs,
    ChunkChoice,
    ChunkFunction,
    ChunkToolCall,
    NamedToolChoice,
    ResponseToolCall,
    ResponseToolCallFunction,
    TopLogprob,
)
from kaiyuan.server import sse
from kaiyuan.server.serving import streams
from kaiyuan.server.serving.choices import Head, Totals, body_or_499
from kaiyuan.server.serving.sampling import (
    check_choices,
    resolve_max_tokens,
    sampling_params,
)

FRAGMENT = 24  # streamed tool-call arguments go out in pieces of this many characters


async def serve(
    engine: TextEngine, body: ChatCompletionRequest, settings: Settings, request: Request
) -> ChatCompletion | Response:
    check_choices(body.n, settings.max_n)
    # Rendering, grammar compilation and tokenizing are CPU work: never on the event loop.
    prompt, constraint = await asyncio.to_thread(_prepare, engine, body, settings)
    tokens, media = await _encode(engine, prompt, settings)
    max_tokens = resolve_max_tokens(body.requested_max_tokens(), len(tokens), engine.info)
    base = sampling_params(
        body,
        engine.info,
        settings.prompt_cache,
        max_tokens=max_tokens,
        logprobs=(body.top_logprobs or 0) if body.logprobs else None,
        grammar=constraint,
    )
    jobs = [
        (tokens, base if body.seed is None else replace(base, seed=body.seed + i))
        for i in range(body.n)
    ]
    opened = await streams.open_streams(engine, jobs, media)
    schemas = {t.function.name: t.function.parameters or {} for t in body.tools or []}
    outputs = [
        ChoiceOutput(
            parser=prompt.parser if prompt.tools else None,
            schemas=schemas,
            thinking_open=prompt.thinking_open,
        )
        for _ in opened
    ]
    head = Head.new("chatcmpl", body.model)
    stall = settings.stall_timeout
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse.stream_response(_chunks(opened, outputs, head, stall, include_usage))
    return await body_or_499(request, _completion(opened, outputs, head, stall, body.logprobs))


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


# --- assembly ------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Choice:
    content: str = ""
    reasoning: str = ""
    calls: list[Call] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: Any = None

    def add(self, items: list[Out]) -> None:
        for item in items:
            if isinstance(item, Content):
                self.content += item.text
            elif isinstance(item, Thought):
                self.reasoning += item.text
            else:
                self.calls.append(item)

    def message(self) -> AssistantMessage:
        calls = [
            ResponseToolCall(
                id=c.id, function=ResponseToolCallFunction(name=c.name, arguments=c.arguments)
            )
            for c in self.calls
        ]
        return AssistantMessage(
            content=self.content if (self.content or not self.calls) else None,
            reasoning_content=self.reasoning or None,
            tool_calls=calls or None,
        )


def _finish_reason(engine_reason: str, output: ChoiceOutput) -> Any:
    return "tool_calls" if output.calls and engine_reason == "stop" else engine_reason


def _logprobs(items: list[TokenLogprob]) -> ChoiceLogprobs:
    return ChoiceLogprobs(
        content=[
            ChatTokenLogprob(
                token=lp.token,
                logprob=lp.logprob,
                bytes=list(lp.bytes),
                top_logprobs=[
                    TopLogprob(token=t.token, logprob=t.logprob, bytes=list(t.bytes))
                    for t in lp.top
                ],
            )
            for lp in items
        ]
    )


async def _completion(
    opened: list[EventStream],
    outputs: list[ChoiceOutput],
    head: Head,
    stall: float,
    with_logprobs: bool,
) -> ChatCompletion:
    choices = [_Choice() for _ in opened]
    totals = Totals(per_prompt=len(opened))
    async for index, event in streams.merge(opened, stall):
        choice, output = choices[index], outputs[index]
        if isinstance(event, Delta):
            choice.add(output.feed(event.text))
            choice.logprobs.extend(event.logprobs)
        else:
            choice.add(output.finish())
            choice.finish_reason = _finish_reason(event.reason, output)
            totals.add(index, event)
    return ChatCompletion(
        id=head.id,
        created=head.created,
        model=head.model,
        choices=[
            ChatChoice(
                index=i,
                message=c.message(),
                finish_reason=c.finish_reason,
                logprobs=_logprobs(c.logprobs) if with_logprobs else None,
            )
            for i, c in enumerate(choices)
        ],
        usage=totals.usage(details=True),
    )


def _deltas(item: Out) -> list[ChoiceDelta]:
    if isinstance(item, Content):
        return [ChoiceDelta(content=item.text)]
    if isinstance(item, Thought):
        return [ChoiceDelta(reasoning_content=item.text)]
    first = ChunkToolCall(
        index=item.index,
        id=item.id,
        type="function",
        function=ChunkFunction(name=item.name, arguments=""),
    )
    args = item.arguments
    pieces = [
        ChunkToolCall(index=item.index, function=ChunkFunction(arguments=args[i : i + FRAGMENT]))
        for i in range(0, len(args), FRAGMENT)
    ]
    return [ChoiceDelta(tool_calls=[call]) for call in [first, *pieces]]


async def _chunks(
    opened: list[EventStream],
    outputs: list[ChoiceOutput],
    head: Head,
    stall: float,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    base = head.stream_fields("chat.completion.chunk", include_usage)

    def chunk_model(
        index: int,
        delta: ChoiceDelta,
        logprobs: list[TokenLogprob] | None = None,
        finish: Any = None,
    ) -> ChatCompletionChunk:
        choice = ChunkChoice(
            index=index,
            delta=delta,
            logprobs=_logprobs(logprobs) if logprobs else None,
            finish_reason=finish,
        )
        return ChatCompletionChunk(**base, choices=[choice])

    def chunk(
        index: int,
        delta: ChoiceDelta,
        logprobs: list[TokenLogprob] | None = None,
        finish: Any = None,
    ) -> bytes:
        return sse.chunk(chunk_model(index, delta, logprobs, finish))

    texts = [
        sse.Template(chunk_model(i, ChoiceDelta(content=sse.HOLE))) for i in range(len(opened))
    ]
    for i in range(len(opened)):
        yield chunk(i, ChoiceDelta(role="assistant", content=""))
    pending: dict[int, list[TokenLogprob]] = {}  # logprobs wait for the next chunk to carry them
    totals = Totals(per_prompt=len(opened))
    async for index, event in streams.merge(opened, stall):
        output = outputs[index]
        if isinstance(event, Delta):
            if event.logprobs:
                pending.setdefault(index, []).extend(event.logprobs)
            items = output.feed(event.text)
        else:
            items = output.finish()
        for item in items:
            if type(item) is Content and index not in pending:  # the hot path: a token's text
                yield texts[index].fill(item.text)
                continue
            for delta in _deltas(item):
                yield chunk(index, delta, pending.pop(index, None))
        if not isinstance(event, Delta):
            totals.add(index, event)
            finish = _finish_reason(event.reason, output)
            yield chunk(index, ChoiceDelta(), pending.pop(index, None), finish)
    if include_usage:
        usage = totals.usage(details=True)
        yield sse.chunk(ChatCompletionChunk(**{**base, "usage": usage}, choices=[]))
