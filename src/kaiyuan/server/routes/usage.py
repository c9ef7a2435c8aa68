"""GET /v1/usage: requests, tokens and cost per model, publisher, origin, key, app, endpoint
or day (the web app's usage page). An admin key (or an open server, which has no keys) sees
everyone's; any other key only its own."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Query, Request

from kaiyuan.db.usage import summary
from kaiyuan.server.auth import key_of
from kaiyuan.server.routing import ApiRoute

router = APIRouter(tags=["usage"], route_class=ApiRoute)


@router.get("/v1/usage")
async def get_usage(
    request: Request,
    by: Literal["model", "publisher", "origin", "key", "app", "endpoint", "day"] = "model",
    days: int = Query(30, ge=1, le=3660),
) -> dict[str, Any]:
    key = key_of(request)
    own = None if key is None or key.admin else key.id
    since = datetime.now(UTC) - timedelta(days=days)
    engine = request.app.state.usage.engine
    rows = await asyncio.to_thread(summary, engine, by, since, own)
    return {"object": "list", "by": by, "since": since.isoformat(), "data": rows}
