"""GET /v1/usage: requests, tokens and cost per model, publisher, origin, key, app, endpoint
or day (the web app's usage page), and with ``split`` each of those cut again (by=day&split=app:
tokens per day per app). An admin key (or an open server, which has no keys) sees everyone's;
any other key only its own. The answer says whose rows they are: ``key`` (the caller's key's
name, null on an open server), ``admin`` and ``everyone``, so a page knows what to offer."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Query, Request

from kaiyuan.db.usage import summary
from kaiyuan.errors import InvalidRequest
from kaiyuan.server.auth import key_of
from kaiyuan.server.errors import ERROR_RESPONSES
from kaiyuan.server.routing import ApiRoute

router = APIRouter(tags=["usage"], route_class=ApiRoute, responses=ERROR_RESPONSES)
Group = Literal["model", "publisher", "origin", "key", "app", "endpoint", "day"]


@router.get("/v1/usage")
async def get_usage(
    request: Request,
    by: Group = "model",
    days: int = Query(30, ge=1, le=3660),
    split: Group | None = None,
) -> dict[str, Any]:
    if split == by:
        raise InvalidRequest(f"split must differ from by (both are '{by}')", param="split")
    key = key_of(request)
    own = None if key is None or key.admin else key.id
    since = datetime.now(UTC) - timedelta(days=days)
    engine = request.app.state.usage.engine
    rows = await asyncio.to_thread(summary, engine, by, since, own, split)
    answer = {"object": "list", "by": by, "since": since.isoformat(), "data": rows}
    viewer = {"key": key.name if key else None, "admin": bool(key and key.admin)}
    return answer | viewer | {"everyone": own is None} | ({"split": split} if split else {})
