"""GET /metrics: Prometheus's text format (see server/metrics.py for the names)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from kaiyuan.server.metrics import CONTENT_TYPE

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.text(), media_type=CONTENT_TYPE)
