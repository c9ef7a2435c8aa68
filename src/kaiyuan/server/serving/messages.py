"""Anthropic's Messages API on the chat pipeline: a request becomes an OpenAI chat request
(templates, tool-call parsers, the reasoning split, grammars, batching, prefix reuse and the
control-marker guard all apply unchanged), and the run's parsed output becomes a message or
Anthropic's stream of events.

Translation, block by block:
- ``system`` (a string or text blocks) and system-role messages -> one leading system message;
- user ``text``/``image`` blocks -> a user message's parts; ``tool_result`` blocks -> tool
  messages (before the rest of that user turn, where Anthropic puts them);
- assistant ``text`` -> content, ``tool_use`` -> tool calls, ``thinking`` -> reasoning (not
  rendered, as the templates drop it); server-tool results from Anthropic's own tools ->
  left out;
- custom ``tools`` -> functions (Anthropic's server tools are not offered to the model);
  ``tool_choice`` auto/any/tool/none -> auto/required/named/none;
- ``thinking`` enabled/adaptive/disabled -> the template's enable_thinking switch;
- ``output_config.format`` (a JSON schema) -> a grammar-enforced ``response_format``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ValidationError

from kaiyuan.chat.output import Call, Content, Out, Thought
from kaiyuan.config import Settings
from kaiyuan.engines.base import Finish, TextEngine
from kaiyuan.errors import InvalidRequest, KaiyuanError
from kaiyuan.protocol.anthropic import messages as wire
from kaiyuan.protocol.openai.chat import ChatCompletionRequest
from kaiyuan.server.errors import payload, validation_message
from kaiyuan.server.serving import chat
from kaiyuan.server.serving.choices import body_or_499

log = logging.getLogger(__name__)

PATH = "/v1/messages"
PING_EVERY = 10.0  # seconds of engine silence (a long prompt being read) between pings
FRAGMENT = 64  # a tool call's input JSON goes out in pieces of this many characters
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


# --- request -> chat request ---------------------------------------------------------------------
def to_chat(body: wire.CountTokensRequest) -> ChatCompletionRequest:
    """The OpenAI chat request that asks the model what ``body`` asks (a 400 if it cannot)."""
    messages: list[dict[str, Any]] = []
    # The system prompt, and system messages within the conversation (Claude Code's
    # mid-conversation system beta), folded in order into one leading system message: chat
    # templates (Qwen's among them) take a system message only first.
    system = [body.system if isinstance(body.system, str) else _joined(body.system or [])]
    for i, message in enumerate(body.messages):
        if message.role == "system":
            system.append(message.content if isinstance(message.content, str)
                          else _joined([b for b in message.content
                                        if isinstance(b, wire.TextBlock)]))  # fmt: skip
        else:
            messages += _turn(i, message)
    if any(system):
        messages.insert(0, {"role": "system", "content": "\n\n".join(t for t in system if t)})
    request: dict[str, Any] = {"model": body.model, "messages": messages}
    tools = [t for t in body.tools or [] if t.is_custom]
    if tools:
        request["tools"] = [{"type": "function", "function": _function(t)} for t in tools]
    choice = body.tool_choice
    if choice is not None:
        if choice.type != "none" and not tools:
            raise InvalidRequest(f"tool_choice {choice.type} needs tools", param="tool_choice")
        request["tool_choice"] = _tool_choice(choice)
        request["parallel_tool_calls"] = not choice.disable_parallel_tool_use
    if body.thinking is not None:
        request["chat_template_kwargs"] = {"enable_thinking": body.thinking.type != "disabled"}
    output = body.output_config
    if output is not None and output.format is not None:
        schema = {"name": "output", "schema": output.format.schema_}
        request["response_format"] = {"type": "json_schema", "json_schema": schema}
    if isinstance(body, wire.MessagesRequest):
        request["max_tokens"] = body.max_tokens
        for name in ("temperature", "top_p", "top_k"):
            if (value := getattr(body, name)) is not None:
                request[name] = value
        if body.stop_sequences:
            request["stop"] = body.stop_sequences
        if body.metadata is not None and body.metadata.user_id:
            request["user"] = body.metadata.user_id
    try:
        return ChatCompletionRequest.model_validate(request)
    except ValidationError as exc:
        text, _ = validation_message([dict(e) for e in exc.errors()])
        raise InvalidRequest(text) from None


def _joined(blocks: list[wire.TextBlock]) -> str:
    return "\n\n".join(block.text for block in blocks)


def _function(tool: wire.Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema or {}}
    if tool.description:
        function["description"] = tool.description
    return function


def _tool_choice(choice: wire.ToolChoice) -> Any:
    if choice.type == "tool":
        if not choice.name:
            raise InvalidRequest("tool_choice of type tool needs a name", param="tool_choice")
        return {"type": "function", "function": {"name": choice.name}}
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type]


def _turn(index: int, message: wire.MessageParam) -> list[dict[str, Any]]:
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    if message.role == "assistant":
        return [_assistant(message.content)]
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(message.content):
        where = f"messages[{index}].content[{j}]"
        if isinstance(block, wire.TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, wire.ImageBlock):
            parts.append(_image(block, where))
        elif isinstance(block, wire.ToolResultBlock):
            text, images = _result(block, where)
            results.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": text})
            parts += images
        elif isinstance(block, wire.OtherBlock) and block.type in ("document", "search_result"):
            raise InvalidRequest(
                f"{block.type} blocks are not supported here; send their text as a text block",
                param=where,
            )
    if parts:
        results.append({"role": "user", "content": parts})
    return results


def _assistant(blocks: list[Any]) -> dict[str, Any]:
    text = "".join(b.text for b in blocks if isinstance(b, wire.TextBlock))
    reasoning = "".join(b.thinking for b in blocks if isinstance(b, wire.ThinkingBlock))
    calls = [
        {
            "id": b.id,
            "type": "function",
            "function": {"name": b.name, "arguments": json.dumps(b.input, ensure_ascii=False)},
        }
        for b in blocks
        if isinstance(b, wire.ToolUseBlock)
    ]
    out: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        out["tool_calls"] = calls
    if reasoning:
        out["reasoning_content"] = reasoning
    return out


def _image(block: wire.ImageBlock, where: str) -> dict[str, Any]:
    source = block.source
    if isinstance(source, wire.UrlSource):
        return {"type": "image_url", "image_url": {"url": source.url}}
    if source.media_type not in IMAGE_TYPES:
        raise InvalidRequest(
            f"image media_type '{source.media_type[:40]}' is not one of {', '.join(IMAGE_TYPES)}",
            param=f"{where}.source.media_type",
        )
    url = f"data:{source.media_type};base64,{source.data}"
    return {"type": "image_url", "image_url": {"url": url}}


def _result(block: wire.ToolResultBlock, where: str) -> tuple[str, list[dict[str, Any]]]:
    """A tool result's text, and its images (which travel in the user turn after it)."""
    content = block.content
    if content is None or isinstance(content, str):
        text, images = content or "", []
    else:
        text = "\n".join(p.text for p in content if isinstance(p, wire.TextBlock))
        images = [
            _image(p, f"{where}.content[{k}]")
            for k, p in enumerate(content)
            if isinstance(p, wire.ImageBlock)
        ]
    return (f"Error: {text}" if block.is_error else text), images


# --- a run -> the message, or its events ---------------------------------------------------------
def _tool_id(call: Call) -> str:
    return "toolu_" + call.id.removeprefix("call_")


def _input(call: Call) -> dict[str, Any]:
    try:
        value = json.loads(call.arguments or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _stop(finish: Finish, called: bool) -> tuple[wire.StopReason, str | None]:
    if finish.reason == "length":
        return "max_tokens", None
    if called:
        return "tool_use", None
    if finish.stop_sequence is not None:
        return "stop_sequence", finish.stop_sequence
    return "end_turn", None


def _usage(finish: Finish) -> wire.Usage:
    return wire.Usage(
        input_tokens=finish.prompt_tokens - finish.cached_tokens,
        output_tokens=finish.completion_tokens,
        cache_read_input_tokens=finish.cached_tokens,
    )


def _message_id() -> str:
    return "msg_" + secrets.token_hex(12)


async def serve(
    engine: TextEngine, body: wire.MessagesRequest, settings: Settings, request: Request
) -> wire.Message | Response:
    run = await chat.start(engine, to_chat(body), settings, cap=True)
    if body.stream:
        return _stream_response(_events(run, body.model, settings.stall_timeout))
    return await body_or_499(request, _message(run, body.model, settings.stall_timeout))


async def _message(run: chat.Run, model: str, stall: float) -> wire.Message:
    blocks: list[wire.TextContent | wire.ThinkingContent | wire.ToolUseContent] = []
    finish: Finish | None = None
    async for _, items, event in run.events(stall):
        for item in items:
            last = blocks[-1] if blocks else None
            if isinstance(item, Content):
                if isinstance(last, wire.TextContent):
                    last.text += item.text
                else:
                    blocks.append(wire.TextContent(text=item.text))
            elif isinstance(item, Thought):
                if isinstance(last, wire.ThinkingContent):
                    last.thinking += item.text
                else:
                    blocks.append(wire.ThinkingContent(thinking=item.text))
            else:
                blocks.append(wire.ToolUseContent(id=_tool_id(item), name=item.name,
                                                  input=_input(item)))  # fmt: skip
        if isinstance(event, Finish):
            finish = event
    assert finish is not None  # every run ends with one
    reason, sequence = _stop(finish, run.outputs[0].calls > 0)
    return wire.Message(
        id=_message_id(),
        model=model,
        content=blocks,
        stop_reason=reason,
        stop_sequence=sequence,
        usage=_usage(finish),
    )


def _kind(item: Out) -> str:
    return "text" if isinstance(item, Content) else "thinking" if isinstance(item, Thought) else ""


async def _events(run: chat.Run, model: str, stall: float) -> AsyncIterator[BaseModel]:
    """Anthropic's order: message_start, ping, per block start/delta.../stop, message_delta
    (stop reason, usage), message_stop."""
    start = wire.Message(
        id=_message_id(),
        model=model,
        content=[],
        stop_reason=None,
        usage=wire.Usage(input_tokens=run.prompt_tokens, output_tokens=0),
    )
    yield wire.MessageStart(message=start)
    yield wire.Ping()
    index, open_kind = -1, None  # the block being written and its kind ("text", "thinking")
    finish: Finish | None = None
    async for item_or_finish in _with_pings(_items(run, stall)):
        if isinstance(item_or_finish, wire.Ping):
            yield item_or_finish
            continue
        if isinstance(item_or_finish, Finish):
            finish = item_or_finish  # the last item: _items ends after it
            continue
        item = item_or_finish
        kind = _kind(item)
        if kind and kind == open_kind:
            yield _delta(index, item)
            continue
        if open_kind is not None:
            yield wire.BlockStop(index=index)
        index += 1
        open_kind = kind or None
        if isinstance(item, Call):
            block = wire.ToolUseContent(id=_tool_id(item), name=item.name, input={})
            yield wire.BlockStart(index=index, content_block=block)
            text = json.dumps(_input(item), ensure_ascii=False)
            for k in range(0, len(text), FRAGMENT):
                delta = wire.InputJsonDelta(partial_json=text[k : k + FRAGMENT])
                yield wire.BlockDelta(index=index, delta=delta)
            yield wire.BlockStop(index=index)
            continue
        empty = wire.TextContent(text="") if kind == "text" else wire.ThinkingContent(thinking="")
        yield wire.BlockStart(index=index, content_block=empty)
        yield _delta(index, item)
    assert finish is not None
    if open_kind == "thinking":
        yield wire.BlockDelta(index=index, delta=wire.SignatureDelta(signature=""))
    if open_kind is not None:
        yield wire.BlockStop(index=index)
    elif index < 0:  # nothing was said: one empty text block, as Anthropic's API answers
        yield wire.BlockStart(index=0, content_block=wire.TextContent(text=""))
        yield wire.BlockStop(index=0)
    reason, sequence = _stop(finish, run.outputs[0].calls > 0)
    body = wire.MessageDeltaBody(stop_reason=reason, stop_sequence=sequence)
    yield wire.MessageDelta(delta=body, usage=_usage(finish))
    yield wire.MessageStop()


def _delta(index: int, item: Out) -> wire.BlockDelta:
    if isinstance(item, Thought):
        return wire.BlockDelta(index=index, delta=wire.ThinkingDelta(thinking=item.text))
    assert isinstance(item, Content)
    return wire.BlockDelta(index=index, delta=wire.TextDelta(text=item.text))


async def _items(run: chat.Run, stall: float) -> AsyncIterator[Out | Finish]:
    async for _, items, event in run.events(stall):
        for item in items:
            yield item
        if isinstance(event, Finish):
            yield event
            return  # one choice: its finish is the end


async def _with_pings(source: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """``source``'s items, with a Ping whenever it is silent for PING_EVERY seconds."""
    pending: asyncio.Future[Any] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(source))
            done, _ = await asyncio.wait({pending}, timeout=PING_EVERY)
            if not done:
                yield wire.Ping()
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield item
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()


def _stream_response(events: AsyncIterator[BaseModel]) -> StreamingResponse:
    async def frames() -> AsyncIterator[bytes]:
        try:
            async for event in events:
                yield _frame(event.model_dump_json(), event.type)  # type: ignore[attr-defined]
        except KaiyuanError as exc:
            log.warning("stream ended by %s: %s", type(exc).__name__, exc.message)
            yield _error_frame(exc.status, exc.message)
        except Exception:
            log.exception("stream failed")
            yield _error_frame(500, "the server had an internal error; see its log")

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _frame(data: str, kind: str) -> bytes:
    return f"event: {kind}\ndata: {data}\n\n".encode()


def _error_frame(status: int, message: str) -> bytes:
    body = payload(PATH, status, message, "server_error")
    return _frame(json.dumps(body, ensure_ascii=False), "error")
