"""/v1/kaiyuan/evals and /v1/kaiyuan/suites: eval and bench runs kept by the server, started
from the API (the web app's evals page), with their reports and every item's prompt, answer
and verdict. `kaiyuan eval` and `kaiyuan bench` do the same from a shell.

Every score is a share of items and carries its uncertainty, as report.json does: ``n``, the
standard error (lm-eval's: the sample standard deviation of the 0/1 scores over √n, None
under two items) and the 95% Wilson interval ``ci95`` ([low, high], inside [0, 1]).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

SuiteName = Literal["humaneval", "mmlu", "math", "refusal", "bilingual"]  # the shipped ones
ModelName = Annotated[str, Field(min_length=1, max_length=256)]
Concurrency = Annotated[int, Field(ge=1, le=64)]
Status = Literal["running", "completed", "failed", "cancelled", "interrupted"]


class EvalStart(BaseModel):
    """Every model answers the first ``limit`` items of every suite (all of them without a
    limit), ``concurrency`` requests in flight, through this server's own chat endpoint."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["eval"] = "eval"
    models: Annotated[list[ModelName], Field(min_length=1, max_length=8)]
    suites: Annotated[list[SuiteName], Field(min_length=1, max_length=5)]
    limit: Annotated[int, Field(ge=1, le=100_000)] | None = None
    concurrency: Concurrency = 4
    max_tokens: Annotated[int, Field(ge=1, le=8192)] | None = None  # None: each suite's own


class BenchStart(BaseModel):
    """A load test of one model: ``requests`` streamed chat completions at each concurrency
    level in turn (`kaiyuan bench`)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["bench"]
    model: ModelName
    concurrency: Annotated[list[Concurrency], Field(min_length=1, max_length=8)] = [1, 4]
    requests: Annotated[int, Field(ge=1, le=512)] = 16
    max_tokens: Annotated[int, Field(ge=1, le=4096)] = 128


def _kind(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("kind", "eval")
        return kind if isinstance(kind, str) else None
    return getattr(value, "kind", None)


StartRequest = Annotated[
    Annotated[EvalStart, Tag("eval")] | Annotated[BenchStart, Tag("bench")],
    Discriminator(
        _kind,
        custom_error_type="invalid_kind",
        custom_error_message="'kind' must be 'eval' (the default) or 'bench'",
    ),
]


class Share(BaseModel):
    """A share of items with its uncertainty (all None but ``n`` without items)."""

    value: float | None
    n: int
    stderr: float | None
    ci95: list[float] | None  # [low, high], 95% Wilson


class EvalScore(BaseModel):
    model: str
    suite: str
    metric: str  # what the share counts: accuracy, pass@1, refusal_rate
    score: Share  # items that failed or were not reached count against it
    items: int
    answered: int
    errors: int
    output_tokens_per_second: float | None


class BenchLevel(BaseModel):
    concurrency: int
    requests: int  # answered
    failures: int
    output_tokens_per_second: float | None
    requests_per_second: float | None
    ttft_p50: float | None  # seconds
    tpot_p50: float | None  # seconds


class Progress(BaseModel):
    done: int  # items (eval) or requests (bench) finished
    total: int
    current: str | None  # "model · suite", or "concurrency 4"


class EvalRun(BaseModel):
    object: Literal["eval.run"] = "eval.run"
    id: str
    kind: Literal["eval", "bench"]
    # interrupted: the server stopped before the run ended (its answers so far are kept)
    status: Status
    created: float  # unix seconds
    finished: float | None
    models: list[str]
    suites: list[str]  # none for a bench
    settings: dict[str, Any]  # what was asked: limit, concurrency, max_tokens, requests
    progress: Progress
    error: str | None
    scores: list[EvalScore]  # once the report is written
    levels: list[BenchLevel]  # a bench's, once written
    report_url: str | None  # the self-contained HTML report (no scripts), once written


class EvalRunDetail(EvalRun):
    report: dict[str, Any] | None  # report.json (bench.json for a bench) as written


class EvalRunList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EvalRun]


class EvalRunDeleted(BaseModel):
    id: str
    object: Literal["eval.run.deleted"] = "eval.run.deleted"
    deleted: Literal[True] = True


class Verdict(BaseModel):
    correct: bool | None  # None: the item has no right answer (timed only)
    refused: bool
    language: str | None  # the answer's language
    language_match: bool | None
    extracted: str | None  # what the scorer read: a letter, a number, an exit status


class PromptMessage(BaseModel):
    role: str
    content: Any


class EvalItem(BaseModel):
    object: Literal["eval.item"] = "eval.item"
    id: str
    model: str
    suite: str
    prompt: list[PromptMessage] | None  # None: not recorded (an older run of a custom suite)
    answer: str | None  # the model's text as it came, None when the request failed
    reasoning: str | None
    finish_reason: str | None
    verdict: Verdict | None  # None when the request failed
    error: str | None
    seconds: float | None


class EvalItemList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EvalItem]
    total: int  # items recorded for the chosen model and suite
    offset: int


class SuiteInfo(BaseModel):
    object: Literal["eval.suite"] = "eval.suite"
    name: str
    items: int | None  # None: not available here (see ``unavailable``)
    metric: str
    source: str
    licence: str
    max_tokens: int
    template_hash: str
    unavailable: str | None  # why it cannot run here, and how to fix that


class SuiteList(BaseModel):
    object: Literal["list"] = "list"
    data: list[SuiteInfo]
