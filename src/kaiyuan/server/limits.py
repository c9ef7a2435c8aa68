"""Per-key limits. In memory: requests per minute and tokens per minute (sliding 60-second
windows; a request's tokens count when it ends) and requests at once. Over one, a 429 with
``Retry-After`` and OpenAI's ``x-ratelimit-*`` headers, which every keyed answer carries so a
client can slow down before it is refused. Budgets (tokens or dollars) per day or month come
from the usage rows (a spent budget is a 429 with OpenAI's ``insufficient_quota``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from kaiyuan.db.keys import ApiKey
from kaiyuan.db.usage import UsageStore, period_start
from kaiyuan.errors import KaiyuanError

WINDOW = 60.0
# The headers a limited answer may carry (CORS exposes them to browser apps).
LIMIT_HEADERS = (
    "retry-after",
    *(f"x-ratelimit-{what}-{unit}" for what in ("limit", "remaining", "reset")
      for unit in ("requests", "tokens")),
)  # fmt: skip


class RateLimited(KaiyuanError):
    status = 429
    type = "requests"  # OpenAI's type for request-rate 429s
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))
        self.headers = {**headers, "retry-after": str(self.retry_after)}


class QuotaExceeded(KaiyuanError):
    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"


@dataclass(slots=True)
class _KeyState:
    started: deque[float] = field(default_factory=deque)  # request start times in the window
    spent: deque[tuple[float, int]] = field(default_factory=deque)  # (end time, tokens)
    running: int = 0

    def prune(self, now: float) -> None:
        while self.started and now - self.started[0] >= WINDOW:
            self.started.popleft()
        while self.spent and now - self.spent[0][0] >= WINDOW:
            self.spent.popleft()


@dataclass(slots=True)
class Ticket:
    """One admitted request: its headers, and its place among the key's running ones."""

    limiter: Limiter | None
    key_id: str  # the key's id, or "id/model" for its limits on one model
    headers: dict[str, str]
    done: bool = False

    def release(self, tokens: int = 0) -> None:
        """The request ended, having used ``tokens`` (prompt and completion)."""
        if not self.done and self.limiter is not None:
            self.done = True
            state = self.limiter._states[self.key_id]
            state.running -= 1
            if tokens:
                state.spent.append((time.monotonic(), tokens))


@dataclass(slots=True, frozen=True)
class _Rule:
    scope: str  # where the counts are kept
    who: str  # for the messages
    rpm: int | None
    tpm: int | None
    parallel: int | None


class Limiter:
    def __init__(self) -> None:
        self._states: dict[str, _KeyState] = {}

    def admit(self, key: ApiKey, now: float | None = None) -> Ticket:
        """Count a request against ``key`` (raises RateLimited when over a limit)."""
        rule = _Rule(key.id, f"API key '{key.name}'", key.rpm, key.tpm, key.parallel)
        return self._admit(rule, now)

    def admit_model(self, key: ApiKey, model: str, now: float | None = None) -> Ticket | None:
        """Count a request against the key's limits on ``model``, if it has any."""
        limits = (key.model_limits or {}).get(model)
        if not limits:
            return None
        who = f"API key '{key.name}' on model '{model}'"
        rule = _Rule(f"{key.id}/{model}", who, limits.get("rpm"), limits.get("tpm"),
                     limits.get("parallel"))  # fmt: skip
        return self._admit(rule, now)

    def _admit(self, rule: _Rule, now: float | None) -> Ticket:
        if rule.rpm is None and rule.parallel is None and rule.tpm is None:
            return Ticket(None, rule.scope, {})
        now = time.monotonic() if now is None else now
        state = self._states.setdefault(rule.scope, _KeyState())
        state.prune(now)
        headers: dict[str, str] = {}
        if rule.rpm is not None:
            reset = WINDOW - (now - state.started[0]) if state.started else 0.0
            left = rule.rpm - len(state.started)
            headers = {
                "x-ratelimit-limit-requests": str(rule.rpm),
                "x-ratelimit-remaining-requests": str(max(left - 1, 0)),
                "x-ratelimit-reset-requests": f"{max(reset, 0.0):.3f}s",
            }
            if left <= 0:
                raise RateLimited(
                    f"{rule.who} is over its limit of {rule.rpm} requests per "
                    f"minute; retry in {math.ceil(reset)} s",
                    retry_after=reset,
                    headers={**headers, "x-ratelimit-remaining-requests": "0"},
                )
        if rule.tpm is not None:
            used = sum(n for _, n in state.spent)
            reset = WINDOW - (now - state.spent[0][0]) if state.spent else 0.0
            tokens = {
                "x-ratelimit-limit-tokens": str(rule.tpm),
                "x-ratelimit-remaining-tokens": str(max(rule.tpm - used, 0)),
                "x-ratelimit-reset-tokens": f"{max(reset, 0.0):.3f}s",
            }
            headers = {**headers, **tokens}
            if used >= rule.tpm:
                raise RateLimited(
                    f"{rule.who} used {used} tokens in the last minute, over its "
                    f"limit of {rule.tpm}; retry in {math.ceil(reset)} s",
                    retry_after=reset,
                    headers=headers,
                )
        if rule.parallel is not None and state.running >= rule.parallel:
            raise RateLimited(
                f"{rule.who} already has {state.running} requests running, its "
                f"limit; retry when one ends",
                retry_after=1,
                headers=headers,
            )
        state.started.append(now)
        state.running += 1
        return Ticket(self, rule.scope, headers)


class Budgets:
    """Budgets per period, in tokens or dollars: the usage rows' sums (read off the event loop,
    at most every ``ttl`` seconds) plus what ended since that read."""

    def __init__(self, usage: UsageStore, ttl: float = 5.0) -> None:
        self.usage = usage
        self.ttl = ttl
        # key -> (read at, period start, tokens used, dollars spent)
        self._used: dict[str, tuple[float, datetime, int, float]] = {}

    async def check(self, key: ApiKey) -> None:
        if key.budget_tokens is None and key.budget_usd is None:
            return
        since = period_start(key.period)
        read = self._used.get(key.id)
        if read is None or read[1] != since or time.monotonic() - read[0] > self.ttl:
            used, cost = await asyncio.to_thread(self.usage.spent_since, key.id, since)
            read = self._used[key.id] = (time.monotonic(), since, used, cost)
        resets = f"it resets at the start of the next {key.period}"
        if key.budget_tokens is not None and read[2] >= key.budget_tokens:
            raise QuotaExceeded(
                f"API key '{key.name}' has used its budget of {key.budget_tokens} tokens this "
                f"{key.period} ({read[2]} used); {resets}"
            )
        if key.budget_usd is not None and read[3] >= key.budget_usd:
            raise QuotaExceeded(
                f"API key '{key.name}' has spent its budget of ${key.budget_usd:.2f} this "
                f"{key.period} (${read[3]:.4f} spent); {resets}"
            )

    def spent(self, key_id: str, tokens: int, dollars: float = 0.0) -> None:
        read = self._used.get(key_id)
        if read is not None and (tokens or dollars):
            self._used[key_id] = (read[0], read[1], read[2] + tokens, read[3] + dollars)
