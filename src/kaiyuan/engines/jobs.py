"""A generation request as a backend's worker thread sees it, and the way back to the loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from kaiyuan.engines.base import Finish, GenerationEvent, SamplingParams
from kaiyuan.errors import Overloaded


@dataclass(slots=True, eq=False)
class Job:
    prompt: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[GenerationEvent | BaseException] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    reused: int = 0  # prompt tokens found in the cache (for tests and benchmarks)
    media: Any = None  # model inputs beside the tokens (an image's pixels), from TextEngine.encode
    constraint: Any = None  # a backend's compiled grammar for this request
    created: float = field(default_factory=time.monotonic)
    queued: float = 0.0  # seconds from creation to a slot

    def send(self, event: GenerationEvent | BaseException) -> None:
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, event)
        except RuntimeError:  # the loop is gone: nobody is listening any more
            self.cancelled.set()


class Outbox:
    """Events a worker thread produced in one step, handed to the event loop in ONE call: one
    wake-up of the loop per step, not one per token of every request (measured: the loop's
    share of the CPU is what a 2-core machine takes from llama.cpp's threads)."""

    def __init__(self) -> None:
        self._items: list[tuple[Job, GenerationEvent | BaseException]] = []

    def put(self, job: Job, event: GenerationEvent | BaseException) -> None:
        self._items.append((job, event))

    def flush(self) -> None:
        if not self._items:
            return
        items, self._items = self._items, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Job, Any]]] = {}
        for job, event in items:
            by_loop.setdefault(job.loop, []).append((job, event))
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, batch)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                for job, _ in batch:
                    job.cancelled.set()


def _deliver(batch: list[tuple[Job, Any]]) -> None:
    for job, event in batch:
        job.out.put_nowait(event)


async def events(job: Job) -> AsyncIterator[GenerationEvent]:
    """The job's events on the event loop, ending after Finish (an error is raised)."""
    while True:
        event = await job.out.get()
        if isinstance(event, BaseException):
            raise event
        yield event
        if isinstance(event, Finish):
            return


class Admission:
    """How many generations a backend has taken on, against its capacity (thread-safe: the
    count drops when a stream closes, which may happen on any thread)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.count = 0
        self._lock = threading.Lock()

    def admit(self, model_id: str) -> None:
        with self._lock:
            if self.count >= self.capacity:
                raise Overloaded(f"model '{model_id}' is at capacity; retry shortly")
            self.count += 1

    def release(self) -> None:
        with self._lock:
            self.count -= 1
