"""Eval and bench runs kept in one folder (``$KAIYUAN_HOME/evals``), and runs started there in
the background (the server's /v1/kaiyuan/evals, the web app's evals page).

A run is a folder named by its id, holding what `kaiyuan eval` and `kaiyuan bench` write
(``results/<model>/<suite>.jsonl``, ``report.json`` and ``report.html``, or ``bench.json`` and
``bench.html``) and, for a run started here, ``job.json``: what was asked and, once it ends,
how (a ``job.json`` still saying "running" after a restart reads as interrupted). A folder
written there by ``kaiyuan eval -o`` is listed too.

A run works in a thread of its own with its own event loop, talking to the server over its
loopback socket like any client, so the server's loop only sees its requests and the report's
charts are drawn off it. One run at a time: speed is part of every report, and two runs at
once would measure each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import openai

from kaiyuan.errors import KaiyuanError, NotFound
from kaiyuan.evals.suites import BUILTIN, Suite, SuiteError

log = logging.getLogger(__name__)
TIMEOUT = 900.0  # seconds for one request: long answers on a CPU take minutes
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
REPORTS = ("report", "bench")  # the stems `kaiyuan eval` and `kaiyuan bench` write


class Busy(KaiyuanError):
    status = 409
    type = "invalid_request_error"
    code = "eval_running"


@dataclass(slots=True)
class Job:
    """A run in progress; its thread writes the counts, the server reads them."""

    id: str
    folder: Path
    asked: dict[str, Any]  # kind, models, suites, settings: job.json's first fields
    created: float
    total: int
    done: dict[str, int] = field(default_factory=dict)  # per model · suite (or level)
    current: str | None = None
    status: str = "running"
    finished: float | None = None
    error: str | None = None
    thread: threading.Thread | None = None
    loop: asyncio.AbstractEventLoop | None = None
    task: asyncio.Task[Any] | None = None
    cancelled: bool = False

    def progress(self) -> dict[str, Any]:
        return {"done": sum(self.done.values()), "total": self.total, "current": self.current}

    def record(self) -> dict[str, Any]:
        return self.asked | {
            "created": self.created, "status": self.status, "finished": self.finished,
            "error": self.error, "progress": self.progress(),
        }  # fmt: skip


class Runs:
    """The runs under ``folder``; ``home`` is where suites that are fetched (math) live."""

    def __init__(self, folder: Path, home: Path) -> None:
        self.folder = folder
        self.home = home
        self.jobs: dict[str, Job] = {}  # running here, by id
        self._starting = threading.Lock()
        self._prompts: dict[tuple[str, str], dict[str, Any]] = {}  # (suite, hash) -> by item

    # --- starting ---------------------------------------------------------------------------
    def running(self) -> Job | None:
        return next(iter(self.jobs.values()), None)

    def start_eval(self, plan: Any, base_url: str, api_key: str) -> Job:
        """Run ``plan`` (a runner.Plan whose ``out`` is ignored: the run gets a folder here)
        in the background; its suites' items are read already (a broken suite failed then)."""
        from kaiyuan.evals import report, runner

        job = self._new("eval", {
            "models": plan.models,
            "suites": [s.name for s in plan.suites],
            "settings": {"limit": plan.limit, "concurrency": plan.concurrency,
                         "max_tokens": plan.max_tokens},
        }, total=len(plan.models) * sum(len(plan.items(s)) for s in plan.suites))  # fmt: skip
        plan.out = job.folder
        plan.endpoint = base_url

        def advance(model: str, suite: str, done: int, total: int) -> None:
            job.done[f"{model} · {suite}"] = done
            job.current = f"{model} · {suite}"

        async def work() -> None:
            try:
                async with _client(base_url, api_key) as client:
                    await runner.run(plan, client, advance)
            finally:  # what was answered is reported, a cancelled or failed run's too
                data = report.eval_report(plan)
                report.write(job.folder, data, report.eval_html(data))

        return self._launch(job, work)

    def start_bench(
        self, model: str, levels: list[int], requests: int, max_tokens: int, base_url: str,
        api_key: str,
    ) -> Job:  # fmt: skip
        from kaiyuan.evals import bench, report

        job = self._new("bench", {
            "models": [model], "suites": [],
            "settings": {"concurrency": levels, "requests": requests, "max_tokens": max_tokens},
        }, total=len(levels) * requests)  # fmt: skip

        def advance(level: int, done: int, total: int) -> None:
            job.done[str(level)] = done
            job.current = f"concurrency {level}"

        async def work() -> None:
            results: list[dict[str, Any]] = []
            try:
                async with _client(base_url, api_key) as client:
                    for level in levels:
                        results.append(await bench.run_level(
                            client, model, level, requests, max_tokens, advance
                        ))  # fmt: skip
            finally:
                if results:
                    data = report.header("kaiyuan-bench") | {
                        "url": base_url, "model": model, "requests": requests,
                        "max_tokens": max_tokens, "levels": results,
                    }  # fmt: skip
                    report.write(job.folder, data, report.bench_html(data), stem="bench")

        return self._launch(job, work)

    def refuse_if_busy(self) -> None:
        running = self.running()
        if running is not None:
            raise Busy(
                f"{running.asked['kind']} '{running.id}' is still running: wait for it, or "
                f"cancel it (POST /v1/kaiyuan/evals/{running.id}/cancel); one run at a time, "
                "so that no run's speed is measured under another's load"
            )

    def _new(self, kind: str, asked: dict[str, Any], total: int) -> Job:
        now = time.time()
        stamp = datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y%m%d-%H%M%S")
        run_id = f"{stamp}-{kind}-{uuid.uuid4().hex[:6]}"
        job = Job(run_id, self.folder / run_id, {"kind": kind} | asked, now, total)
        with self._starting:  # starts come from worker threads: checked and taken at once
            self.refuse_if_busy()
            self.jobs[run_id] = job
        try:
            job.folder.mkdir(parents=True)
            _write_json(job.folder / "job.json", job.record())
        except OSError:
            del self.jobs[run_id]
            raise
        return job

    def _launch(self, job: Job, work: Callable[[], Awaitable[None]]) -> Job:
        async def main() -> None:
            job.loop, job.task = asyncio.get_running_loop(), asyncio.current_task()
            if job.cancelled:  # cancelled before this loop existed
                raise asyncio.CancelledError
            await work()

        def body() -> None:
            try:
                asyncio.run(main())
                job.status = "completed"
            except asyncio.CancelledError:
                job.status, job.error = "cancelled", "cancelled before it finished"
            except KaiyuanError as exc:  # an unreachable endpoint, a model it does not know
                job.status, job.error = "failed", exc.message
            except Exception:
                log.exception("eval run %s failed", job.id)
                job.status, job.error = "failed", "the run failed; see the server log"
            job.finished = time.time()
            try:
                _write_json(job.folder / "job.json", job.record())
            except OSError:
                log.exception("eval run %s: job.json not written", job.id)
            finally:
                self.jobs.pop(job.id, None)

        job.thread = threading.Thread(target=body, name=f"kaiyuan-eval-{job.id}", daemon=True)
        job.thread.start()
        return job

    def cancel(self, run_id: str) -> Job | None:
        """Stop a running run (its answers so far are kept and reported); None if it is not
        running. Blocks until it has stopped, up to 30 seconds."""
        job = self.jobs.get(run_id)
        if job is None:
            return None
        job.cancelled = True
        loop, task = job.loop, job.task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # it ended meanwhile: its loop is closed
                loop.call_soon_threadsafe(task.cancel)
        if job.thread is not None:
            job.thread.join(30)
        return job

    # --- reading (blocking: call from a worker thread) --------------------------------------
    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` runs, running ones first."""
        if not self.folder.is_dir():
            return []
        folders = [p for p in self.folder.iterdir() if RUN_ID.match(p.name) and p.is_dir()]
        folders.sort(key=_mtime, reverse=True)  # the recently changed; then by their start
        runs = [r for r in map(self.summary, folders[: limit * 2]) if r is not None]
        runs.sort(key=lambda r: (r["status"] == "running", r["created"]), reverse=True)
        return runs[:limit]

    def get(self, run_id: str) -> dict[str, Any]:
        folder = self._folder(run_id)
        summary = self.summary(folder)
        if summary is None:
            raise NotFound(f"no eval run '{run_id}'", param="run_id")
        return summary | {"report": _report(folder)}

    def summary(self, folder: Path) -> dict[str, Any] | None:
        job = self.jobs.get(folder.name)
        asked = job.record() if job is not None else _read_json(folder / "job.json") or {}
        written = _report(folder)
        if not asked and written is None:
            return None
        written = written or {}
        kind = asked.get("kind", "bench" if written.get("kind") == "kaiyuan-bench" else "eval")
        status = asked.get("status", "completed")
        if status == "running" and job is None:
            status = "interrupted"  # the server stopped while it ran
        models = asked.get("models") or written.get("models") or [written.get("model", "?")]
        created = asked.get("created") or _timestamp(written.get("created")) or _mtime(folder)
        stem = "bench" if kind == "bench" else "report"
        return {
            "id": folder.name,
            "kind": kind,
            "status": status,
            "created": created,
            "finished": asked.get("finished"),
            "models": models,
            "suites": asked.get("suites", list(written.get("suites", {}))),
            "settings": asked.get("settings", written.get("settings", {})),
            "progress": asked.get("progress") or {"done": 0, "total": 0, "current": None},
            "error": asked.get("error"),
            "scores": [_score(row) for row in written.get("results", [])],
            "levels": [_level(level) for level in written.get("levels", [])],
            "report_url": (
                f"/v1/kaiyuan/evals/{folder.name}/{stem}.html"
                if (folder / f"{stem}.html").is_file() else None
            ),
        }  # fmt: skip

    def report_html(self, run_id: str, stem: str) -> Path:
        path = self._folder(run_id) / f"{stem}.html"
        if stem not in REPORTS or not path.is_file():
            raise NotFound(f"eval run '{run_id}' has no {stem}.html (yet)", param="run_id")
        return path

    def items(
        self, run_id: str, model: str | None, suite: str | None, offset: int, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        """Each recorded item of the run (of one model and suite, if named): its prompt,
        answer and verdict, in the order they were answered; and how many there are."""
        results = self._folder(run_id) / "results"
        chosen: list[dict[str, Any]] = []
        pairs = sorted(results.glob("*/*.jsonl")) if results.is_dir() else []
        for path in pairs:
            name, suite_name = unquote(path.parent.name), unquote(path.stem)
            if (model is None or name == model) and (suite is None or suite_name == suite):
                chosen.extend(self._item(r) for r in _records(path).values())
        return chosen[offset : offset + limit], len(chosen)

    def remove(self, run_id: str) -> None:
        folder = self._folder(run_id)
        if run_id in self.jobs:
            raise Busy(f"eval run '{run_id}' is running: cancel it first", param="run_id")
        shutil.rmtree(folder)

    def _folder(self, run_id: str) -> Path:
        folder = self.folder / run_id
        if not RUN_ID.match(run_id) or not folder.is_dir():
            raise NotFound(f"no eval run '{run_id[:64]}'", param="run_id")
        return folder

    def _item(self, record: dict[str, Any]) -> dict[str, Any]:
        timing = record.get("timing") or {}
        started, finished = timing.get("started"), timing.get("finished")
        failed = record.get("error") is not None
        prompt = record.get("messages") or self._prompt(record)
        return {
            "id": str(record.get("id")),
            "model": str(record.get("model")),
            "suite": str(record.get("suite")),
            "prompt": prompt,
            "answer": None if failed else record.get("content"),
            "reasoning": None if failed else record.get("reasoning") or None,
            "finish_reason": record.get("finish_reason"),
            "verdict": None if failed else record.get("score"),
            "error": record.get("error"),
            "seconds": finished - started if started is not None and finished else None,
        }

    def _prompt(self, record: dict[str, Any]) -> list[dict[str, Any]] | None:
        """A prompt a run made before prompts were recorded: the shipped suite's, if its
        template is still the one the run used."""
        name, digest = str(record.get("suite")), str(record.get("template_hash"))
        if name not in BUILTIN:
            return None
        if (name, digest) not in self._prompts:
            from kaiyuan.evals import suites

            try:
                suite: Suite = suites.load(name, self.home)
                same = suite.template_hash == digest
                found = {i.id: i.messages for i in suite.items()} if same else {}
            except SuiteError:
                found = {}
            self._prompts[(name, digest)] = found
        return self._prompts[(name, digest)].get(str(record.get("id")))


def _client(base_url: str, api_key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=TIMEOUT, max_retries=0)


def _score(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": row["model"], "suite": row["suite"], "metric": row["metric"],
        "score": {
            "value": row["score"], "n": row.get("score_n", row["items"]),
            "stderr": row.get("score_stderr"), "ci95": row.get("score_ci95"),
        },
        "items": row["items"], "answered": row["answered"], "errors": row["errors"],
        "output_tokens_per_second": row["speed"]["output_tokens_per_second"],
    }  # fmt: skip


def _level(level: dict[str, Any]) -> dict[str, Any]:
    return {
        "concurrency": level["concurrency"], "requests": level["requests"],
        "failures": level["failures"],
        "output_tokens_per_second": level["output_tokens_per_second"],
        "requests_per_second": level.get("requests_per_second"),
        "ttft_p50": level["ttft"]["p50"], "tpot_p50": level["tpot"]["p50"],
    }  # fmt: skip


def _records(path: Path) -> dict[str, dict[str, Any]]:
    """A results file's records by item id, the last line of an id winning (a retried item);
    a line cut short by a crash is skipped."""
    records: dict[str, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "id" in record:
            records[str(record["id"])] = record
    return records


def _report(folder: Path) -> dict[str, Any] | None:
    for stem in REPORTS:
        found = _read_json(folder / f"{stem}.json")
        if found is not None:
            return found
    return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Written whole or not at all: a reader never sees half a file."""
    staged = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    staged.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    staged.replace(path)


def _timestamp(iso: Any) -> float | None:
    try:
        return datetime.datetime.fromisoformat(str(iso)).timestamp()
    except ValueError:
        return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
