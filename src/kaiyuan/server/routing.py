"""The route class every API router uses: JSON bodies are parsed off the event loop when they
are big, text the UTF-8 encoder cannot write is refused at the door, and fields no request
model knows are logged once (or refused under ``strict_params``, see ``protocol/fields.py``).

FastAPI parses a request's JSON on the event loop; a 16 MB body takes about 0.1 s there, long
enough to stall every other client (T22). JSON also lets a client send a lone UTF-16 surrogate
(``"\\ud800"``), which Python keeps in a ``str`` that no tokenizer, database or log can encode:
it is a 400 naming the field here, instead of a 500 wherever it is first encoded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from kaiyuan.errors import InvalidRequest
from kaiyuan.protocol.fields import UNKNOWN
from kaiyuan.server.auth import OWN, check_model, key_of

log = logging.getLogger(__name__)

OFF_LOOP_BYTES = 256 * 1024
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class _Request(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            if len(body) > OFF_LOOP_BYTES:
                self._json = await asyncio.to_thread(_parse, body)
            else:
                self._json = _parse(body)
        return self._json


def _parse(body: bytes) -> Any:
    value = json.loads(body)
    if _SURROGATE_ESCAPE.search(body):  # only then is a walk needed
        where = _lone_surrogate(value, "")
        if where is not None:
            raise InvalidRequest(
                f"{where or 'the body'} contains a lone UTF-16 surrogate, which is not valid "
                "Unicode text",
                param=where or None,
            )
    return value


def _lone_surrogate(value: Any, path: str) -> str | None:
    """The path (``messages[0].content``) of the first string holding a lone surrogate."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return where
        elif isinstance(item, dict):
            for key, child in item.items():
                key = str(key).encode("utf-8", "replace").decode()  # names go in the message
                name = f"{where}.{key}" if where else key
                stack.append((child, name))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(item))
    return None


async def _inspect(request: Request) -> None:
    """The model a JSON body names (``model``, or Ollama's older ``name``), before any route
    work: the usage meter's model, and for a key limited to some models, one of them (403)."""
    meter = getattr(request.state, "meter", None)
    key = key_of(request)
    limited = key is not None and (key.models is not None or bool(key.model_limits))
    if (meter is None and not limited) or request.method != "POST":
        return
    if request.url.path.startswith(OWN):  # kaiyuan's own resources name no model to use
        return
    if not request.headers.get("content-type", "").startswith("application/json"):
        return
    try:
        body = await request.json()  # parsed once: the route reads the same object
    except (ValueError, RecursionError):
        return  # the route answers a malformed or too deeply nested body with its own 400
    if not isinstance(body, dict):
        return
    for field in ("model", "name"):
        named = body.get(field)
        if isinstance(named, str):
            if meter is not None and meter.model is None:
                meter.model = named[:256]
            if limited:
                check_model(request, named)


class ApiRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            # Fields no request model knows: collected while the body is validated and logged
            # once, or (strict_params) refused by the models themselves.
            strict = request.app.state.settings.strict_params
            unknown: list[str] | None = None if strict else []
            token = UNKNOWN.set(unknown)
            try:
                wrapped = _Request(request.scope, request.receive)
                await _inspect(wrapped)
                return await handler(wrapped)
            finally:
                UNKNOWN.reset(token)
                if unknown:
                    log.warning(
                        "%s %s: ignored unknown fields %s (strict_params refuses them)",
                        request.method, request.url.path, ", ".join(sorted(set(unknown))),
                    )  # fmt: skip

        return handle
