"""Latency, throughput and cost, with EvalScope's definitions (the field's reference):

- TTFT: from sending the request to the first chunk that carries output (a role-only chunk is
  not output: some servers send it before prefill);
- TPOT: (latency − TTFT) / (output tokens − 1), per request with more than one output token;
- ITL: every gap between consecutive output chunks, pooled over requests;
- throughput: output tokens over the time at least one request was in flight (the union of the
  requests' intervals, so pauses and resumed runs do not count);
- cost: $/hour × that busy time, per million tokens (all, and output only).

And the uncertainty of a score that is a share of items (accuracy, pass@1, refusal rate): its
standard error as lm-eval reports it and a 95% Wilson score interval.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

PERCENTILES = (50, 90, 99)


@dataclass(slots=True)
class Timing:
    """One streamed request, as the client saw it (seconds since the epoch)."""

    started: float
    finished: float
    chunk_times: list[float] = field(default_factory=list)  # chunks that carried output
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def latency(self) -> float:
        return self.finished - self.started

    @property
    def ttft(self) -> float | None:
        return self.chunk_times[0] - self.started if self.chunk_times else None

    @property
    def tpot(self) -> float | None:
        if self.ttft is None or self.completion_tokens < 2:
            return None
        return (self.latency - self.ttft) / (self.completion_tokens - 1)

    @property
    def itl(self) -> list[float]:
        times = self.chunk_times
        return [b - a for a, b in itertools.pairwise(times)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "finished": self.finished,
            "chunk_times": [round(t - self.started, 6) for t in self.chunk_times],
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Timing:
        started = float(data["started"])
        return cls(
            started=started,
            finished=float(data["finished"]),
            chunk_times=[started + float(t) for t in data.get("chunk_times", [])],
            prompt_tokens=int(data.get("prompt_tokens", 0)),
            completion_tokens=int(data.get("completion_tokens", 0)),
        )


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99 by linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return {f"p{p}": None for p in PERCENTILES}
    ordered = sorted(values)
    out: dict[str, float | None] = {}
    for p in PERCENTILES:
        rank = (len(ordered) - 1) * p / 100
        low = int(rank)
        high = min(low + 1, len(ordered) - 1)
        out[f"p{p}"] = ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
    return out


def busy_seconds(intervals: Iterable[tuple[float, float]]) -> float:
    """The length of the union of [start, end] intervals."""
    total, current_start, current_end = 0.0, None, None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None and current_start is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None and current_start is not None:
        total += current_end - current_start
    return total


def summarise(timings: Sequence[Timing], dollars_per_hour: float | None = None) -> dict[str, Any]:
    """The speed and cost figures of a set of requests."""
    busy = busy_seconds((t.started, t.finished) for t in timings)
    prompt = sum(t.prompt_tokens for t in timings)
    output = sum(t.completion_tokens for t in timings)
    summary: dict[str, Any] = {
        "requests": len(timings),
        "busy_seconds": busy,
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "output_tokens_per_second": output / busy if busy > 0 else None,
        "requests_per_second": len(timings) / busy if busy > 0 else None,
        "ttft": percentiles([t.ttft for t in timings if t.ttft is not None]),
        "tpot": percentiles([t.tpot for t in timings if t.tpot is not None]),
        "itl": percentiles([gap for t in timings for gap in t.itl]),
        "latency": percentiles([t.latency for t in timings]),
        "dollars_per_hour": dollars_per_hour,
        "cost_dollars": None,
        "cost_per_million_tokens": None,
        "cost_per_million_output_tokens": None,
    }
    if dollars_per_hour is not None:
        cost = dollars_per_hour * busy / 3600
        summary["cost_dollars"] = cost
        if prompt + output:
            summary["cost_per_million_tokens"] = cost / (prompt + output) * 1e6
        if output:
            summary["cost_per_million_output_tokens"] = cost / output * 1e6
    return summary


# --- the uncertainty of a score -------------------------------------------------------------
Z95 = statistics.NormalDist().inv_cdf(0.975)  # 1.96: both tails of a 95% interval


def stderr(values: Sequence[float]) -> float | None:
    """The standard error of a mean as lm-eval reports it (its ``mean_stderr``): the sample
    standard deviation, with n − 1, over √n. None for fewer than two values."""
    if len(values) < 2:
        return None
    return statistics.stdev(values) / math.sqrt(len(values))


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``successes`` out of ``n``: it stays inside [0, 1] and is
    not zero-width at 0 of n or n of n, where p ± z·stderr fails (2 of 8: 0.07–0.59)."""
    if not 0 <= successes <= n or n == 0:
        raise ValueError(f"no proportion in {successes} of {n}")
    p = successes / n
    shrink = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / shrink
    half = z / shrink * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion(successes: int, n: int) -> dict[str, Any]:
    """A share of ``n`` items with its uncertainty: ``value``, ``n``, ``stderr`` (of the n
    0/1 values, so √(p(1 − p)/(n − 1))) and the 95% Wilson interval ``ci95``; all None but
    ``n`` when there are no items."""
    if n == 0:
        return {"value": None, "n": 0, "stderr": None, "ci95": None}
    return {
        "value": successes / n,
        "n": n,
        "stderr": stderr([1.0] * successes + [0.0] * (n - successes)),
        "ci95": list(wilson(successes, n)),
    }
