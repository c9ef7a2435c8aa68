"""The README's own snippet, asked N times with the request's defaults: how good is the answer?

Starts `kaiyuan serve` on the bundled model (or uses --url), then sends the README's question
("What is the capital of France?") with no sampling parameters and no max_tokens, as a new user
would, through the official `openai` client. Reports how many answers name Paris, the median and
longest time, and the longest answer in tokens. A request still running after --cut seconds is
abandoned and counted as a run-away (its time is written as ">cut").

    .venv/bin/python benchmarks/first_answer.py [--runs 20] [--cut 120] [--url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date

import httpx
from openai import APITimeoutError, OpenAI

MODEL = "smollm2-135m-instruct"
QUESTION = "What is the capital of France?"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(port: int, home: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KAIYUAN_HOME": home}
    cmd = [sys.executable, "-m", "kaiyuan", "serve", "--port", str(port), "--parallel", "1"]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--cut", type=float, default=120.0)
    parser.add_argument("--url", help="an OpenAI-compatible base URL (default: start kaiyuan)")
    args = parser.parse_args()
    server = None
    with tempfile.TemporaryDirectory() as home:
        url = args.url
        if url is None:
            port = free_port()
            server = start_server(port, home)
            url = f"http://127.0.0.1:{port}/v1"
        client = OpenAI(base_url=url, api_key="unused", timeout=args.cut, max_retries=0)
        rows = []
        try:
            for _ in range(args.runs):
                start = time.monotonic()
                try:
                    reply = client.chat.completions.create(
                        model=MODEL, messages=[{"role": "user", "content": QUESTION}]
                    )
                except APITimeoutError:
                    rows.append({"paris": False, "seconds": None, "tokens": None, "text": ""})
                    continue
                text = reply.choices[0].message.content or ""
                tokens = reply.usage.completion_tokens if reply.usage else None
                seconds = time.monotonic() - start
                rows.append(
                    {
                        "paris": "paris" in text.lower(),
                        "seconds": seconds,
                        "tokens": tokens,
                        "text": text[:120],
                    }
                )
        finally:
            if server is not None:
                server.terminate()
                server.wait(10)
    times = [r["seconds"] for r in rows if r["seconds"] is not None]
    cut = sum(r["seconds"] is None for r in rows)
    summary = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "runs": len(rows),
        "paris": sum(r["paris"] for r in rows),
        "median_s": round(statistics.median(times), 2) if times else None,
        "longest_s": f">{args.cut:g}" if cut else round(max(times), 2),
        "runaways": cut,
        "longest_tokens": max((r["tokens"] or 0) for r in rows),
    }
    for row in rows:
        print(json.dumps(row, ensure_ascii=False))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
