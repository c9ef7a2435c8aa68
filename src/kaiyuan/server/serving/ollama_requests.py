"""Ollama requests -> kaiyuan's OpenAI requests (chat, or completions for ``raw`` generate),
so they run through kaiyuan's own pipelines.

- ``options``: num_predict -> max_tokens (<= 0: the model's default length), repeat_penalty ->
  repetition_penalty, seed (< 0: none); temperature, top_k, top_p, min_p, typical_p, stop and
  the presence/frequency penalties as they are; load-time options (num_ctx, num_gpu, ...) have
  no effect: kaiyuan sets a model's context when it loads it;
- ``format`` "json" -> response_format json_object, a schema -> json_schema (both grammars);
- ``think`` -> the template's enable_thinking switch;
- ``tools`` as they are; an assistant's ``tool_calls`` get ids (their own, or made up), and each
  ``tool`` message answers the first unanswered call (of its ``tool_name`` when it has one);
- ``images`` (base64) -> image parts with data: URLs (never fetched: no URL is accepted);
- generate's ``system`` and ``prompt`` -> a system and a user message.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError

from kaiyuan.errors import InvalidRequest
from kaiyuan.protocol.ollama import api
from kaiyuan.protocol.openai.chat import ChatCompletionRequest
from kaiyuan.protocol.openai.completions import CompletionRequest
from kaiyuan.server.errors import validation_message

# kaiyuan's request fields -> the Ollama fields they came from, for error messages
_OLLAMA_NAMES = {
    "max_tokens": "options.num_predict",
    "repetition_penalty": "options.repeat_penalty",
    "response_format": "format",
    "tool_choice": "tools",
}
_SAMPLING = (
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "typical_p",
    "presence_penalty",
    "frequency_penalty",
)
_IMAGE_TYPES = {
    "iVBOR": "image/png",
    "/9j/": "image/jpeg",
    "R0lGOD": "image/gif",
    "UklGR": "image/webp",
    "Qk": "image/bmp",
}


def _validated(cls: type[BaseModel], data: dict[str, Any]) -> Any:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        message, param = validation_message([dict(e) for e in exc.errors()])
        if param:
            ollama = _OLLAMA_NAMES.get(param.partition(".")[0].partition("[")[0])
            ollama = ollama or (f"options.{param}" if param in _SAMPLING else None)
            if ollama:
                message = message.replace(f"'{param}'", f"'{ollama}'")
        raise InvalidRequest(message) from None


def _sampling(options: api.Options | None) -> dict[str, Any]:
    if options is None:
        return {}
    out: dict[str, Any] = {n: v for n in _SAMPLING if (v := getattr(options, n)) is not None}
    if options.num_predict is not None and options.num_predict > 0:
        out["max_tokens"] = options.num_predict
    if options.repeat_penalty is not None:
        out["repetition_penalty"] = options.repeat_penalty
    if options.seed is not None and options.seed >= 0:
        out["seed"] = options.seed
    stop = [options.stop] if isinstance(options.stop, str) else options.stop or []
    if stop := [s for s in stop if s]:
        out["stop"] = stop
    return out


def _common(body: api.ChatRequest | api.GenerateRequest, model_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {"model": model_id, **_sampling(body.options)}
    if isinstance(body.format, dict):
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "format", "schema": body.format},
        }
    elif body.format == "json":
        out["response_format"] = {"type": "json_object"}
    if body.think is not None:
        out["chat_template_kwargs"] = {"enable_thinking": body.think is not False}
    return out


def _image(data: str) -> dict[str, Any]:
    if data.startswith("data:"):
        url = data
    else:
        kind = next((t for head, t in _IMAGE_TYPES.items() if data.startswith(head)), "image/png")
        url = f"data:{kind};base64,{data}"
    return {"type": "image_url", "image_url": {"url": url}}


def _content(text: str, images: list[str] | None) -> str | list[dict[str, Any]]:
    if not images:
        return text
    parts = [{"type": "text", "text": text}] if text else []
    return parts + [_image(i) for i in images]


def _arguments(arguments: dict[str, Any] | str) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


def _assistant_call(call: api.ToolCall, made_up: str) -> dict[str, Any]:
    function = {"name": call.function.name, "arguments": _arguments(call.function.arguments)}
    return {"id": call.id or made_up, "type": "function", "function": function}


def _messages(messages: list[api.Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    unanswered: list[tuple[str, str]] = []  # (id, name) of the last assistant turn's calls
    for i, m in enumerate(messages):
        text = m.content or ""
        if m.role == "assistant":
            calls = [_assistant_call(c, f"call_{i}_{j}") for j, c in enumerate(m.tool_calls or [])]
            unanswered = [(c["id"], c["function"]["name"]) for c in calls]
            message: dict[str, Any] = {"role": "assistant", "content": _content(text, m.images)}
            if calls:
                message["tool_calls"] = calls
                message["content"] = message["content"] or None
            if m.thinking:
                message["reasoning_content"] = m.thinking
        elif m.role == "tool":
            call_id = m.tool_call_id or _answer(unanswered, m.tool_name) or f"call_{i}"
            message = {"role": "tool", "content": text, "tool_call_id": call_id}
            if m.tool_name:
                message["name"] = m.tool_name
        else:
            message = {"role": m.role, "content": _content(text, m.images)}
        out.append(message)
    return out


def _answer(unanswered: list[tuple[str, str]], name: str | None) -> str | None:
    """The id of the first call a tool result answers (of that tool, when named)."""
    for k, (call_id, called) in enumerate(unanswered):
        if name is None or called == name:
            del unanswered[k]
            return call_id
    return None


def to_chat(body: api.ChatRequest, model_id: str) -> ChatCompletionRequest:
    """The OpenAI chat request that asks the model what ``body`` asks (a 400 if it cannot)."""
    data = _common(body, model_id)
    data["messages"] = _messages(body.messages or [])
    if body.tools:
        data["tools"] = [t.model_dump(exclude_none=True) for t in body.tools]
    return _validated(ChatCompletionRequest, data)


def generate_to_chat(body: api.GenerateRequest, model_id: str) -> ChatCompletionRequest:
    """A generate request with the model's template: its system and prompt as messages."""
    messages: list[dict[str, Any]] = []
    if body.system:
        messages.append({"role": "system", "content": body.system})
    messages.append({"role": "user", "content": _content(body.prompt or "", body.images)})
    return _validated(ChatCompletionRequest, {**_common(body, model_id), "messages": messages})


def generate_to_completion(body: api.GenerateRequest, model_id: str) -> CompletionRequest:
    """A ``raw`` generate request: the client wrote the whole prompt, template and all."""
    if body.images:
        raise InvalidRequest("images are not supported with raw: true", param="images")
    if body.format:
        raise InvalidRequest("format is not supported with raw: true", param="format")
    data = {"model": model_id, "max_tokens": None, **_sampling(body.options)}
    return _validated(CompletionRequest, {**data, "prompt": body.prompt or ""})


def check_generate(body: api.GenerateRequest) -> None:
    """Refuse what kaiyuan does not do rather than ignore it."""
    if body.suffix:
        raise InvalidRequest("suffix (fill-in-the-middle) is not supported", param="suffix")
    if body.template:
        raise InvalidRequest(
            "template is not supported: kaiyuan uses the model's own chat template; send "
            "raw: true with the whole prompt instead",
            param="template",
        )
    if body.context:
        raise InvalidRequest(
            "context is not supported: send the conversation to /api/chat", param="context"
        )
