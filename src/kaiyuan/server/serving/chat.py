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
from kaiyuan.engines.base import Delta, EventStream, GenerationEvent, TextEngine, TokenLogprob
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
    run = await start(engine, body, settings)
    head = Head.new("chatcmpl", body.model)
    stall = settings.stall_timeout
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse.stream_response(_chunks(run, head, stall, include_usage))
    return await body_or_499(request, _completion(run, head, stall, body.logprobs))


@dataclass(slots=True)
class Run:
    """A chat request admitted to its engine: per choice, its event stream and the splitter
    of its text into answer, reasoning and tool calls. Every surface that chats (OpenAI,
    Anthropic, Ollama) starts one and writes its events in its own wire shape."""

    opened: list[EventStream]
    outputs: list[ChoiceOutput]
    prompt_tokens: int

    async def events(self, stall: float) -> AsyncIterator[tuple[int, list[Out], GenerationEvent]]:
        """(choice, what its new text became, the engine's event) as they come."""
        async for index, event in streams.merge(self.opened, stall):
            output = self.outputs[index]
            items = output.feed(event.text) if isinstance(event, Delta) else output.finish()
            yield index, items, event

    def finish_reason(self, index: int, engine_reason: str) -> Any:
        return (
            "tool_calls" if self.outputs[index].calls and engine_reason == "stop" else engine_reason
        )


async def start(
    engine: TextEngine, body: ChatCompletionRequest, settings: Settings, *, cap: bool = False
) -> Run:
    """Prompt, grammar and sampling for ``body``; every choice admitted (or none). ``cap``:
    a max_tokens past the context's room is cut to it (see resolve_max_tokens)."""
    check_choices(body.n, settings.max_n)
    # Rendering, grammar compilation and tokenizing are CPU work: never on the event loop.
    prompt, constraint = await asyncio.to_thread(_prepare, engine, body, settings)
    tokens, media = await _encode(engine, prompt, settings)
    max_tokens = resolve_max_tokens(body.requested_max_tokens(), len(tokens), engine.info, cap=cap)
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
    return Run(opened, outputs, len(tokens))


async def count_tokens(engine: TextEngine, body: ChatCompletionRequest, settings: Settings) -> int:
    """The prompt tokens ``body`` would take (its images included), generating nothing."""
    prompt = await asyncio.to_thread(
        build, engine.info, body, parser=settings.tool_parsers.get(engine.info.id)
    )
    tokens, _ = await _encode(engine, prompt, settings)
    return len(tokens)


def _prepare(
    engine: TextEngine, body: ChatCompletionRequest, settings: Settings
) -> tuple[Prompt, str | None]:
    """The rendered prompt and the output grammar (in a worker thread)."""
    for i, tool in enumerate(body.tools or []):  # rendered into the prompt: bounded first
        if tool.function.parameters is not None:
            bounds.check(tool.function.parameters, f"tools[{i}].function.parameters")
    prompt = build(engine.info, body, parser=settings.tool_parsers.get(engine.info.id))
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


async def _completion(run: Run, head: Head, stall: float, with_logprobs: bool) -> ChatCompletion:
    choices = [_Choice() for _ in run.opened]
    totals = Totals(per_prompt=len(run.opened))
    async for index, items, event in run.events(stall):
        choice = choices[index]
        choice.add(items)
        if isinstance(event, Delta):
            choice.logprobs.extend(event.logprobs)
        else:
            choice.finish_reason = run.finish_reason(index, event.reason)
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


async def _chunks(run: Run, head: Head, stall: float, include_usage: bool) -> AsyncIterator[bytes]:
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

    count = len(run.opened)
    texts = [sse.Template(chunk_model(i, ChoiceDelta(content=sse.HOLE))) for i in range(count)]
    for i in range(count):
        yield chunk(i, ChoiceDelta(role="assistant", content=""))
    pending: dict[int, list[TokenLogprob]] = {}  # logprobs wait for the next chunk to carry them
    totals = Totals(per_prompt=count)
    async for index, items, event in run.events(stall):
        if isinstance(event, Delta) and event.logprobs:
            pending.setdefault(index, []).extend(event.logprobs)
        for item in items:
            if type(item) is Content and index not in pending:  # the hot path: a token's text
                yield texts[index].fill(item.text)
                continue
            for delta in _deltas(item):
                yield chunk(index, delta, pending.pop(index, None))
        if not isinstance(event, Delta):
            totals.add(index, event)
            finish = run.finish_reason(index, event.reason)
            yield chunk(index, ChoiceDelta(), pending.pop(index, None), finish)
    if include_usage:
        usage = totals.usage(details=True)
        yield sse.chunk(ChatCompletionChunk(**{**base, "usage": usage}, choices=[]))
