"""API keys at the door (``kaiyuan keys``). With no key in the database the server is open, as
before (loopback only unless ``--no-auth``, see cli/serve.py); as soon as one key exists, every
API route needs one: ``Authorization: Bearer KEY`` (OpenAI, Ollama) or ``x-api-key: KEY``
(Anthropic), either on every surface. A missing, unknown, revoked or expired key is a 401 in
the surface's own envelope; a key limited to some models gets a 403 for the others and sees
only its own in the model lists. A key's requests-per-minute and requests-at-once limits are
kept here too (server/limits.py): the parallel slot is held until the response is sent.

The key store is read off the event loop and cached for ``TTL`` seconds (a key created,
revoked or rotated from the CLI counts within that time); checking a known secret again costs
a dictionary lookup.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kaiyuan.db.keys import ApiKey, KeyStore
from kaiyuan.db.usage import UsageStore
from kaiyuan.errors import KaiyuanError
from kaiyuan.server.errors import payload
from kaiyuan.server.limits import Budgets, Limiter, RateLimited, Ticket

TTL = 2.0
# The web app's page and assets are open: the page asks for a key and sends it with each call.
OPEN_PATHS = ("/", "/app", "/health", "/ready", "/metrics", "/docs", "/redoc", "/openapi.json")
# kaiyuan's own resources (conversations, agent runs, documents, the catalogue): a key still
# opens them, but they are no model requests: no budget, rate limit, model check or usage row.
OWN = "/v1/kaiyuan/"
HOW = "send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'"


class Unauthorized(KaiyuanError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class Forbidden(KaiyuanError):
    status = 403
    type = "invalid_request_error"
    code = "model_not_allowed"


class AdminRequired(Forbidden):
    code = "admin_required"


def require_admin(request: Request, what: str, *, open_without_keys: bool = False) -> None:
    """403 unless the request's key is an admin key. Without keys (an open server) there is
    no admin: ``open_without_keys`` lets everyone through then, else nobody."""
    key = key_of(request)
    if key is None:
        if open_without_keys:
            return
        raise AdminRequired(
            f"{what} over the API needs an admin key: create the first one with "
            "`kaiyuan keys create NAME --admin`"
        )
    if not key.admin:
        raise AdminRequired(f"API key '{key.name}' is not an admin key ({what} needs one)")


@dataclass(slots=True)
class Keys:
    """The server's cached view of the key store."""

    store: KeyStore
    _required: tuple[float, bool] = (0.0, False)
    _known: dict[str, tuple[float, ApiKey | None]] = field(default_factory=dict)

    async def required(self) -> bool:
        checked, value = self._required
        if time.monotonic() - checked > TTL:
            value = await asyncio.to_thread(lambda: self.store.count_usable() > 0)
            self._required = (time.monotonic(), value)
        return value

    def forget(self) -> None:
        """Drop what is cached (a key was revoked or rotated here: refused from now on)."""
        self._known.clear()
        self._required = (0.0, False)

    async def check(self, secret: str) -> ApiKey:
        digest = hashlib.sha256(secret.encode("utf-8", "replace")).digest()
        seen = self._known.get(digest.hex())
        if seen is None or time.monotonic() - seen[0] > TTL:
            key = await asyncio.to_thread(self.store.verify, secret)
            if len(self._known) > 10_000:  # bounded: unknown secrets are cached too
                self._known.clear()
            seen = self._known[digest.hex()] = (time.monotonic(), key)
        key = seen[1]
        if key is None:
            raise Unauthorized(f"the API key is not valid; {HOW} (keys: `kaiyuan keys list`)")
        if key.revoked_at is not None:
            raise Unauthorized(f"API key '{key.name}' was revoked")
        if not key.usable():
            expired = key.expires_at.date().isoformat() if key.expires_at else "?"
            raise Unauthorized(f"API key '{key.name}' expired on {expired}")
        return key


def presented(scope: Scope) -> str | None:
    """The secret a request carries, from either header."""
    headers = dict(scope.get("headers", []))
    raw = headers.get(b"x-api-key")
    if raw:
        return raw.decode("latin-1").strip()
    auth = headers.get(b"authorization", b"").decode("latin-1").strip()
    scheme, _, value = auth.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


class KeyCheck:
    """Pure ASGI: a request to an API route with no valid key never reaches a route."""

    def __init__(self, app: ASGIApp, *, keys: Keys, usage: UsageStore) -> None:
        self.app = app
        self.keys = keys
        self.limiter = Limiter()
        self.budgets = Budgets(usage)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _open(scope["path"]) or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        key = None
        try:
            if await self.keys.required():
                secret = presented(scope)
                if secret is None:
                    raise Unauthorized(
                        f"this server needs an API key: {HOW} "
                        "(an administrator creates one with `kaiyuan keys create NAME`)"
                    )
                key = await self.keys.check(secret)
            metered = key if not scope["path"].startswith(OWN) else None
            if metered is not None and scope["method"] == "POST":  # reading costs nothing
                await self.budgets.check(metered)
            ticket = self.limiter.admit(metered) if metered is not None else None
        except KaiyuanError as exc:
            await _refuse(send, scope["path"], exc)
            return
        state = scope.setdefault("state", {})
        state["api_key"] = key
        state["limiter"] = self.limiter  # the key's limits per model, once the body names one
        if ticket is None or not ticket.headers:
            try:
                await self.app(scope, receive, send)
            finally:
                if ticket is not None:
                    self._done(ticket, state)
            return
        extra = [(k.encode(), v.encode()) for k, v in ticket.headers.items()]

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, with_headers)
        finally:  # the response is sent (a stream: to its end) or the client left
            self._done(ticket, state)

    def _done(self, ticket: Ticket, state: dict[str, Any]) -> None:
        meter = state.get("meter")
        tokens = meter.tokens if meter is not None else 0
        ticket.release(tokens)
        on_model = state.get("model_ticket")
        if on_model is not None:
            on_model.release(tokens)
        self.budgets.spent(ticket.key_id, tokens, meter.cost_usd if meter is not None else 0.0)


def _open(path: str) -> bool:
    return any(path == p or (p != "/" and path.startswith(p + "/")) for p in OPEN_PATHS)


async def _refuse(send: Send, path: str, exc: KaiyuanError) -> None:
    import json

    body = json.dumps(payload(path, exc.status, exc.message, exc.type, code=exc.code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if exc.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if isinstance(exc, RateLimited):
        headers += [(k.encode(), v.encode()) for k, v in exc.headers.items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# --- what a route asks -----------------------------------------------------------------------
def key_of(request: Request) -> ApiKey | None:
    return getattr(request.state, "api_key", None)


def check_model(request: Request, model: str) -> None:
    """403 unless the request's key may use ``model`` (aliases count as what they name); then
    its limits on that model, if it has some (429 over one)."""
    key = key_of(request)
    if key is None or (key.models is None and not key.model_limits):
        return
    canonical = request.app.state.pool.canonical(model)
    if key.models is not None and not (key.allows(model) or key.allows(canonical)):
        raise Forbidden(
            f"API key '{key.name}' may not use model '{model}' "
            f"(it may use: {', '.join(key.models) or 'none'})",
            param="model",
        )
    limiter = getattr(request.state, "limiter", None)
    taken = getattr(request.state, "model_ticket", None) is not None  # counted once a request
    if key.model_limits and limiter is not None and not taken:
        named = model if model in key.model_limits else canonical
        request.state.model_ticket = limiter.admit_model(key, named)


def visible(request: Request, models: list[Any], name: Any = lambda m: m.id) -> list[Any]:
    """The models (listing entries) the request's key may see."""
    key = key_of(request)
    if key is None or key.models is None:
        return models
    pool = request.app.state.pool
    return [m for m in models if key.allows(name(m)) or key.allows(pool.canonical(name(m)))]
