"""``kaiyuan eval``: every model answers every item of every suite, concurrently, resumably.

Each (model, suite) pair appends one JSON line per finished item to
``OUT/results/<model>/<suite>.jsonl`` as soon as it is scored, so a run that stops (Ctrl-C, a
crash, a reboot) loses at most the items in flight: the next run with the same ``--out`` skips
what is done and retries what failed. Lines written with another prompt template are refused
rather than mixed in. Models run one after the other, so each one's speed is its own.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import openai

from kaiyuan.evals import client as endpoint
from kaiyuan.evals.suites import Item, Suite, SuiteError

Progress = Callable[[str, str, int, int], None]  # model, suite, done, total


@dataclass(slots=True)
class Plan:
    models: list[str]
    suites: list[Suite]
    out: Path
    endpoint: str
    limit: int | None = None
    concurrency: int = 4
    max_tokens: int | None = None  # None: each suite's own
    temperature: float = 0.0
    seed: int = 0
    dollars_per_hour: float | None = None
    _items: dict[str, list[Item]] = field(default_factory=dict, repr=False)

    def items(self, suite: Suite) -> list[Item]:
        """The suite's items up to the limit, read once (the runner and the report share them)."""
        if suite.name not in self._items:
            items = suite.items()
            self._items[suite.name] = items[: self.limit] if self.limit else items
        return self._items[suite.name]


def results_path(out: Path, model: str, suite: Suite) -> Path:
    """Model ids may hold "/" or ":" (vLLM's "Qwen/Qwen3-8B", Ollama's "qwen3:8b"): quoted
    into one path component, never "." or ".." (nor hidden)."""
    return out / "results" / _component(model) / f"{_component(suite.name)}.jsonl"


def _component(name: str) -> str:
    quoted = quote(name, safe="")
    return "%2E" + quoted[1:] if quoted.startswith(".") else quoted


def read_results(path: Path, suite: Suite) -> dict[str, dict[str, Any]]:
    """The records of a results file by item id (the last line wins); a line cut short by a
    crash is ignored, one from another template version is refused."""
    records: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("template_hash") != suite.template_hash:
            raise SuiteError(
                f"{path.parent.parent.parent} holds {suite.name} results made with another "
                "prompt template: choose a new --out directory to compare them"
            )
        records[record["id"]] = record
    return records


async def run(plan: Plan, client: openai.AsyncOpenAI, progress: Progress | None = None) -> None:
    for model in plan.models:
        for suite in plan.suites:
            await _run_pair(plan, client, model, suite, progress)


async def _run_pair(
    plan: Plan, client: openai.AsyncOpenAI, model: str, suite: Suite, progress: Progress | None
) -> None:
    items = plan.items(suite)
    path = results_path(plan.out, model, suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = {key for key, record in read_results(path, suite).items() if record.get("error") is None}
    todo = [item for item in items if item.id not in done]
    finished = len(items) - len(todo)
    if progress:
        progress(model, suite.name, finished, len(items))
    queue: asyncio.Queue[Item] = asyncio.Queue()
    for item in todo:
        queue.put_nowait(item)

    with path.open("a", encoding="utf-8") as sink:
        if sink.tell() and _last_byte(path) != b"\n":
            sink.write("\n")  # a line cut short by a crash stays on its own line

        async def worker() -> None:
            nonlocal finished
            while not queue.empty():
                record = await _answer(plan, client, model, suite, queue.get_nowait())
                sink.write(json.dumps(record, ensure_ascii=False) + "\n")
                sink.flush()
                finished += 1
                if progress:
                    progress(model, suite.name, finished, len(items))

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(max(1, min(plan.concurrency, len(todo)))):
                    group.create_task(worker())
        except BaseExceptionGroup as failures:
            raise failures.exceptions[0] from None


async def _answer(
    plan: Plan, client: openai.AsyncOpenAI, model: str, suite: Suite, item: Item
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": item.id,
        "model": model,
        "suite": suite.name,
        "template_hash": suite.template_hash,
        "messages": item.messages,  # the prompt as sent, so each answer can be read beside it
    }
    try:
        reply = await endpoint.complete(
            client,
            model,
            item.messages,
            max_tokens=plan.max_tokens or suite.max_tokens,
            temperature=plan.temperature,
            seed=plan.seed,
        )
    except endpoint.RequestFailed as exc:
        now = time.time()
        return record | {"error": str(exc), "timing": {"started": now, "finished": now}}
    score = await asyncio.to_thread(suite.score, item, reply.content)
    return record | {
        "error": None,
        "content": reply.content,
        "reasoning": reply.reasoning,
        "finish_reason": reply.finish_reason,
        "score": score.to_dict(),
        "timing": reply.timing.to_dict(),
        "estimated_tokens": reply.estimated_tokens,
    }


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1)
