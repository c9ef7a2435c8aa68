"""Stores the app opens once, on first use, and keeps on ``app.state`` (their libraries load
only when a route needs them, never at start-up)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fastapi import Request

from kaiyuan.extras import require

T = TypeVar("T")


def shared(request: Request, name: str, factory: Callable[[Path, str | None], T]) -> T:
    """``factory(home, database_url)``, made once per app."""
    state: Any = request.app.state
    value: T | None = getattr(state, name, None)
    if value is None:
        value = factory(state.settings.home, state.settings.db_url())
        setattr(state, name, value)
    return value


def traces(request: Request) -> Any:
    require("agent", "the agent's trace store")
    from kaiyuan.agent.traces import Traces

    return shared(request, "traces", Traces)


def video_jobs(request: Request) -> Any:
    require("diffusion", "video generation")
    from kaiyuan.media.jobs import Jobs

    return shared(request, "video_jobs", Jobs)
