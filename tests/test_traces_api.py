"""/v1/kaiyuan/runs: stored agent runs with filters, one run's steps, and the failure patterns
the audit finds (the same tool and arguments again and again, a recurring error, input that
grows while nothing new is produced). With keys, admin keys only."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kaiyuan.agent.audit import audit
from kaiyuan.agent.traces import Traces
from kaiyuan.config import Settings
from kaiyuan.engines.pool import EnginePool
from kaiyuan.server.app import create_app
from tests.fakes import ScriptedEngine
from tests.harness import serve_app


def step(index: int, kind: str, name: str, input: Any, output: Any = None, *,
         error: str | None = None, prompt: int = 0) -> dict[str, Any]:  # fmt: skip
    return {"index": index, "kind": kind, "name": name, "input": input, "output": output,
            "error": error, "usage": {"prompt_tokens": prompt, "completion_tokens": 5}}  # fmt: skip


# --- the audit, on its own -----------------------------------------------------------------
def test_a_healthy_run_has_no_flags() -> None:
    steps = [
        step(1, "model", "m", [], {"tool_calls": ["search a"]}, prompt=100),
        step(2, "tool", "search", {"q": "a"}, "found a"),
        step(3, "model", "m", [], {"tool_calls": ["search b"]}, prompt=150),
        step(4, "tool", "search", {"q": "b"}, "found b"),
        step(5, "model", "m", [], {"content": "answer"}, prompt=200),
    ]
    assert audit(steps) == []


def test_the_same_call_again_and_again() -> None:
    steps = [step(i, "tool", "fetch", {"url": "https://x.org", "n": 1}) for i in (2, 4, 6)]
    steps.append(step(8, "tool", "fetch", {"n": 1, "url": "https://x.org"}))  # key order
    steps.append(step(9, "tool", "fetch", {"url": "https://y.org"}))
    [flag] = audit(steps)
    assert flag.kind == "repeated_call" and flag.steps == [2, 4, 6, 8]
    assert "fetch" in flag.message and "4 times" in flag.message
    assert audit(steps[:2]) == []  # twice is not yet a pattern


def test_a_recurring_error() -> None:
    steps = [step(i, "tool", "code", {"src": str(i)}, error="NameError: x") for i in (1, 2, 3)]
    steps.append(step(4, "tool", "code", {"src": "ok"}, error="another error"))
    [flag] = audit(steps)
    assert flag.kind == "recurring_error" and flag.steps == [1, 2, 3]


def test_input_growing_while_nothing_new_comes_out() -> None:
    same = {"tool_calls": ["search a"]}
    steps = [step(1, "model", "m", [], same, prompt=100)]
    for i, tokens in ((3, 180), (5, 260), (7, 340)):
        steps.append(step(i, "model", "m", [], same, prompt=tokens))
        steps.append(step(i + 1, "tool", "search", {"q": f"a{i}"}, "the same"))
    flags = [f for f in audit(steps) if f.kind == "growing_input"]
    assert len(flags) == 1 and flags[0].steps == [3, 5, 7]
    # New output breaks the streak: two stale turns are not a pattern.
    steps[3]["output"] = {"content": "something new"}  # step 5
    assert not [f for f in audit(steps) if f.kind == "growing_input"]


# --- over HTTP -------------------------------------------------------------------------------
def record(traces: Traces, model: str, task: str, tools: list[tuple[str, Any, str | None]],
           status: str = "completed") -> str:  # fmt: skip
    run = traces.start(model, task)
    now = time.time()
    traces.step(run, kind="model", name=model, input=[{"role": "user", "content": task}],
                output={"content": ""}, started=now, seconds=0.1, prompt_tokens=50,
                completion_tokens=5)  # fmt: skip
    for name, arguments, error in tools:
        traces.step(run, kind="tool", name=name, input=arguments, output="result", error=error,
                    started=now, seconds=0.01)  # fmt: skip
    traces.finish(run, status=status, answer="done", citations=[], stop_reason="stop",
                  seconds=0.5)  # fmt: skip
    return run


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    with Traces(tmp_path) as traces:
        runs = {
            "plain": record(traces, "qwen", "what is 2+2", [("code", {"src": "2+2"}, None)]),
            "loop": record(traces, "qwen", "find it", [("search", {"q": "x"}, None)] * 3),
            "failed": record(
                traces, "smol", "broken", [("fetch", {"u": 1}, "refused")] * 3, status="failed"
            ),
        }
    app = create_app(Settings(home=tmp_path), EnginePool([ScriptedEngine()]))
    with serve_app(app) as url:
        yield url, runs


def test_list_filter_and_flags(served: tuple[str, dict[str, str]]) -> None:
    url, runs = served
    everything = httpx.get(url + "/v1/kaiyuan/runs").json()["data"]
    assert [r["id"] for r in everything] == [runs["failed"], runs["loop"], runs["plain"]]
    by_id = {r["id"]: r for r in everything}
    assert by_id[runs["plain"]]["flags"] == [] and by_id[runs["plain"]]["tools"] == ["code"]
    assert [f["kind"] for f in by_id[runs["loop"]]["flags"]] == ["repeated_call"]
    assert by_id[runs["loop"]]["flags"][0]["steps"] == [2, 3, 4]
    kinds = {f["kind"] for f in by_id[runs["failed"]]["flags"]}
    assert kinds == {"repeated_call", "recurring_error"}

    def ids(**query: Any) -> list[str]:
        answer = httpx.get(url + "/v1/kaiyuan/runs", params=query)
        assert answer.status_code == 200, answer.text
        return [r["id"] for r in answer.json()["data"]]

    assert ids(model="smol") == [runs["failed"]]
    assert ids(tool="search") == [runs["loop"]]
    assert ids(status="completed") == [runs["loop"], runs["plain"]]
    assert ids(flagged="true") == [runs["failed"], runs["loop"]]
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert len(ids(since=today, until=today)) == 3
    assert ids(until="2000-01-01") == []
    assert ids(limit=1) == [runs["failed"]]


def test_one_run_is_its_steps(served: tuple[str, dict[str, str]]) -> None:
    url, runs = served
    run = httpx.get(f"{url}/v1/kaiyuan/runs/{runs['loop']}").json()
    assert run["object"] == "agent.run" and run["task"] == "find it"
    assert [s["kind"] for s in run["trace"]] == ["model", "tool", "tool", "tool"]
    assert (
        run["trace"][1]["input"] == {"q": "x"} and run["trace"][0]["usage"]["prompt_tokens"] == 50
    )
    assert run["usage"]["prompt_tokens"] == 50


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/kaiyuan/runs/nope", 404),
        ("/v1/kaiyuan/runs?since=yesterday", 422),
        ("/v1/kaiyuan/runs?limit=100000", 422),
        ("/v1/kaiyuan/runs?model=" + "m" * 500, 422),
    ],
)
def test_bad_requests_get_the_error_envelope(
    served: tuple[str, dict[str, str]], path: str, status: int
) -> None:
    url, _ = served
    answer = httpx.get(url + path)
    assert answer.status_code in (status, 400), answer.text
    assert answer.json()["error"]["message"]


def test_with_keys_only_an_admin_reads_runs(tmp_path: Path) -> None:
    from kaiyuan.db import open_for
    from kaiyuan.db.keys import KeyStore, Limits

    settings = Settings(home=tmp_path)
    store = KeyStore(open_for(settings))
    _, user = store.create("user")
    _, admin = store.create("boss", Limits(admin=True))
    with Traces(tmp_path) as traces:
        run = record(traces, "qwen", "secret task", [])
    with serve_app(create_app(settings, EnginePool([ScriptedEngine()]))) as url:
        for path in ("/v1/kaiyuan/runs", f"/v1/kaiyuan/runs/{run}"):
            refused = httpx.get(url + path, headers={"authorization": f"Bearer {user}"})
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == "admin_required"
            assert "secret task" not in refused.text
            allowed = httpx.get(url + path, headers={"authorization": f"Bearer {admin}"})
            assert allowed.status_code == 200 and "secret task" in allowed.text
