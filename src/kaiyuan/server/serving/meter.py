"""What one request generated, counted where every text stream passes (streams.guarded), for
usage rows and token limits. The server's usage middleware opens a :class:`Meter` per request
in a context variable; everything downstream, the streamed body included, runs inside it."""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field

from kaiyuan.engines.base import Finish

METER: ContextVar[Meter | None] = ContextVar("usage_meter", default=None)
MAX_GAPS = 100_000  # inter-token gaps kept per request (for the latency histogram)


@dataclass(slots=True)
class Meter:
    started: float = field(default_factory=time.monotonic)
    model: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    first_token: float | None = None  # monotonic time of the first generated text
    last_token: float | None = None
    gaps: list[float] = field(default_factory=list)  # between pieces of text (inter-token)
    finished: int = 0  # choices that ended with a Finish
    queued: float | None = None  # seconds the longest choice waited for a slot
    cost_usd: float = 0.0  # set once the response is done (server/usage.py)

    def text(self) -> None:
        now = time.monotonic()
        if self.first_token is None:
            self.first_token = now
        elif self.last_token is not None and len(self.gaps) < MAX_GAPS:
            self.gaps.append(now - self.last_token)
        self.last_token = now

    def finish(self, event: Finish) -> None:
        self.prompt_tokens += event.prompt_tokens
        self.cached_tokens += event.cached_tokens
        self.completion_tokens += event.completion_tokens
        self.finish_reason = event.reason
        self.queued = max(self.queued or 0.0, event.queued)
        self.finished += 1

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
