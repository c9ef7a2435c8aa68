"""``kaiyuan bench``: a load generator for any OpenAI-compatible server (kaiyuan, llama-server,
vLLM, Ollama), so they can be compared side by side with the same client and definitions.

For each concurrency level, ``requests`` streamed chat completions are sent with exactly that
many in flight (a new one starts when one ends), prompts taken in turn from the bundled
questions (different prompts, so a prefix cache cannot answer them all).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import openai

from kaiyuan.evals import client as endpoint
from kaiyuan.evals.metrics import Timing, summarise
from kaiyuan.evals.suites import Bilingual

Progress = Callable[[int, int, int], None]  # concurrency, done, total


def prompts() -> list[list[dict[str, Any]]]:
    return [item.messages for item in Bilingual().items()]


async def run_level(
    client: openai.AsyncOpenAI,
    model: str,
    concurrency: int,
    requests: int,
    max_tokens: int,
    progress: Progress | None = None,
) -> dict[str, Any]:
    messages = itertools.cycle(prompts())
    work = [next(messages) for _ in range(requests)]
    timings: list[Timing] = []
    failures: list[str] = []
    estimated = False

    async def worker() -> None:
        nonlocal estimated
        while work:
            conversation = work.pop()
            try:
                reply = await endpoint.complete(
                    client, model, conversation, max_tokens=max_tokens, temperature=0.0
                )
            except endpoint.RequestFailed as exc:
                failures.append(str(exc))
            else:
                timings.append(reply.timing)
                estimated = estimated or reply.estimated_tokens
            if progress:
                progress(concurrency, len(timings) + len(failures), requests)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, requests)):
                group.create_task(worker())
    except BaseExceptionGroup as errors:
        raise errors.exceptions[0] from None
    return {
        "concurrency": concurrency,
        "failures": len(failures),
        "failure_examples": sorted(set(failures))[:5],
        "estimated_tokens": estimated,
    } | summarise(timings)


async def run(
    client: openai.AsyncOpenAI,
    model: str,
    levels: list[int],
    requests: int,
    max_tokens: int,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    return [
        await run_level(client, model, level, requests, max_tokens, progress) for level in levels
    ]
