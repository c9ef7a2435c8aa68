"""The OpenAI-compatible endpoint a CLI command talks to: ``--url``, or the model served
in-process on an ephemeral loopback port (so the CLI always goes through the server's code)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import openai

from kaiyuan.config import Settings
from kaiyuan.errors import KaiyuanError


class ChatError(KaiyuanError):
    status = 0


@contextlib.contextmanager
def embedded_server(settings: Settings) -> Iterator[str]:
    import uvicorn

    from kaiyuan.engines.pool import EnginePool
    from kaiyuan.server import create_app

    pool = EnginePool.from_settings(settings)
    config = uvicorn.Config(
        create_app(settings, pool), host="127.0.0.1", port=0, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="kaiyuan-embedded", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise ChatError("the in-process server did not start")
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(10)
        asyncio.run(pool.aclose())


def api_url(url: str) -> str:
    """A server URL as the ``openai`` client's base URL (``/v1`` added when missing)."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def default_model(client: openai.OpenAI) -> str:
    """A model that chats (kaiyuan lists capabilities), preferring one already loaded."""
    models = client.models.list().data
    if not models:
        raise ChatError("the server lists no models")

    def rank(m: Any) -> tuple[bool, bool]:
        extra = m.model_extra or {}
        return "chat" in extra.get("capabilities", ["chat"]), bool(extra.get("loaded", False))

    return str(max(models, key=rank).id)
