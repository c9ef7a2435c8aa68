"""/v1/kaiyuan/runs: stored agent runs and their steps (the web app's audit view; `kaiyuan
traces` and `kaiyuan trace ID` show the same from a shell), with the known failure patterns
each run shows."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class RunFlag(BaseModel):
    kind: Literal["repeated_call", "recurring_error", "growing_input"]
    message: str
    steps: list[int]  # the step indexes that show it


class RunStep(BaseModel):
    index: int
    kind: Literal["model", "tool"] | str
    name: str  # the model, or the tool
    input: Any
    output: Any = None
    error: str | None = None
    started: float  # unix seconds
    seconds: float
    usage: Usage


class Run(BaseModel):
    object: Literal["agent.run"] = "agent.run"
    id: str
    created: float  # unix seconds
    model: str
    task: str
    status: str  # running, completed, stopped, failed
    answer: str | None
    citations: list[Any]
    stop_reason: str | None
    seconds: float
    steps: int
    usage: Usage
    tools: list[str]  # the tools it called, each once
    flags: list[RunFlag]


class RunDetail(Run):
    trace: list[RunStep]


class RunList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Run]
