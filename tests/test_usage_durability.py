"""Usage rows survive a SIGKILL under load (issue 19 item 8; T13, T15): two keys × 8 streams at
once plus 50 short requests, and the server killed mid-load, right after a client got a whole
response. After a restart: every request that got a complete response has its one row, with the
tokens the response reported; no row is half-written (nothing NULL or negative, and the daily
roll-up equals the rows' sums); the budgeted key overspent by at most what it had in flight; that
key is still refused, and the server is healthy."""

from __future__ import annotations

import itertools
import json
import signal
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from kaiyuan.db import open_database
from kaiyuan.db.keys import KeyStore, Limits
from kaiyuan.db.usage import UsageStore
from tests.conftest import MODEL
from tests.harness import KaiyuanServer, wait_for

pytestmark = pytest.mark.slow

HI = [{"role": "user", "content": "Hi"}]
NO_EOS = {"0": -100, "2": -100}  # no end of text: every request runs to its max_tokens
KEYS = ("free", "capped")
STREAMS = 8  # per key, at once; each worker streams one request after another until the kill
STREAM_TOKENS = 48
SHORT = 50  # short non-streamed requests in all, SHORT_WORKERS per key one after another
SHORT_WORKERS = 2
SHORT_TOKENS = 2
BUDGET = 1200  # tokens a day for "capped": about 15 of its streams, spent within seconds
KILL_AFTER = 30  # complete responses before the kill
# 16 streams and 4 short requests at most are under way at once: nothing waits past the queue
ARGS = ["--parallel", "8", "--max-queue", "64"]
TIMEOUT = httpx.Timeout(120, connect=30)  # a slow, busy machine


@dataclass
class Request:
    n: int  # its X-Title is req-<n>, which its usage row keeps as `app`
    key: str
    stream: bool
    max_tokens: int
    status: int | None = None
    complete: bool = False  # the whole response arrived (a stream: [DONE], then its end)
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


@dataclass
class Load:
    """The requests of all workers, as the clients saw them."""

    url: str
    secrets: dict[str, str]
    requests: list[Request] = field(default_factory=list)
    numbers: itertools.count[int] = field(default_factory=itertools.count)
    lock: threading.Lock = field(default_factory=threading.Lock)
    running: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KEYS, 0))
    on_complete: Callable[[], None] = lambda: None  # called after each complete response
    failures: list[str] = field(default_factory=list)

    def new(self, key: str, stream: bool, max_tokens: int) -> Request:
        with self.lock:
            request = Request(next(self.numbers), key, stream, max_tokens)
            self.requests.append(request)
            return request

    def snapshot(self) -> list[Request]:
        with self.lock:
            return list(self.requests)

    def send(self, http: httpx.Client, request: Request) -> None:
        body: dict[str, Any] = {"model": MODEL, "messages": HI, "max_tokens": request.max_tokens,
                                "logit_bias": NO_EOS, "stream": request.stream}  # fmt: skip
        if request.stream:
            body["stream_options"] = {"include_usage": True}
        headers = {"authorization": f"Bearer {self.secrets[request.key]}",
                   "x-title": f"req-{request.n}"}  # fmt: skip
        with http.stream("POST", self.url + "/v1/chat/completions", json=body,
                         headers=headers) as reply:  # fmt: skip
            request.status = reply.status_code
            if reply.status_code != 200:
                request.error = json.loads(reply.read())["error"]
            elif not request.stream:
                request.usage = json.loads(reply.read())["usage"]
                request.complete = True
            else:
                with self.lock:
                    self.running[request.key] += 1
                try:
                    done = False
                    for line in reply.iter_lines():
                        if line == "data: [DONE]":
                            done = True
                        elif line.startswith("data: ") and (usage := json.loads(line[6:])["usage"]):
                            request.usage = usage
                    # iter_lines ended without an error: the body's last chunk arrived as well
                    request.complete = done and request.usage is not None
                finally:
                    with self.lock:
                        self.running[request.key] -= 1

    def worker(self, key: str, stream: bool, max_tokens: int, count: int | None) -> None:
        """Requests one after another: ``count`` of them (None: no end), until the server dies
        or the key is refused."""
        with httpx.Client(timeout=TIMEOUT) as http:
            for _ in itertools.count() if count is None else range(count):
                request = self.new(key, stream, max_tokens)
                try:
                    self.send(http, request)
                except httpx.HTTPError:
                    return  # killed: the connection broke, or the next one was refused
                if request.complete:
                    self.on_complete()
                elif request.status == 429 and key == "capped":
                    return  # its budget is spent
                elif request.status != 200:
                    with self.lock:
                        self.failures.append(f"req-{request.n}: {request.status} {request.error}")
                    return


def test_usage_rows_survive_a_sigkill_under_load(tmp_path: Path) -> None:
    keys = KeyStore(open_database(tmp_path))
    _, free = keys.create("free")
    capped_key, capped = keys.create("capped", Limits(budget_tokens=BUDGET, period="day"))
    load = Load("", {"free": free, "capped": capped})
    plans: list[tuple[str, bool, int, int | None]] = [
        (key, True, STREAM_TOKENS, None) for key in KEYS for _ in range(STREAMS)
    ]
    shorts = [key for key in KEYS for _ in range(SHORT_WORKERS)]
    plans += [(key, False, SHORT_TOKENS, len(range(i, SHORT, len(shorts))))
              for i, key in enumerate(shorts)]  # fmt: skip
    assert sum(plan[3] or 0 for plan in plans) == SHORT
    threads = [threading.Thread(target=load.worker, args=plan) for plan in plans]
    killed, killing = threading.Event(), threading.Lock()

    with KaiyuanServer(home=tmp_path, args=ARGS, startup=120) as server:
        proc = server.proc
        assert proc is not None
        load.url = server.url

        def mid_load() -> bool:
            """Enough complete responses, "capped" refused for its budget after its complete
            responses alone reported the budget used, and "free" still streaming."""
            with load.lock:
                done = [r for r in load.requests if r.complete]
                spent = sum(r.usage["total_tokens"] for r in done if r.key == "capped" and r.usage)
                refused = any(r.key == "capped" and r.status == 429 for r in load.requests)
                streaming = load.running["free"] > 0
            return len(done) >= KILL_AFTER and refused and spent >= BUDGET and streaming

        def kill_right_after_a_response() -> None:  # T15: SIGKILL right after a 200
            with killing:
                if not killed.is_set() and mid_load():
                    proc.send_signal(signal.SIGKILL)
                    killed.set()

        load.on_complete = kill_right_after_a_response
        for thread in threads:
            thread.start()
        try:
            assert wait_for(lambda: killed.is_set() or not any(t.is_alive() for t in threads),
                            300), "the load did not end"  # fmt: skip
            assert killed.is_set(), (load.failures, server.log())
        finally:
            proc.send_signal(signal.SIGKILL)  # whatever happened above (a no-op after the kill)
            proc.wait(60)
            for thread in threads:
                thread.join(180)
    assert not any(thread.is_alive() for thread in threads)
    assert not load.failures, load.failures  # only "capped" is refused, and only with a 429
    requests = load.snapshot()
    refusals = [r.error for r in requests if r.status == 429]
    assert refusals and all(e and e["code"] == "insufficient_quota" for e in refusals), refusals
    complete = [r for r in requests if r.complete]
    assert any(r.stream for r in complete) and any(not r.stream for r in complete)
    cut = [r for r in requests if r.stream and r.key == "free" and r.status == 200 and
           not r.complete]  # fmt: skip
    assert cut, "the kill came while streams of the free key were under way"

    with KaiyuanServer(home=tmp_path, args=ARGS, startup=120) as server:
        assert httpx.get(server.url + "/health", timeout=TIMEOUT).status_code == 200
        rows = UsageStore(open_database(tmp_path)).rows(limit=100_000)

        # every complete response has its one row, with the tokens the response reported
        by_app: dict[str | None, list[Any]] = {}
        for row in rows:
            by_app.setdefault(row.app, []).append(row)
        assert len(rows) == len(by_app) <= len(requests)  # one row per request, at most
        assert set(by_app) <= {f"req-{r.n}" for r in requests}
        missing = [(r.n, r.key, r.stream) for r in complete if f"req-{r.n}" not in by_app]
        assert not missing, f"complete responses without a usage row: {missing}"
        for r in complete:
            [row] = by_app[f"req-{r.n}"]
            assert r.usage is not None
            assert (row.key_name, row.model, row.endpoint) == (r.key, MODEL, "/v1/chat/completions")
            assert row.status == 200 and not row.cancelled and row.finish_reason == "length"
            assert row.prompt_tokens == r.usage["prompt_tokens"]
            assert row.completion_tokens == r.usage["completion_tokens"] == r.max_tokens
            cached = (r.usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
            assert row.cached_tokens == cached
        # a request refused at the door (budget) leaves no row; one cut short, maybe a row
        for r in requests:
            if r.status == 429:
                assert f"req-{r.n}" not in by_app

        # the budget: a request is admitted only while the rows that ended sum below it, so
        # what is recorded exceeds it by at most the requests "capped" had under way then:
        # its workers (STREAMS + SHORT_WORKERS), each at most one prompt plus its max_tokens
        capped_rows = [row for row in rows if row.key_id == capped_key.id]
        spent = sum(row.prompt_tokens + row.completion_tokens for row in capped_rows)
        prompt = max(row.prompt_tokens for row in capped_rows)
        in_flight = STREAMS + SHORT_WORKERS
        assert BUDGET <= spent < BUDGET + in_flight * (prompt + STREAM_TOKENS), spent

        # after the restart the spent budget is still spent, and other keys are still served
        ask = {"model": MODEL, "messages": HI, "max_tokens": 1}
        reply = httpx.post(server.url + "/v1/chat/completions", json=ask, timeout=TIMEOUT,
                           headers={"authorization": f"Bearer {capped}"})  # fmt: skip
        assert reply.status_code == 429, reply.text
        assert reply.json()["error"]["code"] == "insufficient_quota"
        reply = httpx.post(server.url + "/v1/chat/completions", json=ask, timeout=TIMEOUT,
                           headers={"authorization": f"Bearer {free}"})  # fmt: skip
        assert reply.status_code == 200, reply.text

    # no row is half-written: nothing NULL that must not be, no negative counts, and the daily
    # roll-up (written in the row's transaction) equals the rows' sums
    with sqlite3.connect(tmp_path / "kaiyuan.db") as db:
        bad = db.execute(
            "SELECT id FROM usage WHERE at IS NULL OR endpoint IS NULL OR status IS NULL"
            " OR prompt_tokens IS NULL OR cached_tokens IS NULL OR completion_tokens IS NULL"
            " OR duration_ms IS NULL OR cancelled IS NULL OR cost_usd IS NULL"
            " OR prompt_tokens < 0 OR cached_tokens < 0 OR completion_tokens < 0"
            " OR cached_tokens > prompt_tokens OR duration_ms < 0 OR cost_usd < 0"
        ).fetchall()
        assert not bad, bad
        sums = (
            "count(*), sum(prompt_tokens), sum(cached_tokens), sum(completion_tokens),"
            " round(sum(cost_usd), 9)"
        )
        from_rows = db.execute(
            f"SELECT substr(at, 1, 10), coalesce(key_id, ''), coalesce(model, ''), {sums}"
            " FROM usage GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ).fetchall()
        rolled_up = db.execute(
            "SELECT day, key_id, model, requests, prompt_tokens, cached_tokens,"
            " completion_tokens, round(cost_usd, 9) FROM usage_daily ORDER BY 1, 2, 3"
        ).fetchall()
    assert from_rows == rolled_up
    assert sum(r[3] for r in rolled_up) == len(rows) + 1  # and the free key's request above
