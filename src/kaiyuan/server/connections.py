"""Connection guards uvicorn lacks (security guide T24, slow clients): a deadline for a
request's headers and a cap on the connections one client address may hold open.

Without them, 300 clients that never finish their headers were all kept open indefinitely.
The body has its own deadline in :mod:`kaiyuan.server.middleware`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def guarded_protocol(*, header_timeout: float, per_client: int) -> type[HttpToolsProtocol]:
    """An HTTP protocol class for ``uvicorn.Config(http=...)``; one per server, as the
    per-address counts are shared by its connections."""
    open_per_address: Counter[str] = Counter()

    class Guarded(HttpToolsProtocol):
        _address: str | None = None
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            peer: Any = transport.get_extra_info("peername")
            address = str(peer[0]) if isinstance(peer, tuple) and peer else None
            if address is not None and open_per_address[address] >= per_client:
                transport.abort()  # over the cap: refused before a byte is read
                return
            if address is not None:
                open_per_address[address] += 1
                self._address = address
            super().connection_made(transport)
            self._start_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_header_timer()
            if self._address is not None:
                open_per_address[self._address] -= 1
                if open_per_address[self._address] <= 0:
                    del open_per_address[self._address]
                self._address = None
            if getattr(self, "transport", None) is not None:
                super().connection_lost(exc)

        def on_message_begin(self) -> None:
            self._start_header_timer()  # a keep-alive connection's next request
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._stop_header_timer()
            super().on_headers_complete()

        def _start_header_timer(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout, self._headers_late)

        def _stop_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return Guarded
