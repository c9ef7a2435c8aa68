"""POST /v1/responses: the agent behind OpenAI's Responses API, streaming or not.

Built-in tools (web_search, code_interpreter, file_search) run here; function tools are the
client's: a call to one ends the response with a ``function_call`` item, and the client
continues with ``previous_response_id`` and a ``function_call_output``. An MCP tool that needs
the user's approval (it has side effects and ``agent_allowed_tools`` does not name it, or its
server's ``require_approval`` says so) is not run: the response ends with an
``mcp_approval_request``, answered by an ``mcp_approval_response`` input item (approve true or
false) with ``previous_response_id``; the approved call runs first, a refused one is reported
to the model as not run. The agent reaches the model through this same server's chat route, in
process (the openai client's own httpx2 with an ASGI transport, no socket).

``store: false`` (OpenAI's meaning: the response is not kept): nothing of the run is written to
the trace store, neither the conversation nor the agent's step traces, so it cannot be continued
with ``previous_response_id`` (the same 404 as an unknown id) nor shown by ``kaiyuan trace``;
the run itself, tools included, is the same.

Errors raised downstream of the conversion to chat messages (the chat route's validation, the
template, the engine) are renamed once, around the run, to the request's own fields:
``input[2].content[1]``, ``instructions``, ``tools[0].parameters``, never ``messages[3]...``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai
from fastapi import APIRouter, Request

from kaiyuan.agent.loop import (
    Agent,
    AnswerEvent,
    ToolCallEvent,
    ToolResultEvent,
    awaiting,
    task_text,
)
from kaiyuan.agent.mcp import SEPARATOR
from kaiyuan.agent.responses import (
    APPROVAL,
    Fields,
    Items,
    approval_answers,
    approval_rule,
    plan_tools,
    response_object,
    to_messages,
    tool_origins,
)
from kaiyuan.engines.base import TextEngine
from kaiyuan.errors import InvalidRequest, KaiyuanError
from kaiyuan.extras import require
from kaiyuan.protocol.openai.common import ErrorBody
from kaiyuan.protocol.openai.responses import (
    OutputItem,
    Response,
    ResponseContentPartEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseFunctionToolCall,
    ResponseLifecycleEvent,
    ResponseOutputItemEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseRequest,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
    ResponseToolCallProgressEvent,
    ToolCall,
)
from kaiyuan.server import shared
from kaiyuan.server.errors import ERROR_RESPONSES, envelope
from kaiyuan.server.routing import ApiRoute
from kaiyuan.server.sse import stream_events

router = APIRouter(tags=["responses"], route_class=ApiRoute)


@router.post(
    "/v1/responses",
    response_model=Response,
    responses={
        **ERROR_RESPONSES,
        200: {"content": {"text/event-stream": {}}, "description": "Response or SSE stream"},
    },
)
async def create_response(body: ResponseRequest, request: Request) -> Any:
    require("agent", "POST /v1/responses")
    state = request.app.state
    # loaded, and can chat
    await state.pool.acquire(body.model, TextEngine, "chat", route="/v1/responses")
    tools, functions, servers = plan_tools(body, state.settings)
    if body.tool_choice == "none":
        tools, functions, servers = [], [], []
    if servers:
        from kaiyuan.agent.mcp import load_tools

        tools += await load_tools(state.settings, servers)
    traces = shared.traces(request)
    history: list[dict[str, Any]] = []
    if body.previous_response_id:
        history = traces.conversation(body.previous_response_id.removeprefix("resp_"))
    messages, origins = to_messages(body.input)
    answers = approval_answers(body.input)
    fields = Fields(origins, previous=len(history))
    if answers:
        _check_answers(answers, history, [t.name for t in tools])
    history += messages
    settings = state.settings
    if body.max_output_tokens is not None:
        settings = settings.model_copy(update={"agent_max_tokens": body.max_output_tokens})
    client = openai.AsyncOpenAI(
        base_url="http://localhost/v1",  # a loopback name: HostCheck serves it
        api_key="internal",
        max_retries=0,
        http_client=httpx2.AsyncClient(
            # an app error becomes a 500 response the agent maps, not an exception here
            transport=httpx2.ASGITransport(app=request.app, raise_app_exceptions=False)
        ),
    )
    agent = Agent(
        client, body.model, tools, settings, traces=traces if body.store else None,
        functions=functions,
        tool_choice=_tool_choice(body.tool_choice), max_tool_calls=body.max_tool_calls,
        temperature=0.2 if body.temperature is None else body.temperature,
        telemetry=state.telemetry,
        needs_approval=approval_rule(body, settings), ask_approval=True,
    )  # fmt: skip
    fields.tools = tool_origins(body, [*agent.tools, *agent.functions])  # as the agent offers
    run_id = traces.start(body.model, task_text(history)) if body.store else uuid.uuid4().hex
    created = time.time()
    decided = {call_id: approve for _, call_id, approve in answers}
    approved = {call_id for call_id, approve in decided.items() if approve}
    run = agent.run(history, instructions=body.instructions, run_id=run_id, approvals=decided)
    events = _renamed(run, fields)
    if body.stream:
        return stream_events(
            _stream(f"resp_{run_id}", body, created, events, client, Items(approved=approved))
        )
    items = Items(approved=approved)
    answer = None
    try:
        async for event in events:
            if isinstance(event, ToolCallEvent):
                items.started(event)
            elif isinstance(event, ToolResultEvent):
                items.finished(event)
            else:
                items.answer(event)
                answer = event
    finally:
        await client.close()
    return response_object(f"resp_{run_id}", body, created, items.items, answer)


async def _renamed(events: AsyncIterator[Any], fields: Fields) -> AsyncIterator[Any]:
    """The run's events; an error it raises names the request's fields (``input[0]``), not
    those of the chat requests the agent made from it (``messages[1]``)."""
    try:
        async for event in events:
            yield event
    except KaiyuanError as exc:
        fields.rename(exc)
        raise


def _check_answers(
    answers: list[tuple[int, str, bool]], history: list[dict[str, Any]], tools: list[str]
) -> None:
    """Each answer names a call the continued response left waiting for approval, of a tool
    this request offers again."""
    named = {c["function"]["name"] for m in history for c in m.get("tool_calls") or []}
    waiting = {call["id"]: call["function"]["name"] for call, _ in awaiting(history, named)}
    for i, call_id, _ in answers:
        name = waiting.get(call_id, "")
        where = f"input[{i}].approval_request_id"
        if SEPARATOR not in name:
            raise InvalidRequest(
                f"no approval request '{APPROVAL}{call_id}' waits for an answer in the "
                "response previous_response_id names",
                param=where,
            )
        if name not in tools:
            label = name.partition(SEPARATOR)[0]
            raise InvalidRequest(
                f"{APPROVAL}{call_id} is a call on MCP server '{label}': offer its tools again "
                f'({{"type": "mcp", "server_label": "{label}"}}) to answer it',
                param=where,
            )


def _tool_choice(choice: Any) -> str | dict[str, Any]:
    if isinstance(choice, dict):
        if choice.get("type") == "function" and isinstance(choice.get("name"), str):
            return {"type": "function", "function": {"name": choice["name"]}}
        return "required"  # a built-in tool type: some tool must be used
    return "auto" if choice == "none" else str(choice)


async def _stream(
    response_id: str,
    body: ResponseRequest,
    created: float,
    events: AsyncIterator[Any],
    client: openai.AsyncOpenAI,
    items: Items,
) -> AsyncIterator[ResponseStreamEvent]:
    positions: dict[str, int] = {}
    start = response_object(response_id, body, created, [], None)
    yield ResponseLifecycleEvent(type="response.created", response=start)
    yield ResponseLifecycleEvent(type="response.in_progress", response=start)
    try:
        async for event in events:
            if isinstance(event, ToolCallEvent):
                item = items.started(event)
                positions[item.id] = index = len(items.items) - 1
                yield _item_event("added", index, item)
                yield _progress(item, "in_progress", index)
            elif isinstance(event, ToolResultEvent):
                item = items.finished(event)
                index = positions[item.id]
                yield _progress(item, "completed", index)
                yield _item_event("done", index, item)
            else:
                for part in _answer_events(items, event):
                    yield part
                final = response_object(response_id, body, created, items.items, event)
                ended = "completed" if final.status == "completed" else "incomplete"
                yield ResponseLifecycleEvent.model_validate(
                    {"type": f"response.{ended}", "response": final}
                )
    except KaiyuanError as exc:
        failed = response_object(response_id, body, created, items.items, None)
        failed.status = "failed"
        failed.error = ErrorBody.model_validate(envelope(exc)["error"])
        yield ResponseLifecycleEvent(type="response.failed", response=failed)
    finally:
        await client.close()


def _progress(item: ToolCall, phase: str, index: int) -> ResponseToolCallProgressEvent:
    """``response.<item type>.in_progress`` or ``.completed``."""
    return ResponseToolCallProgressEvent.model_validate(
        {"type": f"response.{item.type}.{phase}", "output_index": index, "item_id": item.id}
    )


def _answer_events(items: Items, event: AnswerEvent) -> list[ResponseStreamEvent]:
    out: list[ResponseStreamEvent] = []
    for item in items.answer(event):
        index = items.items.index(item)
        if isinstance(item, ResponseOutputMessage):
            empty = item.model_copy(update={"status": "in_progress", "content": []})
            out.append(_item_event("added", index, empty))
            out += _text_events(item.id, index, item.content[0])
        elif not isinstance(item, ResponseFunctionToolCall):  # an approval request, whole
            out.append(_item_event("added", index, item))
        else:
            out += [
                _item_event("added", index, item),
                ResponseFunctionCallArgumentsDoneEvent(
                    output_index=index, item_id=item.id, arguments=item.arguments
                ),
            ]
        out.append(_item_event("done", index, item))
    return out


def _text_events(item_id: str, index: int, part: ResponseOutputText) -> list[ResponseStreamEvent]:
    """A message's one text part, whole: added empty, its text as one delta, done."""
    where = {"output_index": index, "item_id": item_id, "content_index": 0}
    return [
        ResponseContentPartEvent.model_validate(
            {"type": "response.content_part.added", **where,
             "part": part.model_copy(update={"text": ""})}
        ),
        ResponseTextDeltaEvent.model_validate({**where, "delta": part.text}),
        ResponseTextDoneEvent.model_validate({**where, "text": part.text}),
        ResponseContentPartEvent.model_validate(
            {"type": "response.content_part.done", **where, "part": part}
        ),
    ]  # fmt: skip


def _item_event(phase: str, index: int, item: OutputItem) -> ResponseOutputItemEvent:
    return ResponseOutputItemEvent.model_validate(
        {"type": f"response.output_item.{phase}", "output_index": index, "item": item}
    )
