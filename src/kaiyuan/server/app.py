"""The app factory. All state lives on ``app.state``; two apps can share a process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline
from starlette.middleware.cors import CORSMiddleware

from kaiyuan import __version__
from kaiyuan.config import Settings
from kaiyuan.db import open_for
from kaiyuan.db.conversations import ConversationStore
from kaiyuan.db.keys import KeyStore
from kaiyuan.db.usage import UsageStore
from kaiyuan.engines.pool import EnginePool
from kaiyuan.otel import Telemetry
from kaiyuan.server import errors
from kaiyuan.server.auth import KeyCheck, Keys
from kaiyuan.server.limits import LIMIT_HEADERS
from kaiyuan.server.metrics import Metrics
from kaiyuan.server.middleware import BodyLimit, HostCheck
from kaiyuan.server.pricing import Pricing
from kaiyuan.server.routes import (
    catalog,
    chat,
    completions,
    conversations,
    documents,
    embeddings,
    evals,
    health,
    images,
    keys,
    messages,
    metrics,
    models,
    ollama,
    responses,
    tools,
    traces,
    usage,
    videos,
)
from kaiyuan.server.usage import UsageRecorder
from kaiyuan.web import app as web

DOCS_ASSETS = "/docs/assets"


# The headers a listed origin's scripts may read besides the plain ones: the limits' counts.
def create_app(settings: Settings, pool: EnginePool | None = None) -> FastAPI:
    """Build the server. Without ``pool`` the app loads ``settings.models`` on startup (and
    frees them on shutdown); a pool passed in stays the caller's to close."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = pool is None
        app.state.pool = pool or await asyncio.to_thread(EnginePool.from_settings, settings)
        keep_alive = asyncio.create_task(app.state.pool.run_keep_alive())
        try:
            yield
        finally:
            keep_alive.cancel()
            runs = getattr(app.state, "eval_runs", None)  # evals the web app started
            if runs is not None:
                for run_id in list(runs.jobs):  # stopped; their answers so far are reported
                    await asyncio.to_thread(runs.cancel, run_id)
            if owned:
                await app.state.pool.aclose()

    # /docs (Swagger UI) and /redoc load their scripts from kaiyuan itself, not from a CDN,
    # so they work offline: fastapi-offline ships the files and mounts them.
    app = FastAPIOffline(
        title="kaiyuan",
        version=__version__,
        description="OpenAI-compatible API for open-weight models, served locally.",
        lifespan=lifespan,
        static_url=DOCS_ASSETS,
        # Swagger UI would otherwise send the spec's URL to validator.swagger.io for a badge.
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.settings = settings
    if pool is not None:
        app.state.pool = pool
    errors.install(app)
    _document_errors_as_served(app)
    for module in (health, models, chat, completions, embeddings, responses, images, videos,
                   messages, ollama, usage, keys, conversations, catalog, traces,
                   documents, tools, evals, metrics):  # fmt: skip
        app.include_router(module.router)
    if not settings.no_ui:
        app.include_router(web.router())
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, timeout=settings.body_timeout)
    database = open_for(settings)
    app.state.usage = UsageStore(database)
    app.state.conversations = ConversationStore(database)
    app.state.metrics = Metrics(app.state)
    app.state.telemetry = Telemetry.configured(settings)  # None unless otel_endpoint is set
    app.add_middleware(
        UsageRecorder,
        store=app.state.usage,
        metrics=app.state.metrics,
        pricing=Pricing(settings, app.state),
        telemetry=app.state.telemetry,
    )
    # Before the body is read: a request without a valid key costs a header lookup.
    app.state.keys = Keys(KeyStore(database))
    app.add_middleware(KeyCheck, keys=app.state.keys, usage=app.state.usage)
    if settings.cors_origins:  # off by default: no page on another origin may read an answer
        # Around the key check: a listed origin can read its 401s and 429s, and a preflight
        # (which carries no key) is answered here.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=list(LIMIT_HEADERS),
            max_age=600,
        )
    # Added last, so it runs first: a request for another host name is refused unread.
    app.add_middleware(HostCheck, allowed=settings.allowed_hosts)
    return app


def _document_errors_as_served(app: FastAPI) -> None:
    """FastAPI documents a 422 on every route with a body; kaiyuan answers those with 400."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
