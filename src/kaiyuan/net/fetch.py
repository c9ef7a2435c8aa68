"""An SSRF-safe HTTP(S) fetcher (security guide T16).

A URL a model or a request supplies must not reach this machine, its network or cloud metadata:
the host is resolved once, every address it resolves to must be public, and the connection goes
to the checked address (so DNS cannot change its answer in between); TLS still verifies the
name. An IPv6 address that carries an IPv4 one (mapped, compatible, NAT64, 6to4, Teredo,
ISATAP) is judged by what it carries too. Redirects are followed by hand and each target is
checked the same way. Userinfo, backslashes and schemes other than http/https are refused; the
body is capped in size, and the whole fetch (resolution, connection, TLS, every redirect and the
body) in wall-clock time: one deadline, which a server dripping bytes cannot stretch.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from kaiyuan.errors import InvalidRequest

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
MAX_REDIRECTS = 5

_COMPATIBLE = ipaddress.IPv6Network("::/96")  # ::a.b.c.d (deprecated IPv4-compatible; :: and ::1)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215 local-use: a local translator


class FetchRefused(InvalidRequest):
    code = "fetch_refused"


class FetchFailed(InvalidRequest):
    code = "fetch_failed"


@dataclass(slots=True, frozen=True)
class Fetched:
    url: str
    status: int
    content_type: str
    body: bytes


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries, where a packet to it may end up."""
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address in _COMPATIBLE or address in _NAT64:
        found.append(low32)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)  # (server, client); ipaddress undoes the client's XOR
    if (int(address) >> 32) & 0xFDFFFFFF == 0x5EFE:  # ISATAP interface id ::0:5efe / ::200:5efe
        found.append(low32)
    return found


def public(address: Address) -> bool:
    """Only globally routable addresses; an IPv6 address that embeds IPv4 ones must be public
    itself and carry only public IPv4 addresses (mapped and compatible ones count as their IPv4)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _NAT64_LOCAL:
            return False
        carried = embedded_ipv4(address)
        if not all(_public_one(ipv4) for ipv4 in carried):
            return False
        if address.ipv4_mapped is not None or address in _COMPATIBLE:
            return bool(carried)  # the IPv6 form is only a wrapper; the IPv4 was judged
    return _public_one(address)


def _public_one(address: Address) -> bool:
    return address.is_global and not address.is_multicast


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


class _Overdue(Exception):
    """The fetch's deadline passed; ``fetch`` turns this into FetchFailed."""


def fetch(
    url: str,
    *,
    max_bytes: int = 10 * 2**20,
    timeout: float = 10.0,
    allowed: Callable[[Address], bool] = public,
    resolver: Resolver = system_resolver,
    param: str = "url",
) -> Fetched:
    deadline = time.monotonic() + timeout
    watchdog = _Watchdog(deadline)
    try:
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            target, address = _check(current, allowed, resolver, deadline, param)
            response = _get(target, address, max_bytes, deadline, watchdog, param)
            if response.status in (301, 302, 303, 307, 308) and response.location:
                current = str(target.join(response.location))
                continue
            return Fetched(str(target), response.status, response.content_type, response.body)
        raise FetchFailed(f"{url} redirected more than {MAX_REDIRECTS} times", param=param)
    except _Overdue:
        raise FetchFailed(f"fetching {url} took longer than {timeout:g} s", param=param) from None
    finally:
        watchdog.close()


def _check(
    url: str, allowed: Callable[[Address], bool], resolver: Resolver, deadline: float, param: str
) -> tuple[httpx.URL, Address]:
    if "\\" in url:
        raise FetchRefused("URLs with backslashes are refused", param=param)
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL:
        raise FetchRefused(f"'{url[:200]}' is not a valid URL", param=param) from None
    if target.scheme not in ("http", "https"):
        raise FetchRefused("only http and https URLs can be fetched", param=param)
    if target.userinfo:
        raise FetchRefused("URLs with a user name or password are refused", param=param)
    host = target.host
    if not host:
        raise FetchRefused("the URL has no host", param=param)
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        answer = _resolve(resolver, host, port, deadline)
        addresses = [ipaddress.ip_address(a.split("%")[0]) for a in answer]
    except (OSError, ValueError):
        raise FetchFailed(f"cannot resolve '{host}'", param=param) from None
    if not addresses:
        raise FetchFailed(f"cannot resolve '{host}'", param=param)
    if not all(allowed(a) for a in addresses):
        raise FetchRefused(
            f"'{host}' resolves to a private, loopback or reserved address; refused",
            param=param,
        )
    return target, addresses[0]


def _resolve(resolver: Resolver, host: str, port: int, deadline: float) -> list[str]:
    """The resolver's answer, waited for until the deadline at most (getaddrinfo cannot be
    interrupted: a hung lookup is left to finish on its daemon thread)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(resolver(host, port))
        except BaseException as exc:  # handed to the fetching thread below
            outcome.append(exc)

    thread = threading.Thread(target=run, name="fetch-resolve", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if not outcome:
        raise _Overdue
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return list(outcome[0])


class _Watchdog:
    """Ends a fetch at its deadline whatever the server does: httpx's timeouts bound each read,
    not their sum, so at the deadline every connection the fetch opened is shut down, which wakes
    a blocked read (or TLS handshake) at once. It keeps its own duplicate of each socket, so it
    never touches a descriptor that httpx has closed and the system has reused."""

    def __init__(self, deadline: float) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False
        self.fired = False
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpx's ``trace`` request extension: learns each connection as it opens."""
        if event != "connection.connect_tcp.complete":
            return
        sock = info["return_value"].get_extra_info("socket")
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            if self._closed:
                return
            duplicate = sock.dup()
            self._sockets.append(duplicate)
            if self.fired:
                _shut(duplicate)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            if not self._closed:
                for sock in self._sockets:
                    _shut(sock)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._closed = True
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already shut down by the peer
        sock.shutdown(socket.SHUT_RDWR)


@dataclass(slots=True)
class _Response:
    status: int
    content_type: str
    body: bytes
    location: str | None


def _get(
    target: httpx.URL,
    address: Address,
    max_bytes: int,
    deadline: float,
    watchdog: _Watchdog,
    param: str,
) -> _Response:
    remaining = deadline - time.monotonic()
    if remaining <= 0 or watchdog.fired:
        raise _Overdue
    ip = f"[{address}]" if address.version == 6 else str(address)
    direct = target.copy_with(host=ip.strip("[]"))
    headers = {"Host": target.netloc.decode(), "Accept-Encoding": "identity",
               "User-Agent": "kaiyuan-fetch"}  # fmt: skip
    extensions: dict[str, Any] = {"trace": watchdog.trace}
    if target.scheme == "https":
        extensions["sni_hostname"] = target.host
    try:
        with (
            httpx.Client(timeout=remaining, follow_redirects=False) as client,
            client.stream("GET", direct, headers=headers, extensions=extensions) as response,
        ):
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise FetchRefused(
                    f"{target} is {declared} bytes; the limit is {max_bytes}", param=param
                )
            chunks, size = [], 0
            for chunk in response.iter_raw():
                if time.monotonic() >= deadline:
                    raise _Overdue
                size += len(chunk)
                if size > max_bytes:
                    raise FetchRefused(f"{target} is larger than {max_bytes} bytes", param=param)
                chunks.append(chunk)
            if watchdog.fired:  # the body may have ended only because the watchdog cut it
                raise _Overdue
            return _Response(
                response.status_code,
                response.headers.get("content-type", ""),
                b"".join(chunks),
                response.headers.get("location"),
            )
    except httpx.HTTPError as exc:
        if isinstance(exc, httpx.TimeoutException) or watchdog.fired:
            raise _Overdue from None
        raise FetchFailed(f"fetching {target} failed ({type(exc).__name__})", param=param) from None
