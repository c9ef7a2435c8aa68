"""The Responses API's shapes around the agent loop: which tools a request enables (and which
MCP calls need the user's approval), its input as chat messages (and the request's own names
for the chat fields, for errors) with the user's answers to approval requests, and the loop's
events as output items (web_search_call, code_interpreter_call, file_search_call, mcp_call,
function_call, mcp_approval_request, message with url_citation annotations) and the final
response object."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kaiyuan.agent.loop import AnswerEvent, ToolCallEvent, ToolResultEvent
from kaiyuan.agent.mcp import SEPARATOR
from kaiyuan.config import Settings
from kaiyuan.errors import InvalidRequest, KaiyuanError
from kaiyuan.protocol.openai.responses import (
    ActionOpenPage,
    ActionSearch,
    CodeInterpreterLogs,
    FileSearchResult,
    IncompleteDetails,
    IncompleteReason,
    McpApprovalRequest,
    McpCall,
    OutputItem,
    Response,
    ResponseCodeInterpreterToolCall,
    ResponseFileSearchToolCall,
    ResponseFunctionToolCall,
    ResponseFunctionWebSearch,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseRequest,
    ResponseStatus,
    ResponseUsage,
    ToolCall,
    UrlCitation,
)
from kaiyuan.tools.base import Tool, builtin

# Responses tool types -> kaiyuan's built-in tools (web search also opens pages)
BUILTIN = {
    "web_search": ("search", "fetch"),
    "web_search_preview": ("search", "fetch"),
    "code_interpreter": ("code",),
    "file_search": ("files",),
}
ITEM_TYPE = {  # MCP tools (SERVER__TOOL) become mcp_call items
    "search": "web_search_call", "fetch": "web_search_call",
    "code": "code_interpreter_call", "files": "file_search_call",
}  # fmt: skip
PREFIX = {"web_search_call": "ws", "code_interpreter_call": "ci", "file_search_call": "fs",
          "mcp_call": "mcp"}  # fmt: skip
APPROVAL = "mcpr_"  # an approval request's id: this prefix and the call's id


def plan_tools(
    body: ResponseRequest, settings: Settings
) -> tuple[list[Tool], list[dict[str, Any]], list[str]]:
    """Built-in tools to run here, the client's function tools (as chat tool specs), and the
    configured MCP servers the request names (by ``server_label``; a request cannot bring its
    own server URL, which could point anywhere)."""
    tools: dict[str, Tool] = {}
    functions: list[dict[str, Any]] = []
    servers: list[str] = []
    for i, spec in enumerate(body.tools or []):
        extra = spec.model_extra or {}
        if spec.type == "mcp":
            label = extra.get("server_label")
            server = settings.mcp_servers.get(label) if isinstance(label, str) else None
            if server is None or extra.get("server_url") not in (None, server.url):
                raise InvalidRequest(
                    "an mcp tool must name a server configured in kaiyuan (mcp_servers) by "
                    f"server_label; configured: {', '.join(settings.mcp_servers) or 'none'}",
                    param=f"tools[{i}].server_label",
                )
            _approval_setting(extra.get("require_approval"), i)
            servers.append(str(label))
        elif spec.type in BUILTIN:
            for tool_name in BUILTIN[spec.type]:
                tools[tool_name] = builtin(tool_name)
        elif spec.type == "function":
            name = extra.get("name")
            if not isinstance(name, str) or not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name):
                raise InvalidRequest("a function tool needs a name", param=f"tools[{i}].name")
            if name in tools or any(f["function"]["name"] == name for f in functions):
                raise InvalidRequest(f"tool '{name}' is defined twice", param=f"tools[{i}].name")
            function = {"name": name, "parameters": extra.get("parameters") or {"type": "object"}}
            if extra.get("description"):
                function["description"] = extra["description"]
            functions.append({"type": "function", "function": function})
        else:
            raise InvalidRequest(
                f"tool type '{spec.type}' is not supported; kaiyuan offers web_search, "
                "code_interpreter, file_search, mcp and function",
                param=f"tools[{i}].type",
            )
    return list(tools.values()), functions, servers


def _approval_setting(value: Any, i: int) -> None:
    """An mcp tool's ``require_approval``: "always", "never", or {"always"|"never":
    {"tool_names": [...]}}, as OpenAI takes it; absent, kaiyuan's rule applies."""
    if value is None or value in ("always", "never"):
        return
    if isinstance(value, dict) and set(value) <= {"always", "never"}:
        lists = [v.get("tool_names") if isinstance(v, dict) else None for v in value.values()]
        if all(isinstance(n, list) and all(isinstance(x, str) for x in n) for n in lists):
            return
    raise InvalidRequest(
        'require_approval is "always", "never" or {"always"|"never": {"tool_names": [...]}}',
        param=f"tools[{i}].require_approval",
    )


def approval_rule(body: ResponseRequest, settings: Settings) -> Callable[[Tool], bool]:
    """Whether a call of a tool needs the user's approval: as its MCP server's
    ``require_approval`` says, else kaiyuan's rule (it has side effects and
    agent_allowed_tools does not name it), which also decides for a tool that neither list of
    a {"always"|"never": {"tool_names": [...]}} names. Built-in tools have no side effects."""
    by_server: dict[str, Any] = {}
    for spec in body.tools or []:
        extra = spec.model_extra or {}
        if spec.type == "mcp":
            by_server[str(extra.get("server_label"))] = extra.get("require_approval")

    def needs(tool: Tool) -> bool:
        label, _, name = tool.name.partition(SEPARATOR)
        setting = by_server.get(label) if name else None
        if setting in ("always", "never"):
            return setting == "always"
        if isinstance(setting, dict):
            for answer in ("never", "always"):
                if name in (setting.get(answer) or {}).get("tool_names", []):
                    return answer == "always"
        return tool.side_effects and tool.name not in settings.agent_allowed_tools

    return needs


def approval_answers(value: str | list[dict[str, Any]]) -> list[tuple[int, str, bool]]:
    """The input's ``mcp_approval_response`` items: (index, the call's id, approved)."""
    answers: list[tuple[int, str, bool]] = []
    for i, item in enumerate(value if isinstance(value, list) else []):
        if item.get("type") != "mcp_approval_response":
            continue
        request = item.get("approval_request_id")
        if not isinstance(request, str) or not request.startswith(APPROVAL):
            raise InvalidRequest(
                "an mcp_approval_response needs the approval_request_id of an "
                "mcp_approval_request (mcpr_...)",
                param=f"input[{i}].approval_request_id",
            )
        if not isinstance(item.get("approve"), bool):
            raise InvalidRequest("approve is true or false", param=f"input[{i}].approve")
        answers.append((i, request.removeprefix(APPROVAL), item["approve"]))
    return answers


@dataclass(slots=True)
class Origin:
    """The input items one chat message was made from: ``kind`` is the item type ("text" when
    the input is a string); an assistant message gathering consecutive function_call items
    has one item per tool call (``items[t]`` made ``tool_calls[t]``)."""

    kind: str
    items: list[int]


def to_messages(value: str | list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Origin]]:
    """Responses input (a string or input items) as chat messages, with where each came from."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}], [Origin("text", [])]
    messages: list[dict[str, Any]] = []
    origins: list[Origin] = []
    for i, item in enumerate(value):
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise InvalidRequest("a message needs a role", param=f"input[{i}].role")
            messages.append({"role": role, "content": _content(item.get("content"), i)})
            origins.append(Origin(kind, [i]))
        elif kind == "function_call":
            _call_id(item, i)
            function = {"name": item.get("name"), "arguments": item.get("arguments")}
            call = {"id": item.get("call_id"), "type": "function", "function": function}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
                origins[-1].items.append(i)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
                origins.append(Origin(kind, [i]))
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
            messages.append({"role": "tool", "tool_call_id": _call_id(item, i), "content": text})
            origins.append(Origin(kind, [i]))
        elif kind == "mcp_approval_response":
            continue  # an answer for the agent (approval_answers), not a message
        else:
            raise InvalidRequest(
                f"input item type '{kind}' is not supported (message, function_call, "
                "function_call_output, mcp_approval_response)",
                param=f"input[{i}].type",
            )
    return messages, origins


def _call_id(item: dict[str, Any], i: int) -> str:
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(
            f"input[{i}].call_id: a {item.get('type')} item needs the call_id of its function call",
            param=f"input[{i}].call_id",
        )
    return call_id


def tool_origins(body: ResponseRequest, names: list[str]) -> list[tuple[int, str] | None]:
    """For each tool the agent offers the model (by name, in its order), the index and type of
    the request's tool that brought it."""
    specs = [(i, spec.type, spec.model_extra or {}) for i, spec in enumerate(body.tools or [])]

    def origin(name: str) -> tuple[int, str] | None:
        for i, kind, extra in specs:
            if (
                (kind in BUILTIN and name in BUILTIN[kind])
                or (kind == "function" and extra.get("name") == name)
                or (kind == "mcp" and name.startswith(f"{extra.get('server_label')}{SEPARATOR}"))
            ):
                return i, kind
        return None

    return [origin(name) for name in names]


# A field of the chat request the agent sends, named in an error the chat route raised:
# messages[3].content[1], tools[0].function.parameters.properties
_FIELD = re.compile(r"(messages|tools)(?:\[(\d+)\])?((?:\.\w+|\[\d+\])*)")
_MENTION = re.compile(
    r"(?<![\w.\[])((?:messages|tools)\[\d+\](?:\.\w+|\[\d+\])*|max_tokens\b)"
    r"|'(messages|tools)'"
)
_RENAMED = {"max_tokens": "max_output_tokens"}
_CALL_FIELD = {".function.name": ".name", ".function.arguments": ".arguments", ".id": ".call_id"}


@dataclass(slots=True)
class Fields:
    """The Responses request's own names for the fields of the chat requests the agent makes
    from it, so that an error raised downstream (by the chat route, its templates, its
    engines) names ``input[2].content[1]`` or ``tools[0].parameters``, never
    ``messages[3].content[1]``. The agent's messages are the system prompt (``instructions``),
    the continued conversation (``previous_response_id``), the input's messages, then the
    agent's own (model turns, tool results)."""

    inputs: list[Origin]
    previous: int = 0  # messages continued from previous_response_id
    tools: list[tuple[int, str] | None] = field(default_factory=list)  # per chat tool

    def rename(self, exc: KaiyuanError) -> None:
        """Rewrite ``exc``'s param, and any chat field its message names, in place."""
        if exc.param is not None:
            exc.param = self.name(exc.param)

        def mention(match: re.Match[str]) -> str:
            if match.group(2):
                return f"'{self.name(match.group(2)) or 'the conversation'}'"
            return self.name(match.group(1)) or "the conversation"

        exc.message = _MENTION.sub(mention, exc.message)
        exc.args = (exc.message,)

    def name(self, internal: str) -> str | None:
        """The request's name for a chat request's field; None for the agent's own messages."""
        found = _FIELD.fullmatch(internal)
        if found is None:
            return _RENAMED.get(internal, internal)
        what, index, rest = found.group(1), found.group(2), found.group(3)
        if index is None:
            return "input" if what == "messages" else "tools"
        k = int(index)
        if what == "tools":
            origin = self.tools[k] if k < len(self.tools) else None
            if origin is None:
                return "tools"
            i, kind = origin
            sub = ""
            if kind == "function" and rest.startswith(".function."):
                sub = rest.removeprefix(".function")
            return f"tools[{i}]{sub}"
        if k == 0:
            return "instructions"  # the system prompt: kaiyuan's and the instructions
        if k <= self.previous:
            return "previous_response_id"
        j = k - 1 - self.previous
        if j >= len(self.inputs):
            return None
        return self._input(self.inputs[j], rest)

    @staticmethod
    def _input(origin: Origin, rest: str) -> str:
        if origin.kind == "text":
            return "input"
        base = f"input[{origin.items[0]}]"
        if origin.kind == "message":
            return base + rest if rest.startswith((".content", ".role")) else base
        if origin.kind == "function_call_output":
            return base + {".tool_call_id": ".call_id", ".content": ".output"}.get(rest, "")
        call = re.fullmatch(r"\.tool_calls\[(\d+)\](.*)", rest)
        if call is None or int(call.group(1)) >= len(origin.items):
            return base
        return f"input[{origin.items[int(call.group(1))]}]" + _CALL_FIELD.get(call.group(2), "")


def _content(content: Any, i: int) -> Any:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest("message content must be text or a list of parts", param=f"input[{i}]")
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
        else:
            raise InvalidRequest(
                f"content part type '{kind}' is not supported", param=f"input[{i}]"
            )
    return parts


@dataclass(slots=True)
class Items:
    """Output items, built as the loop's events arrive."""

    items: list[OutputItem] = field(default_factory=list)
    approved: set[str] = field(default_factory=set)  # calls run on the user's approval
    _open: dict[str, ToolCall] = field(default_factory=dict)

    def started(self, event: ToolCallEvent) -> ToolCall:
        kind = ITEM_TYPE.get(event.name, "mcp_call" if SEPARATOR in event.name else "function_call")
        try:
            arguments = json.loads(event.arguments or "{}")
        except ValueError:
            arguments = {}
        if not isinstance(arguments, dict):  # the model wrote a list or a number: no fields
            arguments = {}
        id_ = f"{PREFIX.get(kind, 'fc')}_{event.id}"
        item: ToolCall
        if event.name == "search":
            search = ActionSearch(query=arguments.get("query", ""))
            item = ResponseFunctionWebSearch(id=id_, action=search)
        elif event.name == "fetch":
            page = ActionOpenPage(url=arguments.get("url", ""))
            item = ResponseFunctionWebSearch(id=id_, action=page)
        elif event.name == "code":
            code = arguments.get("code", "")
            item = ResponseCodeInterpreterToolCall(id=id_, code=code, container_id="sandbox")
        elif event.name == "files":
            item = ResponseFileSearchToolCall(id=id_, queries=[arguments.get("query", "")])
        elif kind == "mcp_call":
            label, _, tool = event.name.partition(SEPARATOR)
            item = McpCall(id=id_, server_label=label, name=tool, arguments=event.arguments)
            if event.id in self.approved:
                item.approval_request_id = f"{APPROVAL}{event.id}"
        else:  # a tool the request did not offer: it fails, as a function call item
            item = ResponseFunctionToolCall(
                id=id_, call_id=event.id, name=event.name, arguments=event.arguments
            )
        self._open[event.id] = item
        self.items.append(item)
        return item

    def finished(self, event: ToolResultEvent) -> ToolCall:
        item = self._open.pop(event.id)
        item.status = "failed" if event.error else "completed"
        out = event.output
        if isinstance(item, ResponseCodeInterpreterToolCall):
            logs = (out.get("stdout", "") + out.get("stderr", "")) if not event.error else ""
            item.outputs = [CodeInterpreterLogs(logs=logs or (event.error or ""))]
        elif isinstance(item, ResponseFileSearchToolCall):
            item.results = [
                FileSearchResult(file_id=r.get("source"), filename=r.get("title"),
                                 score=r.get("score"), text=r.get("text"),
                                 attributes={"url": r.get("url")})
                for r in out.get("results", [])
            ]  # fmt: skip
        elif isinstance(item, McpCall):
            item.output = None if event.error else out.get("text")
        item.error = event.error or None
        return item

    def answer(self, event: AnswerEvent) -> list[OutputItem]:
        added: list[OutputItem] = []
        if event.text or not (event.calls or event.approvals):
            annotations = [
                UrlCitation(url=s.url, title=s.title, start_index=m.start(), end_index=m.end())
                for s in event.citations
                for m in re.finditer(re.escape(f"[{s.ref}]"), event.text)
            ]
            annotations.sort(key=lambda a: a.start_index)
            cut = event.stop_reason == "max_tokens"
            added.append(ResponseOutputMessage(
                id=f"msg_{event.run_id}", status="incomplete" if cut else "completed",
                content=[ResponseOutputText(text=event.text, annotations=annotations)],
            ))  # fmt: skip
        for call in event.calls:
            added.append(ResponseFunctionToolCall(
                id=f"fc_{call['id']}", call_id=call["id"], name=call["function"]["name"],
                arguments=call["function"]["arguments"], status="completed",
            ))  # fmt: skip
        for call in event.approvals:
            label, _, tool = call["function"]["name"].partition(SEPARATOR)
            added.append(McpApprovalRequest(
                id=f"{APPROVAL}{call['id']}", server_label=label, name=tool,
                arguments=call["function"]["arguments"],
            ))  # fmt: skip
        self.items.extend(added)
        return added


INCOMPLETE: dict[str, IncompleteReason] = {
    "max_tokens": "max_output_tokens", "max_steps": "max_steps",
    "max_tool_calls": "max_tool_calls", "max_seconds": "max_seconds",
}  # fmt: skip


def response_object(
    response_id: str,
    body: ResponseRequest,
    created: float,
    items: list[OutputItem],
    answer: AnswerEvent | None,
) -> Response:
    status: ResponseStatus = "in_progress"
    incomplete = None
    usage = None
    if answer is not None:
        reason = INCOMPLETE.get(answer.stop_reason or "")
        status = "incomplete" if reason else "completed"
        incomplete = IncompleteDetails(reason=reason) if reason else None
        prompt, completion = (
            answer.usage.get("prompt_tokens", 0),
            answer.usage.get("completion_tokens", 0),
        )
        usage = ResponseUsage(input_tokens=prompt, output_tokens=completion,
                              total_tokens=prompt + completion)  # fmt: skip
    return Response(
        id=response_id, created_at=int(created), status=status, incomplete_details=incomplete,
        instructions=body.instructions, max_output_tokens=body.max_output_tokens,
        model=body.model, output=items, parallel_tool_calls=body.parallel_tool_calls,
        previous_response_id=body.previous_response_id, temperature=body.temperature,
        top_p=body.top_p, tool_choice=body.tool_choice, tools=body.tools or [], usage=usage,
        metadata=body.metadata or {}, store=body.store, user=body.user,
    )  # fmt: skip
