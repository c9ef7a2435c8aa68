"""Running generations for a request: admission, choices, stall timeouts, disconnects.

Every choice of a request is admitted before the response starts, so capacity and context
errors are still real HTTP statuses; after that, errors travel inside the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, TypeVar

from fastapi import Request

from kaiyuan.engines.base import EventStream, Finish, GenerationEvent, SamplingParams, TextEngine
from kaiyuan.errors import EngineTimeout
from kaiyuan.server.serving.meter import METER

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


async def open_streams(
    engine: TextEngine, jobs: Sequence[tuple[list[int], SamplingParams]], media: Any = None
) -> list[EventStream]:
    """Admit every job (all with the same ``media``: images' pixels) or none."""
    opened: list[EventStream] = []
    try:
        for prompt, params in jobs:
            opened.append(engine.generate(prompt, params, media))
    except BaseException:
        for stream in opened:
            await stream.aclose()
        raise
    return opened


class _Watchdog:
    """Cancels the task waiting on an engine that stays silent for ``stall`` seconds.

    One timer, re-armed at most once per ``stall``: an ``asyncio.timeout`` around each event
    cost a timer per token on the event loop. ``since`` is when the current wait began (None
    between waits: a slow client reading the stream is not a silent engine)."""

    def __init__(self, stall: float) -> None:
        self.loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None  # guarded() only runs inside a task
        self.task = task
        self.stall = stall
        self.since: float | None = None
        self.fired = False
        self.handle = self.loop.call_later(stall, self._check)

    def _check(self) -> None:
        now = self.loop.time()
        if self.since is not None and now - self.since >= self.stall:
            self.fired = True
            self.task.cancel()
            return
        start = now if self.since is None else self.since
        self.handle = self.loop.call_at(start + self.stall, self._check)


async def guarded(stream: EventStream, stall: float) -> AsyncIterator[GenerationEvent]:
    """The stream's events; a silent engine becomes :class:`EngineTimeout`. Always closes."""
    dog = _Watchdog(stall)
    meter = METER.get()
    try:
        while True:
            dog.since = dog.loop.time()
            try:
                event = await anext(stream)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if dog.fired and dog.task.uncancel() == 0:  # ours, and nobody else's
                    raise EngineTimeout(
                        f"the engine produced nothing for {stall:g} s; the request was stopped"
                    ) from None
                raise
            finally:
                dog.since = None
            if meter is not None:
                if isinstance(event, Finish):
                    meter.finish(event)
                elif event.text:
                    meter.text()
            yield event
    finally:
        dog.handle.cancel()
        await stream.aclose()


async def merge(
    streams: list[EventStream], stall: float
) -> AsyncIterator[tuple[int, GenerationEvent]]:
    """Events of all streams as ``(stream index, event)``, in arrival order."""
    if len(streams) == 1:
        async for event in guarded(streams[0], stall):
            yield 0, event
        return
    queue: asyncio.Queue[tuple[int, GenerationEvent | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, stream: EventStream) -> None:
        try:
            async for event in guarded(stream, stall):
                await queue.put((index, event))
        except Exception as exc:
            await queue.put((index, exc))
        finally:
            await queue.put((index, None))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        running = len(tasks)
        while running:
            index, item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def unless_disconnected(request: Request, work: Awaitable[T], poll: float = 0.5) -> T:
    """Await ``work``, cancelling it (and raising :class:`ClientGone`) if the client leaves."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientGone
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
