"""Streamed tokens/s through `kaiyuan serve` vs the same model in-process (llama-cpp-python).

Both sides get the same prompt tokens, greedy decoding, and the end-of-generation tokens
banned through logit_bias, so each run produces exactly --tokens tokens. Runs are interleaved
(server, in-process, server, ...) so machine noise hits both alike; the ratio is what counts.

    .venv/bin/python benchmarks/serve_overhead.py [--rounds 5] [--tokens 256]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import llama_cpp
import openai

from kaiyuan.store import resolve

MODEL = "smollm2-135m-instruct"
PROMPTS = [
    "Write a long story about a lighthouse keeper and a storm.",
    "Explain, step by step and in detail, how a bicycle works.",
    "Describe a journey across the mountains in many words.",
]


def chatml(prompt: str) -> str:
    return (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        f"Face<|im_end|>\n<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    )


def start_server(port: int, threads: int) -> subprocess.Popen[bytes]:
    kaiyuan = str(Path(sys.executable).with_name("kaiyuan"))
    env = {**os.environ, "KAIYUAN_HOME": tempfile.mkdtemp(prefix="kaiyuan-bench-")}
    args = [kaiyuan, "serve", "--port", str(port), "--threads", str(threads)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")


def via_server(client: openai.OpenAI, tokens: list[int], n: int, ban: dict[str, int]) -> float:
    start = time.perf_counter()
    count = 0
    stream = client.completions.create(
        model=MODEL,
        prompt=tokens,
        max_tokens=n,
        temperature=0,
        logit_bias=ban,
        stream=True,
        stream_options={"include_usage": True},
        # the same work as the in-process side: no model-default repetition guard or top-p
        extra_body={"repetition_penalty": 1.0, "top_p": 1.0},
    )
    for chunk in stream:
        if chunk.usage is not None:
            count = chunk.usage.completion_tokens
    elapsed = time.perf_counter() - start
    assert count == n, f"server produced {count} tokens, wanted {n}"
    return count / elapsed


def in_process(llm: llama_cpp.Llama, tokens: list[int], n: int, ban: dict[int, float]) -> float:
    start = time.perf_counter()
    text = "".join(
        chunk["choices"][0]["text"]
        for chunk in llm.create_completion(
            tokens, max_tokens=n, temperature=0, logit_bias=ban, stream=True
        )
    )
    elapsed = time.perf_counter() - start
    assert text, "in-process run produced nothing"
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--port", type=int, default=8791)
    args = parser.parse_args()

    _, path = resolve(MODEL)
    llm = llama_cpp.Llama(
        str(path),
        n_ctx=8192,
        n_batch=512,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    eog = [t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(llm._model.vocab, t)]
    prompts = [llm.tokenize(chatml(p).encode(), add_bos=False, special=True) for p in PROMPTS]
    server = start_server(args.port, args.threads)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{args.port}/v1", api_key="bench")
    try:
        # warm-up both sides (page cache, first-call costs)
        via_server(client, prompts[0], 16, {str(t): -100 for t in eog})
        in_process(llm, prompts[0], 16, {t: -100.0 for t in eog})
        served, local = [], []
        for r in range(args.rounds):
            for tokens in prompts:
                pair = [
                    lambda t=tokens: served.append(
                        via_server(client, t, args.tokens, {str(e): -100 for e in eog})
                    ),
                    lambda t=tokens: local.append(
                        in_process(llm, t, args.tokens, {e: -100.0 for e in eog})
                    ),
                ]
                for run in pair if r % 2 == 0 else reversed(pair):
                    run()
    finally:
        server.terminate()
        server.wait()

    s, loc = statistics.median(served), statistics.median(local)
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"{args.threads} threads; {args.rounds} rounds x {len(prompts)} prompts x "
        f"{args.tokens} tokens"
    )
    print(f"server     median {s:6.1f} tok/s  (min {min(served):.1f}, max {max(served):.1f})")
    print(f"in-process median {loc:6.1f} tok/s  (min {min(local):.1f}, max {max(local):.1f})")
    print(f"ratio server/in-process: {s / loc:.3f}")


if __name__ == "__main__":
    main()
