"""/v1/kaiyuan/runs: the stored agent runs, their steps and the known ways each went wrong
(the web app's audit view). With keys, an admin key's only: runs hold other users' tasks."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from kaiyuan.protocol.kaiyuan.traces import Run, RunDetail, RunFlag, RunList
from kaiyuan.server import shared
from kaiyuan.server.auth import require_admin
from kaiyuan.server.errors import ERROR_RESPONSES
from kaiyuan.server.routes.keys import ADMIN_ONLY
from kaiyuan.server.routing import ApiRoute

router = APIRouter(
    tags=["agent"], route_class=ApiRoute, responses={**ERROR_RESPONSES, **ADMIN_ONLY}
)
Text = Annotated[str | None, Query(max_length=200)]
Day = Annotated[date | None, Query(description="YYYY-MM-DD, UTC")]


def _flags(trace: list[dict[str, Any]]) -> list[RunFlag]:
    from kaiyuan.agent.audit import audit

    return [RunFlag.model_validate(vars(f)) for f in audit(trace)]


def _run(found: dict[str, Any]) -> dict[str, Any]:
    trace = found["trace"]
    tools = list(dict.fromkeys(s["name"] for s in trace if s["kind"] == "tool"))
    return {**found, "tools": tools, "flags": _flags(trace)}


def _day(value: date | None, *, end: bool = False) -> float | None:
    if value is None:
        return None
    start = datetime.combine(value, time(), tzinfo=UTC).timestamp()
    return start + 86_400 if end else start


@router.get("/v1/kaiyuan/runs", response_model=RunList)
async def list_runs(
    request: Request,
    model: Text = None,
    tool: Text = None,
    status: Text = None,
    since: Day = None,
    until: Day = None,
    flagged: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> RunList:
    """Runs, newest first; ``since``/``until`` are days (UTC, ``until`` included); ``flagged``:
    only runs that show a known failure pattern."""
    require_admin(request, "reading agent runs", open_without_keys=True)
    traces = shared.traces(request)
    found = await asyncio.to_thread(
        traces.find, model=model, tool=tool, status=status, since=_day(since),
        until=_day(until, end=True), limit=limit,
    )  # fmt: skip
    runs = [Run(**_run(r)) for r in found]
    return RunList(data=[r for r in runs if r.flags] if flagged else runs)


@router.get("/v1/kaiyuan/runs/{run_id}", response_model=RunDetail)
async def get_run(request: Request, run_id: Annotated[str, Path(max_length=64)]) -> RunDetail:
    """One run with every step (JSON export is this answer)."""
    require_admin(request, "reading agent runs", open_without_keys=True)
    found = await asyncio.to_thread(shared.traces(request).get, run_id)
    return RunDetail(**_run(found))
