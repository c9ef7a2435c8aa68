"""Streamed chat with sampling, the path users take: kaiyuan against llama.cpp's llama-server.

Both serve the same GGUF (the bundled SmolLM2) with the same slots and threads. For 1, 2, 4
and 8 concurrent streams — distinct prompts, ``/v1/chat/completions``, ``stream: true``,
temperature 0.7 with one explicit sampler chain (top_k 40, top_p 0.95, min_p 0.05, no
repetition penalty), a seed per request, end tokens banned so every stream makes exactly
``--tokens`` tokens — it measures aggregate tokens/s and time to first token (p50/p90).
Targets alternate within each round (the order flips every round); the ratio to the first
target is taken per round, and medians over rounds are reported.

kaiyuan's ``/v1/completions`` with the same rendered prompt is measured too (``kaiyuan:
completions``), so the cost of the chat path itself (template, parsers, chunk assembly) shows.

    .venv/bin/python benchmarks/chat_streams.py [--rounds 3] [--tokens 128] [--threads 2]
        [--llama-server PATH] [--url NAME=URL ...] [--hog N]

``--llama-server`` defaults to the binary scripts/llama_server.py builds from the pinned sdist.
``--url NAME=URL`` adds any OpenAI-compatible server that already serves the model (vLLM,
Ollama, another kaiyuan); ``--model`` names the model there. ``--hog N`` keeps N cores busy
with spinning processes during the measurement (a busy laptop).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from concurrency import BAN, FRESH, MODEL, TOPICS, chatml, pct, start
from kaiyuan.store import resolve

# The same model, prompts, server start-up and percentiles as the concurrency benchmark.
SAMPLING = {"temperature": 0.7, "top_p": 0.95, "top_k": 40, "min_p": 0.05}
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@dataclass
class Target:
    name: str
    url: str
    model: str
    path: str = "chat"  # or "completions"
    extra: dict[str, Any] = field(default_factory=dict)  # server-specific body fields


def body(target: Target, topic: str, tokens: int, seed: int) -> dict[str, Any]:
    user = f"Write a long story about {topic}."
    common = {"model": target.model, "max_tokens": tokens, "logit_bias": BAN, "stream": True,
              "seed": seed, **SAMPLING, **target.extra}  # fmt: skip
    if target.path == "completions":
        return {**common, "prompt": chatml(user)}
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
    return {**common, "messages": messages}


async def one(client: httpx.AsyncClient, target: Target, request: dict[str, Any]) -> float:
    """Time to the first generated text of one stream, which is read to its end."""
    path = "/v1/chat/completions" if target.path == "chat" else "/v1/completions"
    began = time.perf_counter()
    first = None
    async with client.stream("POST", target.url + path, json=request) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if first is not None or not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            piece = choices[0].get("delta", {}).get("content") or choices[0].get("text")
            if piece:
                first = time.perf_counter() - began
    return first if first is not None else float("nan")


async def level(target: Target, n: int, tokens: int, salt: int) -> tuple[float, list[float]]:
    """(aggregate tokens/s, TTFTs) of ``n`` concurrent streams."""
    async with httpx.AsyncClient(timeout=600, limits=FRESH) as client:
        requests = [body(target, TOPICS[i % len(TOPICS)], tokens, salt * 100 + i)
                    for i in range(n)]  # fmt: skip
        began = time.perf_counter()
        ttfts = await asyncio.gather(*(one(client, target, r) for r in requests))
        wall = time.perf_counter() - began
    return n * tokens / wall, list(ttfts)


def spin() -> None:
    while True:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    default_server = Path.home() / ".cache" / "kaiyuan-build" / "llama-server-0.3.36"
    parser.add_argument("--llama-server", type=Path, default=default_server)
    parser.add_argument("--no-llama-server", action="store_true")
    parser.add_argument("--url", action="append", default=[], metavar="NAME=URL")
    parser.add_argument("--model", default=MODEL, help="model id at the --url servers")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument(
        "--threads",
        type=int,
        help="fixed threads (default: kaiyuan's own "
        "choice, the free cores; llama-server gets every core)",
    )
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--streams", default="1,2,4,8", help="stream counts, comma-separated")
    parser.add_argument("--hog", type=int, default=0, help="cores kept busy meanwhile")
    parser.add_argument("--kaiyuan-arg", action="append", default=[], help="extra serve flag")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    args = parser.parse_args()
    levels = [int(n) for n in args.streams.split(",")]
    _, gguf = resolve(MODEL)
    kaiyuan = str(Path(sys.executable).with_name("kaiyuan"))
    fixed = ["--threads", str(args.threads)] if args.threads else []
    procs = [start([kaiyuan, "serve", "--port", "8801", "--parallel", str(args.parallel),
                    "--context-length", "2048", "--max-queue", "32", *fixed, *args.kaiyuan_arg],
                   8801)]  # fmt: skip
    threads = args.threads or os.cpu_count() or 2
    # kaiyuan's own repetition guard for this model is turned off: both sides do the same work
    off = {"repetition_penalty": 1.0}
    targets = [
        Target("kaiyuan", "http://127.0.0.1:8801", MODEL, "chat", off),
        Target("kaiyuan: completions", "http://127.0.0.1:8801", MODEL, "completions", off),
    ]
    if not args.no_llama_server:
        procs.append(start([str(args.llama_server), "-m", str(gguf), "--port", "8802",
                            "--host", "127.0.0.1", "-np", str(args.parallel),
                            "-c", str(2048 * args.parallel), "-t", str(threads),
                            "-tb", str(threads)], 8802))  # fmt: skip
        targets.append(Target("llama-server", "http://127.0.0.1:8802", MODEL, "chat",
                              {"repeat_penalty": 1.0}))  # fmt: skip
    for spec in args.url:
        name, _, url = spec.partition("=")
        targets.append(Target(name, url.rstrip("/").removesuffix("/v1"), args.model))
    hogs = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.hog)]
    results: dict[str, dict[int, list[tuple[float, list[float]]]]] = {
        t.name: {n: [] for n in levels} for t in targets
    }
    try:
        for target in targets:  # warm-up
            asyncio.run(level(target, 2, 16, 0))
        for hog in hogs:
            hog.start()
        for r in range(args.rounds):
            order = targets if r % 2 == 0 else list(reversed(targets))
            for n in levels:
                for target in order:
                    results[target.name][n].append(
                        asyncio.run(level(target, n, args.tokens, r + 1))
                    )
    finally:
        for hog in hogs:
            hog.kill()
        for proc in procs:
            proc.terminate()
            proc.wait()
    report(args, levels, targets, results)


def report(
    args: argparse.Namespace,
    levels: list[int],
    targets: list[Target],
    results: dict[str, dict[int, list[tuple[float, list[float]]]]],
) -> None:
    print(f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, "
          f"threads {args.threads or 'auto'}, {args.parallel} slots, {args.hog} cores hogged; "
          f"{args.rounds} rounds; {args.tokens} tokens per stream")  # fmt: skip
    base = targets[0].name
    print("| streams | target | tok/s (median) | ratio to kaiyuan chat, per round | median "
          "| TTFT p50/p90 ms |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for n in levels:
        for target in targets:
            runs = results[target.name][n]
            rates = [rate for rate, _ in runs]
            ttfts = [t for _, ts in runs for t in ts]
            # kaiyuan chat / this target, round by round
            ratios = [b / rate for (b, _), rate in zip(results[base][n], rates, strict=True)]
            shown = ", ".join(f"{x:.2f}" for x in ratios) if target.name != base else "—"
            med = f"{statistics.median(ratios):.3f}" if target.name != base else "—"
            print(f"| {n} | {target.name} | {statistics.median(rates):.1f} | {shown} | {med} "
                  f"| {pct(ttfts, 0.5) * 1e3:.0f}/{pct(ttfts, 0.9) * 1e3:.0f} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
