"""The cost of ``cache_prompt: false`` (reproducible greedy output): a follow-up turn's time to
first token with the cached prefix reused against read in full.

A conversation grows turn by turn (greedy, the bundled model); at each turn the same request is
sent twice, once with the cache and once without, in alternating order. Reported per prompt
length: median TTFT of each and their ratio.

    .venv/bin/python benchmarks/prompt_cache.py [--turns 6] [--url URL]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import httpx

MODEL = "smollm2-135m-instruct"


def ttft(client: httpx.Client, messages: list[dict[str, str]], cache: bool) -> tuple[float, str]:
    body: dict[str, Any] = {"model": MODEL, "messages": messages, "max_tokens": 96,
                            "temperature": 0, "stream": True, "cache_prompt": cache}  # fmt: skip
    began, first, text = time.perf_counter(), None, ""
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            piece = choices[0].get("delta", {}).get("content") or ""
            if piece and first is None:
                first = time.perf_counter() - began
            text += piece
    return first or 0.0, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    messages: list[dict[str, str]] = []
    print("| turn | prompt chars | TTFT cached ms | TTFT full read ms | ratio |")
    print("|---|---|---|---|---|")
    with httpx.Client(base_url=args.url, timeout=300) as client:
        for turn in range(args.turns):
            messages.append({"role": "user", "content": f"Tell me more, part {turn + 1}."})
            ttft(client, messages, True)  # the turn's prefix is now cached
            cached, full = [], []
            for r in range(args.repeats):
                for cache in (True, False) if r % 2 == 0 else (False, True):
                    seconds, text = ttft(client, messages, cache)
                    (cached if cache else full).append(seconds)
            messages.append({"role": "assistant", "content": text})
            chars = sum(len(m["content"]) for m in messages)
            c, f = statistics.median(cached) * 1e3, statistics.median(full) * 1e3
            print(f"| {turn + 1} | {chars} | {c:.0f} | {f:.0f} | {f / c:.1f}× |")


if __name__ == "__main__":
    main()
