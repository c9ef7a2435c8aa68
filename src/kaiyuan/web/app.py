"""Serving the web app: ``/`` (the page) and ``/app/BUILD/...`` (its modules, styles, fonts).

Every file is read once, at start-up, into memory: a request names a key of that table, never
a path on disk. Text is gzipped once too. Assets live under a build id (a digest of all of
them), so they are cached for a year and a new version is a new URL; the page itself is
revalidated with its ETag. The page and the assets carry a strict Content-Security-Policy: no
inline script, nothing from another origin (the app works offline).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

STATIC = Path(__file__).with_name("static")
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        # KaTeX sizes its glyphs with style attributes; no script runs from them.
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "media-src 'self' data: blob:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
TEXT = {".html", ".js", ".mjs", ".css", ".json", ".svg", ".md", ".txt"}
TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".woff2": "font/woff2"}
SECURITY = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes | None
    etag: str
    media_type: str

    @classmethod
    def of(cls, name: str, body: bytes) -> Asset:
        suffix = Path(name).suffix
        kind = TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
        if suffix in TEXT:
            kind += "; charset=utf-8"
        packed = gzip.compress(body, 9, mtime=0) if suffix in TEXT and len(body) > 512 else None
        return cls(body, packed, '"' + hashlib.sha256(body).hexdigest()[:20] + '"', kind)

    def response(self, request: Request, cache: str) -> Response:
        headers = {"etag": self.etag, "cache-control": cache, "vary": "accept-encoding"}
        headers.update(SECURITY)
        if request.headers.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        if self.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
            headers["content-encoding"] = "gzip"
            return Response(self.gzipped, media_type=self.media_type, headers=headers)
        return Response(self.body, media_type=self.media_type, headers=headers)


class Bundle:
    """The app's files, read once; ``build`` changes whenever any of them does."""

    def __init__(self, root: Path = STATIC) -> None:
        files = {
            path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*"))
            if path.is_file() and path.name != "index.html"
        }
        digest = hashlib.sha256()
        for name, body in files.items():
            digest.update(name.encode() + b"\0" + hashlib.sha256(body).digest())
        page = (root / "index.html").read_bytes()
        self.build = digest.hexdigest()[:12]
        self.page = Asset.of("index.html", page.replace(b"{{BUILD}}", self.build.encode()))
        self.assets = {name: Asset.of(name, body) for name, body in files.items()}


@functools.cache
def installed() -> Bundle:
    """The installed app's files, read once per process (every app made here shares them)."""
    return Bundle()


def router(bundle: Bundle | None = None) -> APIRouter:
    """The routes of the app (none of them in the OpenAPI schema)."""
    bundle = bundle or installed()
    routes = APIRouter(include_in_schema=False)

    @routes.api_route("/", methods=["GET", "HEAD"])
    async def page(request: Request) -> Response:
        return bundle.page.response(request, "no-cache")

    @routes.api_route("/app/{build}/{name:path}", methods=["GET", "HEAD"])
    async def asset(request: Request, build: str, name: str) -> Response:
        found = bundle.assets.get(name)
        if found is None:
            return Response(status_code=404, headers=SECURITY)
        # An asset of another build (a page loaded before an upgrade) is served, not cached.
        cache = "public, max-age=31536000, immutable" if build == bundle.build else "no-cache"
        return found.response(request, cache)

    return routes
