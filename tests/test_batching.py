"""Continuous batching on the real model: several sequences share one decode, and it shows
neither in their outputs nor in their neighbours'."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from kaiyuan.chat.template import ChatTemplate
from kaiyuan.engines.base import Delta, EngineOptions, Finish, SamplingParams
from kaiyuan.engines.llamacpp import LlamaCppEngine
from kaiyuan.engines.llamacpp.scheduler import MIN_SHARED
from kaiyuan.store import resolve
from tests.conftest import MODEL
from tests.harness import KaiyuanServer, wait_for

pytestmark = pytest.mark.slow

QUESTIONS = [
    "Write a haiku about the sea.",
    "What is 2+2?",
    "Name three colors.",
    "Tell me a joke about cats.",
    "Explain gravity briefly.",
    "What is the capital of France?",
    "Describe a dog.",
    "Why is the sky blue?",
]
NO_END = ((0, -100.0), (1, -100.0), (2, -100.0))  # SmolLM2's end tokens, banned


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppEngine]:
    _, path = resolve(MODEL)
    eng = LlamaCppEngine(EngineOptions(model_id=MODEL, path=path, parallel=8, context_length=2048))
    yield eng
    asyncio.run(eng.aclose())


def prompt(engine: LlamaCppEngine, messages: list[dict[str, str]]) -> list[int]:
    template = ChatTemplate(engine.info.chat_template or "")
    return engine.tokenize(template.render(messages))


def ask(engine: LlamaCppEngine, question: str) -> list[int]:
    return prompt(engine, [{"role": "user", "content": question}])


async def run(
    engine: LlamaCppEngine, tokens: list[int], params: SamplingParams
) -> tuple[str, Finish]:
    text, finish = "", None
    async for event in engine.generate(tokens, params):
        if isinstance(event, Delta):
            text += event.text
        else:
            finish = event
    assert finish is not None
    return text, finish


async def until(condition: Callable[[], bool]) -> None:
    """Wait for the engine thread to reach a state (it has no asyncio event to await)."""
    while not condition():  # noqa: ASYNC110
        await asyncio.sleep(0.005)


def solo(engine: LlamaCppEngine, prompts: list[list[int]], params: SamplingParams) -> list[str]:
    async def each() -> list[str]:
        return [(await run(engine, p, params))[0] for p in prompts]

    return asyncio.run(each())


def batched(engine: LlamaCppEngine, prompts: list[list[int]], params: SamplingParams) -> list[str]:
    async def together() -> list[str]:
        results = await asyncio.gather(*(run(engine, p, params) for p in prompts))
        return [text for text, _ in results]

    return asyncio.run(together())


def test_temperature_zero_is_identical_alone_and_beside_seven_others(
    engine: LlamaCppEngine,
) -> None:
    prompts = [ask(engine, q) for q in QUESTIONS]
    params = SamplingParams(max_tokens=40, temperature=0)
    steps = engine.scheduler.steps
    alone = solo(engine, prompts, params)
    solo_steps = engine.scheduler.steps - steps
    steps = engine.scheduler.steps
    together = batched(engine, prompts, params)
    batch_steps = engine.scheduler.steps - steps
    assert together == alone  # no cross-talk, no numerical drift
    assert len(set(alone)) == len(alone)  # eight different answers, not one copied around
    # They really shared decodes: far fewer steps than one sequence after another.
    assert batch_steps < solo_steps / 3, (batch_steps, solo_steps)


def test_seeded_sampling_is_identical_in_a_batch(engine: LlamaCppEngine) -> None:
    prompts = [ask(engine, q) for q in QUESTIONS[:4]]
    params = SamplingParams(max_tokens=32, temperature=1.0, seed=11)
    assert batched(engine, prompts, params) == solo(engine, prompts, params)


def test_cancelling_one_stream_leaves_the_others_complete(engine: LlamaCppEngine) -> None:
    """Closing one stream frees its slot at the engine's next step (its cache cells with it)
    while its neighbours run on to their complete, unchanged answers.

    "Promptly" is counted in the scheduler's own steps, not in seconds: a slot records the
    step at which it was released (``idle_since``), so a slow or busy machine cannot fail it,
    while a slot that kept generating after the cancel (or was never freed) does."""
    prompts = [ask(engine, q) for q in QUESTIONS[:4]]
    params = SamplingParams(max_tokens=60, temperature=0, logit_bias=NO_END)
    # The victim could run far longer than the time it takes to read its first words, so it
    # cannot end by itself before the cancel however slowly this side is scheduled.
    long = dataclasses.replace(params, max_tokens=1500)
    expected = solo(engine, prompts, params)

    async def scenario() -> tuple[list[str], int, int]:
        async def cancel_early(tokens: list[int]) -> tuple[str, int]:
            stream = engine.generate(tokens, long)
            got = ""
            async for event in stream:
                if isinstance(event, Delta):
                    got += event.text
                    if len(got) > 10:
                        break
            await stream.aclose()  # sets the job's cancel flag before it returns
            # the engine's step count just after the cancel: at or (rarely) past its step
            return got, engine.scheduler.steps

        await until(lambda: all(s.job is None for s in slots))  # the reference runs are done
        tasks = [asyncio.create_task(run(engine, p, params)) for p in prompts[:3]]
        cut_task = asyncio.create_task(cancel_early(prompts[3]))
        await until(lambda: any(s.job is not None and s.job.prompt == prompts[3] for s in slots))
        victim.append(next(s for s in slots if s.job is not None and s.job.prompt == prompts[3]))
        cut, cancelled_at = await cut_task
        in_flight = engine.in_flight  # the cancelled one no longer counts
        await until(lambda: victim[0].job is None)
        done = await asyncio.gather(*tasks)
        assert cut and expected[3].startswith(cut[:5])
        return [text for text, _ in done], in_flight, cancelled_at

    slots = engine.scheduler.slots
    victim: list[Any] = []
    others, in_flight, cancelled_at = asyncio.run(scenario())
    assert others == expected[:3]
    assert in_flight <= 3
    # Freed at the next step: the step under way when the cancel came may finish, no more.
    # (Nothing else was waiting, so the slot stayed free and kept its release step.)
    assert victim[0].idle_since <= cancelled_at + 1, (victim[0].idle_since, cancelled_at)
    assert victim[0].produced < long.max_tokens  # cut short, not run out
    # The others' Finish reaches this thread just before the engine frees their slots.
    assert wait_for(lambda: all(s.job is None for s in slots), timeout=60)  # a hang guard only
    # its cache cells went with it; the finished ones keep theirs for the next turn
    assert victim[0].tokens == [] and victim[0].job is None
    assert sum(1 for s in slots if s.tokens) >= 3


def test_follow_up_turn_reuses_the_conversation_prefix(engine: LlamaCppEngine) -> None:
    params = SamplingParams(max_tokens=24, temperature=0)
    turn = [{"role": "user", "content": "Describe a lighthouse."}]

    async def conversation() -> tuple[int, int, int]:
        first_prompt = prompt(engine, turn)
        reply, _ = await run(engine, first_prompt, params)
        follow = [*turn, {"role": "assistant", "content": reply},
                  {"role": "user", "content": "And a harbour?"}]  # fmt: skip
        second_prompt = prompt(engine, follow)
        _, finish = await run(engine, second_prompt, params)
        return len(first_prompt), len(second_prompt), finish.cached_tokens

    first, second, cached = asyncio.run(conversation())
    assert cached >= first  # the whole first turn came from the cache
    assert cached < second


def test_cache_prompt_false_reads_the_whole_prompt_and_repeats_itself(
    engine: LlamaCppEngine,
) -> None:
    """A reused prefix was computed in another batch shape (its generated tokens one at a
    time), which can move a temperature-0 answer; cache_prompt=False reads it all again."""
    params = SamplingParams(max_tokens=24, temperature=0)
    fresh = replace(params, cache_prompt=False)
    turn = [{"role": "user", "content": "Describe a windmill."}]

    async def conversation() -> tuple[tuple[str, Finish], ...]:
        reply, _ = await run(engine, prompt(engine, turn), params)  # the cache now holds it
        follow = [*turn, {"role": "assistant", "content": reply},
                  {"role": "user", "content": "And a watermill?"}]  # fmt: skip
        second = prompt(engine, follow)
        first_fresh = await run(engine, second, fresh)
        beside = await asyncio.gather(  # again, now with others in the batch
            run(engine, second, fresh),
            *(run(engine, ask(engine, q), params) for q in QUESTIONS[:3]),
        )
        cached = await run(engine, second, params)
        return first_fresh, beside[0], cached

    first_fresh, second_fresh, cached = asyncio.run(conversation())
    assert first_fresh[1].cached_tokens == second_fresh[1].cached_tokens == 0
    assert first_fresh[0] == second_fresh[0]
    assert cached[1].cached_tokens > 0  # the default still reuses the prefix


def test_a_shared_system_prompt_is_copied_from_another_slot(engine: LlamaCppEngine) -> None:
    # A usual system prompt, a few dozen tokens: copying a slot's stream costs less than
    # reading even a short prefix again.
    system = "You are a careful assistant for the city library. Answer briefly and kindly."
    params = SamplingParams(max_tokens=8, temperature=0)
    first = prompt(engine, [{"role": "system", "content": system},
                            {"role": "user", "content": "Hi."}])  # fmt: skip
    second = prompt(engine, [{"role": "system", "content": system},
                             {"role": "user", "content": "Name a fruit."}])  # fmt: skip
    shared = next(i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b)
    assert shared > MIN_SHARED

    async def both() -> tuple[Finish, str]:
        await run(engine, first, params)
        # Occupy first's slot so the next request must use another slot.
        busy = SamplingParams(max_tokens=30, temperature=0)
        blocker = asyncio.create_task(run(engine, first, busy))
        await asyncio.sleep(0.05)
        text, finish = await run(engine, second, params)
        await blocker
        return finish, text

    async def fresh() -> str:
        _, path = resolve(MODEL)
        clean = LlamaCppEngine(
            EngineOptions(model_id=MODEL, path=path, parallel=8, context_length=2048)
        )
        try:
            return (await run(clean, second, params))[0]
        finally:
            await clean.aclose()

    finish, text = asyncio.run(both())
    assert finish.cached_tokens == shared
    assert text == asyncio.run(fresh())  # copied keys/values answer as a fresh read does


def test_queue_bound_answers_503_with_retry_after(tmp_path: Path) -> None:
    args = ["--parallel", "2", "--max-queue", "1", "--threads", "1", "--context-length", "1024"]
    with KaiyuanServer(home=tmp_path, args=args) as server:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Write a long story."}],
            "max_tokens": 120,
            "logit_bias": {"0": -100, "1": -100, "2": -100},
        }

        def call(_: int) -> tuple[int, str | None, float]:
            start = time.monotonic()
            response = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120)
            return (
                response.status_code,
                response.headers.get("retry-after"),
                time.monotonic() - start,
            )

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            results = list(pool.map(call, range(6)))
        ok = [r for r in results if r[0] == 200]
        rejected = [r for r in results if r[0] != 200]
        assert len(ok) == 3, results  # 2 generating + 1 waiting
        assert all(status == 503 and retry for status, retry, _ in rejected), results
        # refused at once, not after waiting for a slot: before any 120-token answer is done
        assert max(r[2] for r in rejected) < min(r[2] for r in ok), results


def test_usage_reports_cached_tokens_for_a_follow_up(server: KaiyuanServer) -> None:
    client = server.client()
    turn = [{"role": "user", "content": "Describe a windmill."}]
    first = client.chat.completions.create(model=MODEL, messages=turn, max_tokens=16, temperature=0)  # type: ignore[arg-type]
    follow = [*turn, {"role": "assistant", "content": first.choices[0].message.content or ""},
              {"role": "user", "content": "And a watermill?"}]  # fmt: skip
    second = client.chat.completions.create(
        model=MODEL, messages=follow, max_tokens=8, temperature=0
    )  # type: ignore[arg-type]
    assert first.usage is not None and second.usage is not None
    details = second.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens >= first.usage.prompt_tokens
    # llama.cpp server's cache_prompt: false reads the whole prompt again
    again = client.chat.completions.create(
        model=MODEL, messages=follow, max_tokens=8, temperature=0,  # type: ignore[arg-type]
        extra_body={"cache_prompt": False},
    )  # fmt: skip
    assert again.usage is not None and again.usage.prompt_tokens_details is not None
    assert again.usage.prompt_tokens_details.cached_tokens == 0
