"""/v1/kaiyuan/evals: eval and bench runs kept under ``$KAIYUAN_HOME/evals`` (the web app's
evals page; `kaiyuan eval -o` and `kaiyuan bench -o` into that folder are listed too), started
here in the background against this server's own chat endpoint, polled for progress,
cancelled; each run's report (JSON and the self-contained HTML) and its items' prompts,
answers and verdicts. /v1/kaiyuan/suites: the suites a run can use here.

A run talks to this server over the socket the request came in on (so its timings are a
client's), with the caller's key when keys exist; reports hold other users' prompts and a run
loads the machine, so with keys everything here is an admin key's.
"""

from __future__ import annotations

import asyncio
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from kaiyuan.errors import InvalidRequest, ModelNotFound, did_you_mean
from kaiyuan.evals.jobs import Job, Runs
from kaiyuan.extras import require
from kaiyuan.protocol.kaiyuan.evals import (
    BenchStart,
    EvalItem,
    EvalItemList,
    EvalRun,
    EvalRunDeleted,
    EvalRunDetail,
    EvalRunList,
    EvalStart,
    StartRequest,
    SuiteInfo,
    SuiteList,
)
from kaiyuan.protocol.openai.common import ErrorResponse
from kaiyuan.server.auth import check_model, presented, require_admin
from kaiyuan.server.errors import ERROR_RESPONSES
from kaiyuan.server.routes.keys import ADMIN_ONLY
from kaiyuan.server.routing import ApiRoute

router = APIRouter(
    tags=["evals"], route_class=ApiRoute, responses={**ERROR_RESPONSES, **ADMIN_ONLY}
)
BUSY: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorResponse, "description": "A run is already going (eval_running)"}
}
RunId = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
READ = "reading eval runs"
RUN = "running evals"
# Reports are one file with inline CSS and SVG and no script: nothing runs, nothing is fetched.
REPORT_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


def _runs(request: Request) -> Runs:
    state: Any = request.app.state
    runs: Runs | None = getattr(state, "eval_runs", None)
    if runs is None:
        home = state.settings.home
        runs = state.eval_runs = Runs(home / "evals", home)
    return runs


@router.get("/v1/kaiyuan/suites", response_model=SuiteList)
async def list_suites(request: Request) -> SuiteList:
    """The shipped suites, with how many items each has here (math is fetched once by
    `kaiyuan suites fetch math`; humaneval needs the eval extra)."""
    require_admin(request, READ, open_without_keys=True)
    return await asyncio.to_thread(_suites, request.app.state.settings.home)


def _suites(home: FilePath) -> SuiteList:
    from kaiyuan.evals import suites

    listed = []
    for name in suites.BUILTIN:
        suite = suites.load(name, home)
        try:
            count: int | None = len(suite.items())
            unavailable = None
        except suites.SuiteError as exc:
            count, unavailable = None, exc.message
        described = suite.describe()
        listed.append(SuiteInfo(
            name=name, items=count, metric=described["metric"], source=described["source"],
            licence=described["licence"], max_tokens=described["max_tokens"],
            template_hash=described["template_hash"], unavailable=unavailable,
        ))  # fmt: skip
    return SuiteList(data=listed)


@router.get("/v1/kaiyuan/evals", response_model=EvalRunList)
async def list_runs(
    request: Request, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> EvalRunList:
    """Runs, running first, then the newest."""
    require_admin(request, READ, open_without_keys=True)
    runs = await asyncio.to_thread(_runs(request).recent, limit)
    return EvalRunList(data=[EvalRun.model_validate(r) for r in runs])


@router.post("/v1/kaiyuan/evals", response_model=EvalRun, responses=BUSY)
async def start_run(body: StartRequest, request: Request) -> EvalRun:
    """Start an eval (``kind`` "eval", the default) or a bench (``kind`` "bench") in the
    background; poll ``GET /v1/kaiyuan/evals/{id}`` for its progress. One run at a time
    (409 while another runs)."""
    require_admin(request, RUN, open_without_keys=True)
    require("eval", "evals")
    runs = _runs(request)
    runs.refuse_if_busy()  # early: the checks below read files
    models = body.models if isinstance(body, EvalStart) else [body.model]
    models = list(dict.fromkeys(models))
    await _check_models(request, models)
    base_url = _own_url(request)
    key = presented(request.scope) or "kaiyuan"
    if isinstance(body, BenchStart):
        job = await asyncio.to_thread(
            runs.start_bench, models[0], body.concurrency, body.requests, body.max_tokens,
            base_url, key,
        )  # fmt: skip
    else:
        plan = await asyncio.to_thread(_plan, request, body, models)
        job = await asyncio.to_thread(runs.start_eval, plan, base_url, key)
    return await _run(request, job.id)


def _plan(request: Request, body: EvalStart, models: list[str]) -> Any:
    from kaiyuan.evals import suites
    from kaiyuan.evals.runner import Plan

    home = request.app.state.settings.home
    chosen = [suites.load(name, home) for name in dict.fromkeys(body.suites)]
    plan = Plan(
        models=models, suites=chosen, out=home / "evals", endpoint="", limit=body.limit,
        concurrency=body.concurrency, max_tokens=body.max_tokens,
    )  # fmt: skip
    for suite in chosen:
        plan.items(suite)  # a suite that is not here (math not fetched) is a 400 now
    return plan


async def _check_models(request: Request, models: list[str]) -> None:
    """Every model is served here and chats, and the caller's key may use it."""
    pool = request.app.state.pool
    records = {r.id: r for r in pool.records()}  # as GET /v1/models reads them
    for model in models:
        record = records.get(pool.canonical(model))
        if record is None:
            raise ModelNotFound(
                f"model '{model}' is not served here{did_you_mean(model, records)}",
                param="models",
            )
        if record.capabilities and "chat" not in record.capabilities:
            raise InvalidRequest(
                f"model '{model}' does not chat (it has: {', '.join(record.capabilities)}); "
                "evals and benches need a chat model",
                param="models",
            )
        check_model(request, model)


def _own_url(request: Request) -> str:
    """This server's API at the address the request reached (a loopback or LAN address: one
    it listens on), as a run's client will use it."""
    server = request.scope.get("server")
    if not server or server[1] is None:
        raise InvalidRequest("runs can be started only on a server listening on a TCP port")
    host, port = server
    return f"http://[{host}]:{port}/v1" if ":" in host else f"http://{host}:{port}/v1"


async def _run(request: Request, run_id: str) -> EvalRun:
    found = await asyncio.to_thread(_runs(request).get, run_id)
    found.pop("report")
    return EvalRun.model_validate(found)


@router.get("/v1/kaiyuan/evals/{run_id}", response_model=EvalRunDetail)
async def get_run(request: Request, run_id: RunId) -> EvalRunDetail:
    """One run: its status and progress, its scores with their uncertainty, and its
    report.json (bench.json for a bench) once written."""
    require_admin(request, READ, open_without_keys=True)
    return EvalRunDetail.model_validate(await asyncio.to_thread(_runs(request).get, run_id))


@router.get("/v1/kaiyuan/evals/{run_id}/items", response_model=EvalItemList)
async def list_items(
    request: Request,
    run_id: RunId,
    model: Annotated[str | None, Query(max_length=256)] = None,
    suite: Annotated[str | None, Query(max_length=256)] = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> EvalItemList:
    """The run's items (of one model and one suite, if named): prompt, answer and verdict."""
    require_admin(request, READ, open_without_keys=True)
    items, total = await asyncio.to_thread(
        _runs(request).items, run_id, model, suite, offset, limit
    )
    return EvalItemList(
        data=[EvalItem.model_validate(i) for i in items], total=total, offset=offset
    )


@router.get(
    "/v1/kaiyuan/evals/{run_id}/{stem}.html",
    response_class=Response,
    responses={200: {"content": {"text/html": {}}, "description": "The HTML report"}},
)
async def report_page(
    request: Request, run_id: RunId, stem: Annotated[str, Path(pattern="^(report|bench)$")]
) -> Response:
    """The run's self-contained HTML report (report.html, or bench.html for a bench)."""
    require_admin(request, READ, open_without_keys=True)
    runs = _runs(request)
    page = await asyncio.to_thread(lambda: runs.report_html(run_id, stem).read_bytes())
    headers = {
        "content-security-policy": REPORT_POLICY,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "cache-control": "no-cache",
    }
    return Response(page, media_type="text/html; charset=utf-8", headers=headers)


@router.post("/v1/kaiyuan/evals/{run_id}/cancel", response_model=EvalRun)
async def cancel_run(request: Request, run_id: RunId) -> EvalRun:
    """Stop a running run; what it answered so far stays, and is reported. A run that is not
    running is answered as it is."""
    require_admin(request, RUN, open_without_keys=True)
    runs = _runs(request)
    job: Job | None = await asyncio.to_thread(runs.cancel, run_id)
    return await _run(request, job.id if job else run_id)


@router.delete("/v1/kaiyuan/evals/{run_id}", response_model=EvalRunDeleted, responses=BUSY)
async def delete_run(request: Request, run_id: RunId) -> EvalRunDeleted:
    """Remove a run's folder (409 while it runs: cancel it first)."""
    require_admin(request, RUN, open_without_keys=True)
    await asyncio.to_thread(_runs(request).remove, run_id)
    return EvalRunDeleted(id=run_id)
