"""Pure-ASGI guards in front of every route.

- :class:`BodyLimit`: a body over the limit gets a 413 before any of it is parsed, and one
  that does not arrive within the body deadline a 408 (uvicorn has neither). The body is read
  and replayed to the app; later ``receive`` calls go to the server, so disconnects are seen.
- :class:`HostCheck`: with no API keys, only loopback host names (and those the user lists)
  are served, so a web page whose DNS name rebinds to 127.0.0.1 cannot drive the API (T24).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kaiyuan.server.errors import payload


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int, timeout: float = 60.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            too_big = f"request body exceeds the {self.max_bytes}-byte limit"
            await _refuse(send, scope["path"], 413, too_big, "payload_too_large")
            return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":  # gone while sending the body
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_bytes:
                        limit = f"request body exceeds the {self.max_bytes}-byte limit"
                        await _refuse(send, scope["path"], 413, limit, "payload_too_large")
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            late = f"the request body did not arrive within {self.timeout:g} s"
            await _refuse(send, scope["path"], 408, late, "request_timeout")
            return
        body: bytes | None = b"".join(chunks)

        async def replay() -> Message:
            nonlocal body
            if body is not None:
                message: Message = {"type": "http.request", "body": body, "more_body": False}
                body = None
                return message
            return await receive()

        await self.app(scope, replay, send)


class HostCheck:
    """Serve only requests whose ``Host`` is a loopback name, an IP address, or one of
    ``allowed``; ``*`` in ``allowed`` turns the check off. DNS rebinding needs a name the
    attacker controls, so an IP literal (``http://192.168.1.5:8000`` on a LAN) is safe to
    serve. A request without a Host header (HTTP/1.0, in-process transports) is served:
    browsers always send one."""

    def __init__(self, app: ASGIApp, *, allowed: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = {"localhost"} | {_hostname(h.encode()) for h in allowed}
        self.any = "*" in self.allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.any:
            raw = dict(scope.get("headers", [])).get(b"host")
            if raw is not None and not self._served(_hostname(raw)):
                message = (
                    "this server answers only requests addressed to localhost or an IP "
                    "address; to reach it by a name, add the name to allowed_hosts "
                    "(--allow-host NAME)"
                )
                await _refuse(send, scope["path"], 400, message, "host_not_allowed")
                return
        await self.app(scope, receive, send)

    def _served(self, host: str) -> bool:
        if host in self.allowed or host.endswith(".localhost"):
            return True
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return False
        return True


def _hostname(raw: bytes) -> str:
    """``Host`` without its port or IPv6 brackets, lower case."""
    host = raw.decode("latin-1").strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _refuse(send: Send, path: str, status: int, message: str, code: str) -> None:
    body = payload(path, status, message, "invalid_request_error", code=code)
    encoded = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(encoded)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": encoded})
