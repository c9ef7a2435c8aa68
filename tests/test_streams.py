"""serving/streams.guarded: a silent engine is cut at the stall timeout, and nothing else is."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from kaiyuan.engines.base import Delta, GenerationEvent
from kaiyuan.errors import EngineTimeout
from kaiyuan.server.serving.streams import guarded

STALL = 0.3


async def paced(gaps: list[float]) -> AsyncIterator[GenerationEvent]:
    for gap in gaps:
        await asyncio.sleep(gap)
        yield Delta("x")


async def read(stream: AsyncIterator[GenerationEvent], pause: float = 0.0) -> int:
    count = 0
    async for _ in guarded(stream, STALL):  # type: ignore[arg-type]
        count += 1
        await asyncio.sleep(pause)
    return count


def test_events_closer_than_the_stall_never_time_out_however_long_the_stream() -> None:
    # 12 gaps of a third of the stall: four times the stall in all, never silent for one
    assert asyncio.run(read(paced([STALL / 3] * 12))) == 12


def test_a_silent_engine_is_cut_with_engine_timeout() -> None:
    with pytest.raises(EngineTimeout, match="produced nothing"):
        asyncio.run(read(paced([0.0, 0.0, 60.0])))


def test_a_slow_reader_is_not_a_silent_engine() -> None:
    # The consumer pauses twice the stall after each event; the engine itself answers at once.
    assert asyncio.run(read(paced([0.0] * 3), pause=2 * STALL)) == 3


def test_a_cancelled_reader_stays_cancelled() -> None:
    async def main() -> None:
        task = asyncio.create_task(read(paced([60.0])))
        await asyncio.sleep(STALL / 3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
