"""Servers for tests: `kaiyuan serve` as a subprocess, an app in a uvicorn thread, or a small
web site on loopback (`LocalWeb`) standing in for pages and search APIs."""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import openai
import uvicorn
from fastapi import FastAPI

KAIYUAN = str(Path(sys.executable).with_name("kaiyuan"))


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class KaiyuanServer:
    """`kaiyuan serve` on a free loopback port (vLLM's RemoteOpenAIServer pattern)."""

    def __init__(
        self,
        *,
        home: Path,
        args: list[str] | None = None,
        startup: float = 90,
        env: dict[str, str] | None = None,
        executable: str = KAIYUAN,
    ):
        self.env = env or {}
        self.executable = executable
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.home = home
        self.args = args or []
        self.startup = startup
        self.log_path = home / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> KaiyuanServer:
        env = {**os.environ, "KAIYUAN_HOME": str(self.home), **self.env}
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [self.executable, "serve", "--port", str(self.port), *self.args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + self.startup
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            time.sleep(0.2)
        self.__exit__(None, None, None)
        raise RuntimeError(f"server did not become healthy:\n{self.log()}")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, **options: object) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.url + "/v1",
            api_key="test",
            max_retries=0,
            **options,  # type: ignore[arg-type]
        )

    def async_client(self, **options: object) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.url + "/v1",
            api_key="test",
            max_retries=0,
            **options,  # type: ignore[arg-type]
        )


@contextlib.contextmanager
def serve_app(app: FastAPI) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread on a free loopback port; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


Route = tuple[int, dict[str, str], bytes]  # status, headers, body
Query = dict[str, list[str]]


class LocalWeb:
    """http.server in a thread on 127.0.0.1: fixed ``routes`` by path, or ``handlers`` for a
    path that get the parsed query; every request path (with its query) is recorded. A
    ``no-length`` header key sends the body without Content-Length. Subclasses may override
    ``respond``."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.routes: dict[str, Route] = {}
        self.handlers: dict[str, Callable[[Query], Route]] = {}
        web = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                web.requests.append(self.path)
                parsed = urllib.parse.urlsplit(self.path)
                status, headers, body = web.respond(
                    parsed.path, urllib.parse.parse_qs(parsed.query)
                )
                self.send_response(status)
                for key, value in headers.items():
                    if key != "no-length":
                        self.send_header(key, value)
                if "no-length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A client that stops reading mid-body (a size limit) is normal here, not an error.
        self.httpd.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def respond(self, path: str, query: Query) -> Route:
        if path in self.handlers:
            return self.handlers[path](query)
        return self.routes.get(path, (404, {"Content-Type": "text/plain"}, b"not found"))

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
