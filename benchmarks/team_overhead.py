"""What running kaiyuan for a team costs a request: API key check, per-key limits and budgets,
and the usage row, on the path users take (one streamed chat with sampling).

Two servers on the same bundled model, started one after the other in fresh homes:
``open`` has no key (every request still leaves its usage row and metrics), ``keyed`` has a
key with requests- and tokens-per-minute, parallel and token-budget limits, and every request
carries it (key lookup, limiter, budget read, x-ratelimit headers). Rounds alternate the two,
the order flipping every round; per round the keyed/open ratio of tokens/s and the difference
of time to first token are taken, and their medians reported. Only one server generates at a
time (the other sits idle).

The cost of the usage row itself is timed apart (``UsageStore.record`` on this machine's
SQLite), since it runs off the event loop after the response.

    .venv/bin/python benchmarks/team_overhead.py [--rounds 7] [--requests 3] [--tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from chat_streams import SAMPLING, SYSTEM
from concurrency import BAN, FRESH, MODEL, TOPICS
from kaiyuan.db import open_database
from kaiyuan.db.keys import KeyStore, Limits
from kaiyuan.db.usage import UsageRow, UsageStore


def serve(home: Path, port: int) -> subprocess.Popen[bytes]:
    log = open(home / "server.log", "wb")  # noqa: SIM115
    args = [str(Path(sys.executable).with_name("kaiyuan")), "serve", "--port", str(port),
            "--parallel", "4"]  # fmt: skip
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "KAIYUAN_HOME": str(home)})  # fmt: skip
    for _ in range(900):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"kaiyuan did not start; see {home / 'server.log'}")


async def one(url: str, headers: dict[str, str], tokens: int, seed: int) -> tuple[float, float]:
    """(tokens/s, seconds to the first text) of one streamed chat read to its end."""
    user = f"Write a long story about {TOPICS[seed % len(TOPICS)]}."
    request = {"model": MODEL, "max_tokens": tokens, "logit_bias": BAN, "stream": True,
               "seed": seed, **SAMPLING,
               "messages": [{"role": "system", "content": SYSTEM},
                            {"role": "user", "content": user}]}  # fmt: skip
    async with httpx.AsyncClient(timeout=600, limits=FRESH, headers=headers) as client:
        began = time.perf_counter()
        first = None
        async with client.stream("POST", url + "/v1/chat/completions", json=request) as reply:
            reply.raise_for_status()
            async for line in reply.aiter_lines():
                if first is None and '"content":"' in line and '"content":""' not in line:
                    first = time.perf_counter() - began
        wall = time.perf_counter() - began
    return tokens / wall, first if first is not None else float("nan")


def record_cost(samples: int = 200) -> float:
    """Milliseconds one usage row (and its daily roll-up) takes to write, median."""
    store = UsageStore(open_database(Path(tempfile.mkdtemp())))
    row = UsageRow(at=datetime.now(UTC), key_id="k", key_name="k", model=MODEL,
                   endpoint="/v1/chat/completions", app="bench", status=200, prompt_tokens=30,
                   cached_tokens=0, completion_tokens=128, ttft_ms=20.0, duration_ms=900.0,
                   finish_reason="length", cancelled=False)  # fmt: skip
    times = []
    for _ in range(samples):
        began = time.perf_counter()
        store.record(row)
        times.append((time.perf_counter() - began) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=3, help="sequential requests a round")
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()

    open_home, keyed_home = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
    limits = Limits(rpm=100_000, tpm=100_000_000, parallel=64, budget_tokens=10**12, period="day")
    _, secret = KeyStore(open_database(keyed_home)).create("bench", limits)
    servers = {"open": (open_home, 8771, {}), "keyed": (keyed_home, 8772,
               {"authorization": f"Bearer {secret}"})}  # fmt: skip
    procs = [serve(home, port) for home, port, _ in servers.values()]
    try:
        speeds: dict[str, list[float]] = {name: [] for name in servers}
        ttfts: dict[str, list[float]] = {name: [] for name in servers}
        ratios, gaps = [], []
        for _, port, headers in servers.values():  # warm-up: model loaded, caches set
            asyncio.run(one(f"http://127.0.0.1:{port}", headers, 16, 0))
        for r in range(args.rounds):
            order = list(servers) if r % 2 == 0 else list(servers)[::-1]
            this: dict[str, tuple[float, float]] = {}
            for name in order:
                _, port, headers = servers[name]
                url = f"http://127.0.0.1:{port}"
                runs = [asyncio.run(one(url, headers, args.tokens, r * 100 + i + 1))
                        for i in range(args.requests)]  # fmt: skip
                speed = statistics.median(s for s, _ in runs)
                first = statistics.median(f for _, f in runs)
                speeds[name].append(speed)
                ttfts[name].append(first)
                this[name] = (speed, first)
            ratios.append(this["keyed"][0] / this["open"][0])
            gaps.append((this["keyed"][1] - this["open"][1]) * 1e3)
            print(f"round {r + 1}: keyed/open tok/s {ratios[-1]:.3f}, "
                  f"TTFT keyed-open {gaps[-1]:+.1f} ms", flush=True)  # fmt: skip
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
    print(f"\n{datetime.now(UTC):%Y-%m-%d}, {platform.node()}, {os.cpu_count()} cores, "
          f"{args.rounds} rounds x {args.requests} streams of {args.tokens} tokens")  # fmt: skip
    for name in servers:
        print(f"  {name:<6} tok/s median {statistics.median(speeds[name]):.1f}, "
              f"TTFT median {statistics.median(ttfts[name]) * 1e3:.1f} ms")  # fmt: skip
    print(f"  keyed/open tok/s: median of per-round ratios {statistics.median(ratios):.3f}")
    print(f"  TTFT keyed-open: median of per-round differences {statistics.median(gaps):+.1f} ms")
    print(
        f"  a usage row (with its roll-up) written to SQLite: {record_cost():.2f} ms "
        "(off the event loop, after the response)"
    )


if __name__ == "__main__":
    main()
