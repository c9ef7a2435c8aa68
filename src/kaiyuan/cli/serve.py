"""``kaiyuan serve``: load the models, then run uvicorn."""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from kaiyuan.config import Settings
from kaiyuan.engines.pool import EnginePool
from kaiyuan.server import create_app
from kaiyuan.server.connections import guarded_protocol


def run(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The agent's in-process calls to the chat route would log every request twice.
    logging.getLogger("httpx2").setLevel(max(logging.WARNING, logging.root.level))
    # Loading first turns a missing model into one readable line instead of a startup trace.
    pool = EnginePool.from_settings(settings)
    try:
        uvicorn.run(
            create_app(settings, pool),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level.lower(),
            timeout_graceful_shutdown=5,
            http=guarded_protocol(
                header_timeout=settings.header_timeout,
                per_client=settings.max_connections_per_client,
            ),
        )
    finally:
        asyncio.run(pool.aclose())
