"""One usage row per API request (``/v1/...`` and ``/api/...``), written off the event loop
once the response is done: the key, the model asked for, the endpoint, the app (``X-Title``,
else the ``HTTP-Referer`` host, else the User-Agent's product), the status, the tokens (counted
where every text stream passes, serving/meter.py), time to first token, duration, finish reason,
and whether the client left before the end. It runs inside the key check, so the request's key
is known; the key check reads the meter afterwards for its token limits."""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from dataclasses import replace
from datetime import UTC, datetime

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kaiyuan.db.usage import UsageRow, UsageStore
from kaiyuan.otel import Telemetry
from kaiyuan.server.auth import OWN
from kaiyuan.server.metrics import Metrics
from kaiyuan.server.pricing import Pricing
from kaiyuan.server.serving.meter import METER, Meter

log = logging.getLogger(__name__)
METERED = ("/v1/", "/api/")


def app_name(headers: dict[bytes, bytes]) -> str | None:
    title = headers.get(b"x-title")
    if title:
        return title.decode("utf-8", "replace")[:256]
    referer = headers.get(b"http-referer") or headers.get(b"referer")
    if referer:
        host = urllib.parse.urlsplit(referer.decode("latin-1")).hostname
        if host:
            return host[:256]
    agent = headers.get(b"user-agent")
    if agent:
        return agent.decode("latin-1").split()[0][:256]
    return None


class UsageRecorder:
    def __init__(
        self,
        app: ASGIApp,
        *,
        store: UsageStore,
        metrics: Metrics,
        pricing: Pricing,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.app = app
        self.store = store
        self.metrics = metrics
        self.pricing = pricing
        self.telemetry = telemetry  # None: no spans (otel_endpoint unset)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(METERED) or path.startswith(OWN):
            await self.app(scope, receive, send)
            return
        meter = Meter()
        state = scope.setdefault("state", {})
        state["meter"] = meter
        token = METER.set(meter)
        status, done, recorded = 500, False, False

        async def record() -> None:
            nonlocal recorded
            if recorded:
                return
            recorded = True
            duration = time.monotonic() - meter.started
            key = state.get("api_key")
            row = UsageRow(
                at=datetime.now(UTC),
                key_id=key.id if key else None,
                key_name=key.name if key else None,
                model=meter.model,
                endpoint=scope["path"][:128],
                app=app_name(dict(scope.get("headers", []))),
                status=status,
                prompt_tokens=meter.prompt_tokens,
                cached_tokens=meter.cached_tokens,
                completion_tokens=meter.completion_tokens,
                ttft_ms=(meter.first_token - meter.started) * 1e3 if meter.first_token else None,
                duration_ms=duration * 1e3,
                finish_reason=meter.finish_reason,
                cancelled=not done,
            )
            if self.telemetry is not None:
                self.telemetry.request(row, scope)
            if scope["method"] in ("GET", "HEAD") and meter.model is None:
                return  # a read (a model list, a usage report) uses no model: no usage row
            try:
                await asyncio.shield(asyncio.to_thread(self._record, row, meter, duration))
            except Exception:
                log.exception("a usage row could not be written")

        async def watched(message: Message) -> None:
            nonlocal status, done
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # The row is committed before the response's last bytes leave: a client that
                # has its whole response has its row, even if the server dies right after (T15).
                done = True
                await record()
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            METER.reset(token)
            duration = time.monotonic() - meter.started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(template, status, meter, duration)
            await record()  # a request that ended without its last body message: cancelled

    def _record(self, row: UsageRow, meter: Meter, seconds: float) -> None:
        """Off the event loop: the maker and cost (store lookups), then the durable write."""
        if row.model is not None:
            maker = self.pricing.maker(row.model)
            cost = self.pricing.cost(maker.model, row.prompt_tokens, row.completion_tokens, seconds)
            row = replace(
                row,
                publisher=maker.publisher,
                origin=maker.origin,
                licence=maker.licence,
                cost_usd=cost,
            )
            meter.cost_usd = cost
        self.store.record(row)
