"""One streamed chat completion against any OpenAI-compatible endpoint, timed chunk by chunk.

kaiyuan, llama-server, vLLM and Ollama all stream ``chat.completions`` and report usage in a
last chunk when asked (``stream_options.include_usage``); a server that does not gets its
output tokens counted as output chunks, and the reply says the count is an estimate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

import openai

from kaiyuan.errors import KaiyuanError
from kaiyuan.evals.metrics import Timing


class EndpointError(KaiyuanError):
    """The endpoint cannot serve this run at all (unreachable, unknown model, no access): the
    run stops instead of recording the same failure for every item."""

    status = 0


class RequestFailed(Exception):
    """One request failed (a 4xx/5xx for this item): recorded, retried on resume."""


@dataclass(slots=True)
class Reply:
    content: str
    reasoning: str
    finish_reason: str | None
    timing: Timing
    estimated_tokens: bool


async def complete(
    client: openai.AsyncOpenAI,
    model: str,
    messages: list[dict[str, Any]],
    *,
    max_tokens: int,
    temperature: float = 0.0,
    seed: int | None = 0,
) -> Reply:
    content: list[str] = []
    reasoning: list[str] = []
    finish: str | None = None
    usage = None
    started = time.time()
    timing = Timing(started=started, finished=started)
    answering = False  # the server accepted the request: a later drop is this request's failure
    try:
        stream = await client.chat.completions.create(
            model=model,
            messages=cast(Any, messages),
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
            stream=True,
            stream_options={"include_usage": True},
        )
        answering = True
        async for chunk in stream:
            now = time.time()
            usage = chunk.usage or usage
            for choice in chunk.choices:
                delta = choice.delta
                thought = getattr(delta, "reasoning_content", None) or getattr(
                    delta, "reasoning", None
                )
                if delta.content or thought or delta.tool_calls:
                    timing.chunk_times.append(now)
                content.append(delta.content or "")
                reasoning.append(thought or "")
                finish = choice.finish_reason or finish
    except openai.APIConnectionError as exc:
        if isinstance(exc, openai.APITimeoutError):
            raise RequestFailed("the request timed out") from None
        if answering:
            raise RequestFailed("the connection dropped in the middle of the answer") from None
        raise EndpointError(f"cannot reach {client.base_url}") from None
    except (openai.NotFoundError, openai.AuthenticationError, openai.PermissionDeniedError) as exc:
        raise EndpointError(f"model {model!r} at {client.base_url}: {_message(exc)}") from None
    except openai.APIStatusError as exc:
        raise RequestFailed(f"{exc.status_code}: {_message(exc)}") from None
    except openai.APIError as exc:  # e.g. an error event in the middle of the stream
        raise RequestFailed(_message(exc)) from None
    timing.finished = time.time()
    if usage is not None:
        timing.prompt_tokens = usage.prompt_tokens
        timing.completion_tokens = usage.completion_tokens
    else:
        timing.completion_tokens = len(timing.chunk_times)
    return Reply("".join(content), "".join(reasoning), finish, timing, usage is None)


def _message(exc: openai.APIError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:500]
    return exc.message[:500]
