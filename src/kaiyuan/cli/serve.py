"""``kaiyuan serve``: load the models, run uvicorn, and say what a user needs to use it."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import shutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import click
import uvicorn

from kaiyuan import __version__
from kaiyuan.config import DEFAULT_MODEL, Settings, config_file
from kaiyuan.engines.pool import EnginePool
from kaiyuan.errors import InvalidRequest
from kaiyuan.server import create_app
from kaiyuan.server.connections import guarded_protocol

SHOWN_MODELS = 8  # past this, the start-up lines point to GET /v1/models


def run(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The agent's in-process calls to the chat route would log every request twice.
    logging.getLogger("httpx2").setLevel(max(logging.WARNING, logging.root.level))
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.root.level))
    refuse_open_network(settings)
    warn_open_origins(settings)
    # Loading first turns a missing model into one readable line instead of a startup trace.
    pool = EnginePool.from_settings(settings)
    config = uvicorn.Config(
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
    server = _Server(config, lambda port: click.echo(startup_text(settings, pool, port), err=True))
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        asyncio.run(pool.aclose())
    if not server.started:
        raise SystemExit(3)  # uvicorn's start-up failure status; it has logged why


class _Server(uvicorn.Server):
    """uvicorn's server, announcing kaiyuan once the socket is bound (and the port known)."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[int], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.servers and self.servers[0].sockets:
            port = self.servers[0].sockets[0].getsockname()[1]
            # off the loop: naming a pick may measure memory bandwidth once (under a second)
            await asyncio.to_thread(self._on_started, port)


def startup_text(settings: Settings, pool: EnginePool, port: int) -> str:
    """What a user needs once the server is up: the models, the URLs to paste into clients,
    where models and settings live, and a pointer to a real model when only the demo runs."""
    pinned = list(dict.fromkeys(settings.models))
    records = pool.records()
    others = [r.id for r in records if r.id not in pinned]
    models = ", ".join(pinned) + " (loaded)"
    if others:
        shown = ", ".join(others[:SHOWN_MODELS])
        if len(others) > SHOWN_MODELS:
            shown += f" and {len(others) - SHOWN_MODELS} more (GET /v1/models lists them all)"
        models += f"; loaded on first request: {shown}"
    local, remote = base_urls(settings.host, port)
    api = f"{local}/v1"
    if remote:
        api += f" on this machine, {remote}/v1 from others"
    config = config_file()
    lines = [
        f"kaiyuan {__version__} is ready",
        *([] if settings.no_ui else [f"  web app   {local}/  (chat in your browser)"]),
        f"  models    {models}",
        f"  OpenAI    base_url={api}  (any api_key)",
        f"  API docs  {local}/docs",
        f"  store     {settings.home / 'models'}",
        f"  config    {config}{'' if config.is_file() else ' (not present)'}; every setting "
        "is in docs/settings.md",
    ]
    chat = {r.id for r in records if "chat" in r.capabilities}
    if chat == {DEFAULT_MODEL}:
        me = command_name()
        pick = chat_pick(settings) or "<pick>"
        lines += [
            f"  note      {DEFAULT_MODEL} is a small offline demo (135M parameters): it shows "
            "the API works, not what a real model can do.",
            f"            For real use: `{me} pull {pick}` (`{me} recommend` picks it for this "
            f"machine), then `{me} serve -m {pick}`.",
        ]
    return "\n".join(lines)


def chat_pick(settings: Settings) -> str | None:
    """The catalogue id `kaiyuan recommend` picks for chat on this machine, if any."""
    from kaiyuan.store import recommend

    chosen = recommend.pick_here("chat", settings.home / "cache")
    return chosen.model.id if chosen else None


def command_name() -> str:
    """How to run kaiyuan again as it was run now: ``kaiyuan`` when that is on PATH, else the
    path it was started by (``.venv/bin/kaiyuan`` after ``make serve``)."""
    invoked = Path(sys.argv[0])
    if invoked.name != "kaiyuan":  # python -m kaiyuan, or a test runner
        return "kaiyuan"
    on_path = shutil.which("kaiyuan")
    if on_path and Path(on_path).resolve() == invoked.resolve():
        return "kaiyuan"
    return str(invoked)


def loopback(host: str) -> bool:
    if host.strip("[]").lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to any interface


def refuse_open_network(settings: Settings) -> None:
    """Any address but loopback, with no API key, is refused unless --no-auth says so: a
    server open to a network would let anyone who reaches it use every model."""
    if loopback(settings.host) or settings.no_auth:
        return
    from kaiyuan.cli.keys import store

    if store(settings).count_usable() == 0:
        raise InvalidRequest(
            f"refusing to serve {settings.host} without API keys: anyone on the network could "
            "use every model. Create one first (`kaiyuan keys create NAME`), or pass --no-auth "
            "to serve it open on purpose"
        )


def warn_open_origins(settings: Settings) -> None:
    """Listed web origins with no API key: their pages may use every model (said once)."""
    if not settings.cors_origins:
        return
    from kaiyuan.cli.keys import store

    if store(settings).count_usable() == 0:
        logging.getLogger("kaiyuan").warning(
            "cors_origins lets pages from %s call this server, and no API key exists: they may "
            "use every model (`kaiyuan keys create NAME` makes them need a key)",
            ", ".join(settings.cors_origins),
        )


def base_urls(host: str, port: int) -> tuple[str, str | None]:
    """(URL to use on this machine, URL for other machines or None) for a bind address. A
    wildcard address is not one to connect to: this machine reaches itself on loopback."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return f"http://{host}:{port}", None  # a name such as localhost
    if address.is_unspecified:
        loopback = "[::1]" if address.version == 6 else "127.0.0.1"
        return f"http://{loopback}:{port}", f"http://<this machine's address>:{port}"
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"http://{shown}:{port}", None
