"""/v1/kaiyuan/tools (being built)."""

from __future__ import annotations

from fastapi import APIRouter

from kaiyuan.server.errors import ERROR_RESPONSES
from kaiyuan.server.routing import ApiRoute

router = APIRouter(tags=["tools"], route_class=ApiRoute, responses=ERROR_RESPONSES)
