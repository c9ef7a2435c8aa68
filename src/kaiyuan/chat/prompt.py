"""An OpenAI conversation -> the prompt text the model's own chat template produces.

Tools, assistant tool calls and tool results go through the template when it knows tools
(Qwen, DeepSeek, Llama 3.1+). A template that does not (SmolLM2's ChatML) gets kaiyuan's default
tool prompt in Hermes syntax, with calls and results written into the turns as Qwen writes them.

Every string from the client (contents, text parts, names, ids, tool calls and their arguments,
tool results, tool definitions) is guarded before the template sees it: the model's control
texts in it (``<|im_start|>``...) and the vision marker are written as guards, which
``TextEngine.encode`` tokenizes as plain text (T25, see ``chat/guard.py``). Only what the
template itself writes becomes control tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kaiyuan.chat.guard import guard_text
from kaiyuan.chat.images import ImageRef
from kaiyuan.chat.model import ChatModel, max_prompt_chars
from kaiyuan.chat.template import ChatTemplate
from kaiyuan.chat.toolcalls import TemplateTools, parser_class, traits
from kaiyuan.errors import InvalidRequest
from kaiyuan.protocol.openai.chat import ChatCompletionRequest, ChatMessage, ImagePart, TextPart

DEFAULT_TOOL_PROMPT = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, write it exactly like this:
{example}"""


@dataclass(slots=True, frozen=True)
class Prompt:
    text: str
    parser: str  # the tool-call syntax the model will write
    tools: bool  # whether tool calls are expected (and so parsed)
    thinking_open: bool  # the prompt already opened a <think> block
    images: tuple[ImageRef, ...] = ()  # in the order the template placed them


def build(info: ChatModel, body: ChatCompletionRequest, *, parser: str | None = None) -> Prompt:
    if info.chat_template is None:
        raise InvalidRequest(
            f"model '{info.id}' has no chat template; use /v1/completions", param="model"
        )
    found = traits(info.chat_template)
    chosen = parser or found.parser
    use_tools = bool(body.tools) and body.effective_tool_choice() != "none"
    images: list[ImageRef] = []
    guard = _Guard(info)
    messages = [_message(i, m, info, found, images, guard) for i, m in enumerate(body.messages)]
    if not found.renders_calls:
        messages = _merge_tool_results(messages)
    extra: dict[str, Any] = {}
    tools = guard.tree([t.model_dump(exclude_none=True) for t in body.tools or []])
    if use_tools and found.renders_tools:
        extra["tools"] = tools
    elif use_tools:
        messages = _with_default_tool_prompt(messages, tools, parser_class(chosen).example)
    thinking = body.enable_thinking()
    if thinking is not None:
        extra["enable_thinking"] = thinking
    template = ChatTemplate(info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token)
    text = template.render(messages, max_chars=max_prompt_chars(info), **extra)
    return Prompt(
        text=text,
        parser=chosen,
        tools=use_tools,
        thinking_open=text.rstrip().endswith("<think>"),
        images=tuple(images),
    )


class _Guard:
    """Client strings -> the same with the model's control texts written as guards."""

    def __init__(self, info: ChatModel) -> None:
        marker = (info.image_placeholder,) if info.image_placeholder else ()
        self.texts = (*info.control_texts, *marker)

    def __call__(self, text: str) -> str:
        return guard_text(text, self.texts)

    def tree(self, value: Any) -> Any:
        """Every string in JSON-like data, keys included."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self.tree(k): self.tree(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.tree(v) for v in value]
        return value


def _message(
    index: int,
    message: ChatMessage,
    info: ChatModel,
    found: TemplateTools,
    images: list[ImageRef],
    guard: _Guard,
) -> dict[str, Any]:
    content = _content(index, message, info, images, guard)
    role = "system" if message.role == "developer" else message.role
    out: dict[str, Any] = {"role": role, "content": content}
    if message.name:
        out["name"] = guard(message.name)
    if message.tool_calls:
        calls = [
            {
                "name": guard(c.function.name),
                "arguments": guard.tree(_arguments(c.function.arguments)),
            }
            for c in message.tool_calls
        ]
        if found.renders_calls:
            if found.arguments_as_text:  # DeepSeek's templates join arguments as text
                for call, c in zip(calls, message.tool_calls, strict=True):
                    call["arguments"] = guard(c.function.arguments)
            out["tool_calls"] = [
                {"id": guard(c.id), "type": "function", "function": call}
                for c, call in zip(message.tool_calls, calls, strict=True)
            ]
            if message.content is None:
                out["content"] = None  # templates test `content is none` around calls
        else:
            written = "\n".join(
                f"<tool_call>\n{json.dumps(call, ensure_ascii=False)}\n</tool_call>"
                for call in calls
            )
            out["content"] = f"{content}\n{written}" if content else written
    if message.role == "tool":
        out["tool_call_id"] = guard(message.tool_call_id or "")
    return out


def _content(
    index: int, message: ChatMessage, info: ChatModel, images: list[ImageRef], guard: _Guard
) -> str | list[dict[str, Any]]:
    """Text, or for a vision model with images, the parts as HF templates take them:
    ``{"type": "image"}`` where each image goes (the template writes the model's markers), or
    the engine's own placeholder text (llama.cpp's mtmd marker)."""
    content = message.content
    if not isinstance(content, list):
        return guard(content or "")
    first = next((j for j, p in enumerate(content) if isinstance(p, ImagePart)), None)
    if first is not None and "vision" not in info.capabilities:
        raise InvalidRequest(
            f"model '{info.id}' does not accept images "
            f"(its capabilities: {', '.join(info.capabilities)})",
            param=f"messages[{index}].content[{first}]",
        )
    if first is None:
        return guard("\n".join(part.text for part in content if isinstance(part, TextPart)))
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        if isinstance(part, ImagePart):
            images.append(ImageRef(part.image_url.url, f"messages[{index}].content[{j}]"))
            marker = info.image_placeholder
            parts.append({"type": "image"} if marker is None else {"type": "text", "text": marker})
        else:
            parts.append({"type": "text", "text": guard(part.text)})
    return parts


def _arguments(text: str) -> Any:
    """Templates expect arguments as a mapping (they `tojson` it); keep text that isn't JSON."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, dict) else text


def _merge_tool_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Without template support, results travel in a user turn, as Qwen's template writes them."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m["role"] != "tool":
            out.append(m)
            continue
        block = f"<tool_response>\n{m['content']}\n</tool_response>"
        if out and out[-1].get("_tool_results"):
            out[-1]["content"] += "\n" + block
        else:
            out.append({"role": "user", "content": block, "_tool_results": True})
    for m in out:
        m.pop("_tool_results", None)
    return out


def _with_default_tool_prompt(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]], example: str
) -> list[dict[str, Any]]:
    """``tools`` already guarded; the example is kaiyuan's (the family's own markers)."""
    listing = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    prompt = DEFAULT_TOOL_PROMPT.format(tools=listing, example=example)
    if messages and messages[0]["role"] == "system":
        first = dict(messages[0])
        first["content"] = f"{first['content']}\n\n{prompt}" if first["content"] else prompt
        return [first, *messages[1:]]
    return [{"role": "system", "content": prompt}, *messages]
