"""A request's sampling fields -> the engine's :class:`SamplingParams` (chat and completions)."""

from __future__ import annotations

import re
from typing import Any

from kaiyuan.engines.base import ModelInfo, SamplingParams, check_fits
from kaiyuan.errors import InvalidRequest
from kaiyuan.protocol.openai.sampling import SamplingFields


def resolve_max_tokens(
    requested: int | None, prompt_len: int, info: ModelInfo, *, cap: bool = False
) -> int:
    """``requested``; else the model's default answer length, or the room left in the context
    when that is less (a default never makes a request fail); raises when nothing fits.

    ``cap``: a requested length past the room left is cut to it, not refused (Anthropic's
    ``max_tokens`` is required, and clients such as Claude Code send 32000 whatever the
    model's context)."""
    if cap and requested is not None:
        check_fits(info, prompt_len, 1)
        requested = min(requested, info.context_length - prompt_len)
    if requested is None:
        check_fits(info, prompt_len, 1)
        room = info.context_length - prompt_len
        default = info.defaults.max_tokens
        return room if default is None else min(default, room)
    check_fits(info, prompt_len, requested)
    return requested


def sampling_params(
    body: SamplingFields, info: ModelInfo, prompt_cache: bool, **fields: Any
) -> SamplingParams:
    """The request's sampling, over the model's defaults (store/generation.py), over OpenAI's.

    ``prompt_cache`` is the server's setting (a request's ``cache_prompt`` overrides it);
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
        typical_p=body.typical_p if body.typical_p is not None else 1.0,
        ignore_eos=body.ignore_eos,
        min_tokens=body.min_tokens,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        stop=body.stop_list(),
        logit_bias=logit_bias(body.logit_bias, info),
        cache_prompt=prompt_cache if body.cache_prompt is None else body.cache_prompt,
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
