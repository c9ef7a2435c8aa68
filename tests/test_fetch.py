"""T16: the fetcher refuses every way of reaching this machine, and caps size and time.

Test hosts: a "public" server on 127.0.0.2 (the policy under test allows exactly it) and an
"internal" one on 127.0.0.1 that must never be reached.
"""

from __future__ import annotations

import http.server
import ipaddress
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kaiyuan.net.fetch import MAX_REDIRECTS, FetchFailed, FetchRefused, fetch, public

PUBLIC_IP = ipaddress.ip_address("127.0.0.2")


class Server:
    """Routes by path: (status, headers, body). Pseudo-headers make it slow: `sleep` (seconds
    before answering), `drip-head` and `drip-body` (see ``drip``). Every pause ends when the
    server is closed, so a test may script a server that would stall for minutes."""

    def __init__(self, host: str) -> None:
        self.requests: list[str] = []
        self.release = threading.Event()  # set on close: every pause ends
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(self.path)
                route = server.routes.get(self.path, (404, {}, b"missing"))
                status, headers, body = route
                if "drip-head" in headers or "drip-body" in headers:
                    self.drip(status, headers, body)
                    return
                if headers.get("sleep"):
                    server.release.wait(float(headers["sleep"]))
                self.send_response(status)
                for key, value in headers.items():
                    if key != "sleep":
                        self.send_header(key, value)
                if "Transfer-Encoding" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if headers.get("Transfer-Encoding") == "chunked":
                    for i in range(0, len(body), 65536):
                        part = body[i : i + 65536]
                        self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.wfile.write(body)

            def drip(self, status: int, headers: dict[str, str], body: bytes) -> None:
                """A slow server: the head in `drip-pieces` pieces (10 unless told; as many
                as it has bytes at most) `drip-head` seconds apart, then the body one byte every
                `drip-body` seconds; it stops when the client hangs up."""
                lines = [f"HTTP/1.1 {status} Slow", f"Content-Length: {len(body)}"]
                lines += [f"{k}: {v}" for k, v in headers.items() if not k.startswith("drip-")]
                head = ("\r\n".join(lines) + "\r\n\r\n").encode()
                step = -(-len(head) // int(headers.get("drip-pieces", 10)))
                pieces = [(head[i : i + step], float(headers.get("drip-head", 0)))
                          for i in range(0, len(head), step)]  # fmt: skip
                pieces += [(body[i : i + 1], float(headers.get("drip-body", 0)))
                           for i in range(len(body))]  # fmt: skip
                self.close_connection = True
                try:
                    for piece, pause in pieces:
                        self.wfile.write(piece)
                        server.release.wait(pause)
                except OSError:
                    pass

        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()


@pytest.fixture
def internal() -> Iterator[Server]:
    server = Server("127.0.0.1")
    server.routes["/secret"] = (200, {}, b"internal secret")
    yield server
    server.close()


@pytest.fixture
def outside() -> Iterator[Server]:
    server = Server("127.0.0.2")
    yield server
    server.close()


def only_outside(address: Any) -> bool:
    return address == PUBLIC_IP


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/secret",
        "http://0177.0.0.1:{port}/secret",
        "http://2130706433:{port}/secret",
        "http://127.1:{port}/secret",
        "http://[::ffff:127.0.0.1]:{port}/secret",
        "http://localhost:{port}/secret",
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:1\\@1.1.1.1/",
        "http://user:pass@127.0.0.1:{port}/secret",
        "file:///etc/passwd",
        "ftp://127.0.0.1/",
        "http://[::1]:{port}/secret",
        "http://[::127.0.0.1]:{port}/secret",
        "http://[64:ff9b::7f00:1]:{port}/secret",
        "http://[2002:7f00:1::]:{port}/secret",
        "http://10.0.0.1/",
        "http://0.0.0.0:{port}/secret",
    ],
)
def test_internal_targets_are_refused_before_connecting(internal: Server, url: str) -> None:
    with pytest.raises(FetchRefused):
        fetch(url.format(port=internal.port), timeout=5)
    assert internal.requests == []


def test_a_public_url_redirecting_inside_is_refused(internal: Server, outside: Server) -> None:
    outside.routes["/go"] = (302, {"Location": f"{internal.url}/secret"}, b"")
    with pytest.raises(FetchRefused):
        fetch(f"{outside.url}/go", allowed=only_outside)
    assert outside.requests == ["/go"]
    assert internal.requests == []


def test_a_name_resolving_to_loopback_is_refused(internal: Server) -> None:
    with pytest.raises(FetchRefused):
        fetch(f"http://totally-public.example:{internal.port}/secret",
              resolver=lambda host, port: ["203.0.113.9", "127.0.0.1"])  # fmt: skip
    assert internal.requests == []


def test_the_checked_address_is_the_one_connected_to(internal: Server, outside: Server) -> None:
    """DNS rebinding: the second answer (loopback) is never used; the first check stands."""
    outside.routes["/page"] = (200, {"Content-Type": "text/plain"}, b"public page")
    answers = iter([["127.0.0.2"], ["127.0.0.1"], ["127.0.0.1"]])
    got = fetch(f"http://rebind.example:{outside.port}/page", allowed=only_outside,
                resolver=lambda host, port: next(answers))  # fmt: skip
    assert got.body == b"public page" and got.status == 200
    assert got.content_type == "text/plain"
    assert internal.requests == []


def test_redirects_between_allowed_hosts_are_followed(outside: Server) -> None:
    outside.routes["/a"] = (301, {"Location": "/b"}, b"")
    outside.routes["/b"] = (200, {}, b"arrived")
    got = fetch(f"{outside.url}/a", allowed=only_outside)
    assert got.body == b"arrived" and got.url.endswith("/b")


def test_redirect_loops_stop(outside: Server) -> None:
    outside.routes["/loop"] = (302, {"Location": "/loop"}, b"")
    with pytest.raises(FetchFailed, match="redirected more than"):
        fetch(f"{outside.url}/loop", allowed=only_outside)


@pytest.mark.parametrize("chunked", [False, True])
def test_bodies_over_the_cap_are_refused(outside: Server, chunked: bool) -> None:
    headers = {"Transfer-Encoding": "chunked"} if chunked else {}
    outside.routes["/big"] = (200, headers, b"x" * (2 * 2**20))
    with pytest.raises(FetchRefused, match="bytes"):
        fetch(f"{outside.url}/big", allowed=only_outside, max_bytes=2**20)


def test_slow_servers_time_out(outside: Server) -> None:
    """The server would answer after a minute."""
    outside.routes["/slow"] = (200, {"sleep": "60"}, b"late")
    _ends_by(f"{outside.url}/slow", timeout=0.5)


def test_public_policy() -> None:
    for text in ("8.8.8.8", "2606:4700:4700::1111"):
        assert public(ipaddress.ip_address(text))
    for text in ("127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
                 "100.64.0.1", "0.0.0.0", "::1", "fe80::1", "fc00::1", "::ffff:10.0.0.1",
                 "224.0.0.1"):  # fmt: skip
        assert not public(ipaddress.ip_address(text)), text


# --- one deadline for the whole fetch, whatever the server (or DNS) does --------------------------
# A fetch cut at its deadline returns moments after it; a busy CI machine adds seconds to that,
# never a minute. Each stall scripted below would hold a fetch that ignored its deadline for a
# minute or more (or it would succeed), so this slack cannot hide an ignored deadline.
SLACK = 10.0


def _ends_by(url: str, timeout: float, **kwargs: Any) -> None:
    """The fetch fails, saying it ran out of time, within SLACK of its deadline."""
    start = time.monotonic()
    with pytest.raises(FetchFailed, match=re.escape(f"took longer than {timeout:g} s")):
        fetch(url, allowed=only_outside, timeout=timeout, **kwargs)
    assert time.monotonic() - start < timeout + SLACK


def test_a_body_dripping_a_byte_at_a_time_is_cut_at_the_deadline(outside: Server) -> None:
    """Each read succeeds well within the timeout; only their sum is over it (200 bytes: 100 s)."""
    outside.routes["/drip"] = (200, {"drip-body": "0.5"}, b"x" * 200)
    _ends_by(f"{outside.url}/drip", timeout=1.5)


def test_headers_dripping_in_are_cut_at_the_deadline(outside: Server) -> None:
    """Each piece of the head comes well within the timeout; all of them (over 150, 0.5 s
    apart) take more than a minute."""
    headers = {"drip-head": "0.5", "drip-pieces": "200", "X-Padding": "p" * 1000}
    outside.routes["/head"] = (200, headers, b"late")
    _ends_by(f"{outside.url}/head", timeout=1)


def test_a_chain_of_slow_redirects_shares_one_deadline(outside: Server) -> None:
    """Each hop (its head in ten pieces 0.1 s apart: 1 s) fits in the timeout on its own; the
    chain (5 s) does not. With a timeout per hop the fetch would arrive; with one deadline for
    all, it fails during the second or third hop: a hop is asked for after at least 0.9 s per
    hop before it, so the fourth never is, and the second is, with 1.5 s to spare."""
    for hop in range(MAX_REDIRECTS):
        outside.routes[f"/hop{hop}"] = (
            302,
            {"drip-head": "0.1", "Location": f"/hop{hop + 1}"},
            b"",
        )
    outside.routes[f"/hop{MAX_REDIRECTS}"] = (200, {}, b"arrived")
    _ends_by(f"{outside.url}/hop0", timeout=2.5)
    assert outside.requests[:2] == ["/hop0", "/hop1"] and len(outside.requests) <= 3


def test_a_hanging_resolver_is_cut_at_the_deadline(outside: Server) -> None:
    """The lookup would take two minutes (it is let go when the test ends)."""
    release = threading.Event()

    def hang(host: str, port: int) -> list[str]:
        release.wait(120)
        return ["127.0.0.2"]

    try:
        _ends_by(f"http://slow-dns.example:{outside.port}/", timeout=1, resolver=hang)
    finally:
        release.set()
    assert outside.requests == []


# --- IPv6 addresses that carry an IPv4 address are judged by it -----------------------------------
CARRY_INTERNAL = [
    "::127.0.0.1",  # IPv4-compatible
    "::a00:1",  # IPv4-compatible 10.0.0.1
    "64:ff9b::7f00:1",  # NAT64 well-known prefix, 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64, 169.254.169.254 (cloud metadata)
    "64:ff9b:1::7f00:1",  # NAT64 local-use prefix (RFC 8215): always a local translator
    "64:ff9b:1::808:808",
    "2002:7f00:1::",  # 6to4, 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4, 169.254.169.254
    "2002:c0a8:101:1::1",  # 6to4, 192.168.1.1
    "2001:0:7f00:1::",  # Teredo, server 127.0.0.1
    "2001:0:4136:e378:8000:0:f5ff:fffe",  # Teredo, public server, client 10.0.0.1 (XOR-ed)
    "2606:4700::5efe:7f00:1",  # ISATAP interface id, 127.0.0.1
    "2606:4700::200:5efe:a00:1",  # ISATAP (universal bit), 10.0.0.1
]
CARRY_PUBLIC = ["64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8", "2606:4700:4700::1111"]


@pytest.mark.parametrize("text", CARRY_INTERNAL)
def test_ipv6_carrying_an_internal_ipv4_is_refused(internal: Server, text: str) -> None:
    assert not public(ipaddress.ip_address(text))
    with pytest.raises(FetchRefused):
        fetch(f"http://v6.example:{internal.port}/secret", resolver=lambda host, port: [text])
    with pytest.raises(FetchRefused):
        fetch(f"http://[{text}]:{internal.port}/secret")
    assert internal.requests == []


@pytest.mark.parametrize("text", CARRY_PUBLIC)
def test_ipv6_carrying_a_public_ipv4_is_allowed(text: str) -> None:
    assert public(ipaddress.ip_address(text))
