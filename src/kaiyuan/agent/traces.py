"""Agent traces in the one database (db/): a run and its steps, each with its input, output,
timing and tokens, written as they happen so a crash leaves what was done."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import Float, ForeignKey, Integer, String, Text, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from kaiyuan.db import open_database
from kaiyuan.db.legacy import import_once
from kaiyuan.errors import NotFound


class Base(DeclarativeBase):
    pass


class Run(Base):
    __tablename__ = "agent_runs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created: Mapped[float] = mapped_column(Float, index=True)
    model: Mapped[str] = mapped_column(String(200))
    task: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))  # running, completed, stopped, failed
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    citations: Mapped[str] = mapped_column(Text, default="[]")  # JSON
    stop_reason: Mapped[str | None] = mapped_column(String(40), nullable=True)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    steps: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    # the conversation at the end (chat messages, JSON), so a response can be continued
    messages: Mapped[str | None] = mapped_column(Text, nullable=True)


class Step(Base):
    __tablename__ = "agent_steps"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("agent_runs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(10))  # model, tool
    name: Mapped[str] = mapped_column(String(200))  # the model, or the tool
    input: Mapped[str] = mapped_column(Text)  # JSON
    output: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    started: Mapped[float] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)


class Traces:
    def __init__(self, home: Path, url: str | None = None) -> None:
        self.engine = open_database(home, url)
        tables = {"runs": Run.__table__, "steps": Step.__table__}
        import_once(self.engine, home / "traces.sqlite", tables)  # type: ignore[arg-type]

    def __enter__(self) -> Traces:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.engine.dispose()

    def start(self, model: str, task: str) -> str:
        run_id = uuid.uuid4().hex
        with Session(self.engine) as session, session.begin():
            session.add(Run(id=run_id, created=time.time(), model=model, task=task,
                            status="running"))  # fmt: skip
        return run_id

    def step(
        self,
        run_id: str,
        *,
        kind: str,
        name: str,
        input: Any,
        output: Any = None,
        error: str | None = None,
        started: float,
        seconds: float,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> None:
        with Session(self.engine) as session, session.begin():
            run = session.get(Run, run_id)
            if run is None:
                raise NotFound(f"no agent run '{run_id}'", param="id")
            run.steps += 1
            run.prompt_tokens += prompt_tokens
            run.completion_tokens += completion_tokens
            session.add(
                Step(
                    run_id=run_id, index=run.steps, kind=kind, name=name,
                    input=_json(input), output=None if output is None else _json(output),
                    error=error, started=started, seconds=seconds,
                    prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                )
            )  # fmt: skip

    def finish(
        self,
        run_id: str,
        *,
        status: str,
        answer: str | None,
        citations: list[dict[str, Any]],
        stop_reason: str | None,
        seconds: float,
        messages: list[dict[str, Any]] | None = None,
    ) -> None:
        with Session(self.engine) as session, session.begin():
            run = session.get(Run, run_id)
            if run is None:
                raise NotFound(f"no agent run '{run_id}'", param="id")
            run.status, run.answer, run.stop_reason = status, answer, stop_reason
            run.citations, run.seconds = _json(citations), seconds
            run.messages = None if messages is None else _json(messages)

    def conversation(self, run_id: str) -> list[dict[str, Any]]:
        """The stored conversation of a finished run (to continue it)."""
        with Session(self.engine) as session:
            run = session.get(Run, run_id)
            if run is None or run.messages is None:
                raise NotFound(f"no stored response '{run_id}'", param="previous_response_id")
            messages: list[dict[str, Any]] = json.loads(run.messages)
            return messages

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            found = session.scalars(select(Run).order_by(Run.created.desc()).limit(limit)).all()
            return [_run_dict(r) for r in found]

    def find(
        self,
        *,
        model: str | None = None,
        tool: str | None = None,
        status: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Runs, newest first, each with its steps (``trace``); filters combine."""
        query = select(Run).order_by(Run.created.desc()).limit(limit)
        if model:
            query = query.where(Run.model == model)
        if status:
            query = query.where(Run.status == status)
        if since is not None:
            query = query.where(Run.created >= since)
        if until is not None:
            query = query.where(Run.created < until)
        if tool:
            called = select(Step.run_id).where(Step.kind == "tool", Step.name == tool)
            query = query.where(Run.id.in_(called))
        with Session(self.engine) as session:
            runs = session.scalars(query).all()
            steps: dict[str, list[dict[str, Any]]] = {r.id: [] for r in runs}
            if runs:
                rows = session.scalars(
                    select(Step).where(Step.run_id.in_(steps)).order_by(Step.index)
                ).all()
                for step in rows:
                    steps[step.run_id].append(_step_dict(step))
            return [{**_run_dict(r), "trace": steps[r.id]} for r in runs]

    def get(self, run_id: str) -> dict[str, Any]:
        """A run with its steps; ``run_id`` may be a unique prefix (as printed by `traces`)."""
        with Session(self.engine) as session:
            matches = session.scalars(
                select(Run).where(Run.id.startswith(run_id, autoescape=True))
            ).all()
            if len(matches) != 1 or not run_id:
                what = "no agent run" if not matches else "more than one agent run matches"
                raise NotFound(f"{what} '{run_id}'", param="id")
            run = matches[0]
            steps = session.scalars(
                select(Step).where(Step.run_id == run.id).order_by(Step.index)
            ).all()
            return {**_run_dict(run), "trace": [_step_dict(s) for s in steps]}


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _run_dict(run: Run) -> dict[str, Any]:
    return {
        "id": run.id, "created": run.created, "model": run.model, "task": run.task,
        "status": run.status, "answer": run.answer, "citations": json.loads(run.citations),
        "stop_reason": run.stop_reason, "seconds": round(run.seconds, 3), "steps": run.steps,
        "usage": {"prompt_tokens": run.prompt_tokens,
                  "completion_tokens": run.completion_tokens},
    }  # fmt: skip


def _step_dict(step: Step) -> dict[str, Any]:
    return {
        "index": step.index, "kind": step.kind, "name": step.name,
        "input": json.loads(step.input),
        "output": None if step.output is None else json.loads(step.output),
        "error": step.error, "started": step.started, "seconds": round(step.seconds, 3),
        "usage": {"prompt_tokens": step.prompt_tokens,
                  "completion_tokens": step.completion_tokens},
    }  # fmt: skip
