"""Per-key request limits, in memory: requests per minute (a sliding 60-second window) and
requests at once. Over a limit the answer is a 429 with ``Retry-After`` and OpenAI's
``x-ratelimit-*-requests`` headers; every keyed answer carries the headers, so a client can
slow down before it is refused.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

from kaiyuan.db.keys import ApiKey
from kaiyuan.errors import KaiyuanError

WINDOW = 60.0


class RateLimited(KaiyuanError):
    status = 429
    type = "requests"  # OpenAI's type for request-rate 429s
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))
        self.headers = {**headers, "retry-after": str(self.retry_after)}


@dataclass(slots=True)
class _KeyState:
    started: deque[float] = field(default_factory=deque)  # request start times in the window
    running: int = 0


@dataclass(slots=True)
class Ticket:
    """One admitted request: its headers, and its place among the key's running ones."""

    limiter: Limiter | None
    key_id: str
    headers: dict[str, str]
    done: bool = False

    def release(self) -> None:
        if not self.done and self.limiter is not None:
            self.done = True
            self.limiter._states[self.key_id].running -= 1


class Limiter:
    def __init__(self) -> None:
        self._states: dict[str, _KeyState] = {}

    def admit(self, key: ApiKey, now: float | None = None) -> Ticket:
        """Count a request against ``key`` (raises RateLimited when over a limit)."""
        if key.rpm is None and key.parallel is None:
            return Ticket(None, key.id, {})
        now = time.monotonic() if now is None else now
        state = self._states.setdefault(key.id, _KeyState())
        while state.started and now - state.started[0] >= WINDOW:
            state.started.popleft()
        headers: dict[str, str] = {}
        if key.rpm is not None:
            reset = WINDOW - (now - state.started[0]) if state.started else 0.0
            left = key.rpm - len(state.started)
            headers = {
                "x-ratelimit-limit-requests": str(key.rpm),
                "x-ratelimit-remaining-requests": str(max(left - 1, 0)),
                "x-ratelimit-reset-requests": f"{max(reset, 0.0):.3f}s",
            }
            if left <= 0:
                raise RateLimited(
                    f"API key '{key.name}' is over its limit of {key.rpm} requests per "
                    f"minute; retry in {math.ceil(reset)} s",
                    retry_after=reset,
                    headers={**headers, "x-ratelimit-remaining-requests": "0"},
                )
        if key.parallel is not None and state.running >= key.parallel:
            raise RateLimited(
                f"API key '{key.name}' already has {state.running} requests running, its "
                f"limit; retry when one ends",
                retry_after=1,
                headers=headers,
            )
        state.started.append(now)
        state.running += 1
        return Ticket(self, key.id, headers)
