"""/v1/kaiyuan/evals (being built)."""

from __future__ import annotations

from fastapi import APIRouter

from kaiyuan.server.errors import ERROR_RESPONSES
from kaiyuan.server.routing import ApiRoute

router = APIRouter(tags=["evals"], route_class=ApiRoute, responses=ERROR_RESPONSES)
