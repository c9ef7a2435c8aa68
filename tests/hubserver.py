"""A local stand-in for the Hugging Face Hub and ModelScope, for the real SDKs to talk to.

``HubServer(root)`` serves every folder ``root/<org>/<repo>/`` as a model repo, over plain HTTP
on a free 127.0.0.1 port (uvicorn in a background thread), in the wire formats that
``huggingface_hub`` 2.4 and ``modelscope`` 1.40.2 / ``modelscope_hub`` 0.5.1 use. Both hubs
serve the same repos. The revision is ``main`` (HF) or ``master`` (ModelScope); the commit id
is a sha1 over the repo's file list, so it changes when the files do.

    with HubServer(root) as hub:
        hf_hub_download("TheOrg/tiny-GGUF", "tiny-Q4_K_M.gguf", endpoint=hub.url, ...)
        ms_snapshot_download("TheOrg/tiny-GGUF", endpoint=hub.url, ...)

Knobs (attributes; may also be changed while running): ``corrupt`` (paths served with flipped
bytes while all metadata keeps the true sha256/size), ``cut_after`` ({path: n}: the next GET of
that file sends n body bytes then drops the connection, once), ``delay`` (seconds before every
answer), ``ms_linked_etag`` (send ``X-Linked-ETag: <sha256>`` on ModelScope LFS downloads, as
the ModelScope CDN does). Paths are ``"<org>/<repo>/<file>"`` or a bare repo-relative file path
(matches any repo). ``requests`` logs every request as ``Request(method, path, range,
authorization)``; ``path`` includes the query string.

Wire formats served
===================

Hugging Face (``huggingface_hub`` 2.4, httpx2 client):

- ``GET /api/models/{org}/{repo}`` and ``.../revision/{rev}``: ``HfApi.model_info`` /
  ``repo_info`` (``snapshot_download`` calls ``.../revision/main`` first). ``?blobs=true``
  (``files_metadata=True``) adds ``size``, ``blobId`` and, for ``*.gguf``/``*.safetensors``/
  ``*.bin``, ``lfs: {sha256, size, pointerSize}`` to each sibling. Also: ``sha`` (commit),
  ``cardData`` (README YAML front matter), ``tags`` (front-matter tags + ``license:<id>`` + file
  kinds), ``library_name``, ``pipeline_tag``, ``gguf`` (architecture, context_length,
  chat_template, total) for GGUF repos, ``config`` (architectures, model_type, auto_map,
  tokenizer_config.chat_template) and ``safetensors`` (parameter counts), ``usedStorage``.
- ``GET /api/models/{org}/{repo}/tree/{rev}[/{path}]?recursive=..``: ``list_repo_tree`` /
  ``list_repo_files`` / ``snapshot_download``; entries ``{type, oid, size, path, lfs:{oid,
  size, pointerSize}}``. One page (no ``Link`` header).
- ``POST /api/models/{org}/{repo}/paths-info/{rev}`` (form ``paths=..``): ``get_paths_info``.
- ``GET /api/models/{org}/{repo}/refs``: ``list_repo_refs``.
- ``HEAD|GET /{org}/{repo}/resolve/{rev}/{path}``: ``hf_hub_download``. Headers:
  ``X-Repo-Commit``, ``ETag`` (git blob sha1, or the sha256 for LFS files), ``X-Linked-Etag`` +
  ``X-Linked-Size`` for LFS files, ``Content-Length``, ``Accept-Ranges``; ``Range`` gives 206.
  No ``X-Xet-*`` headers or ``xet-auth`` links, so the SDK never tries Xet and downloads over
  plain HTTP (even with ``hf_xet`` installed). 404s carry ``X-Error-Code`` (``RepoNotFound``,
  ``RevisionNotFound``, ``EntryNotFound``) so the SDK raises its specific errors.

ModelScope (``modelscope.hub`` is a shim over ``modelscope_hub``; requests client):

- ``GET /api/v1/models/{org}/{repo}/repo/files?Revision=&Recursive=&Root=``: the file listing
  (``{"Code":200,"Data":{"Files":[{Name, Path, Type, Size, Sha256, IsLFS, Revision, ...}]}}``).
- ``GET /api/v1/models/{org}/{repo}/repo?Revision=&FilePath=``: file download (``Range``
  gives 206 + ``Content-Range``).
- ``GET /openapi/v1/models/{org}/{repo}``: ``HubApi.get_repo`` / ``get_model`` (``{"success":
  true, "data": {id, license, tags, ...}}``); ``GET /api/v1/models/{org}/{repo}`` the legacy
  info the SDK falls back to; ``GET /api/v1/models/{org}/{repo}/revisions``: branches/tags
  (``get_valid_revision_detail``, used by ``model_file_download`` when ``revision`` is None).
- ``GET /api/v1/repos/internalAccelerationInfo``: the Alibaba-cloud region probe every
  download makes first (answered with empty data, so nothing leaves 127.0.0.1).

Pointing the SDKs here (findings from reading the 2.4 / 1.40.2 sources)
======================================================================

huggingface_hub: pass ``endpoint=hub.url`` to ``hf_hub_download``, ``snapshot_download`` and
``HfApi(endpoint=...)``. No env var is needed and the endpoint argument works after import.
``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE``/``HF_HOME``, ``HF_HUB_DISABLE_XET``,
``HF_HUB_ETAG_TIMEOUT``, ``HF_HUB_DOWNLOAD_TIMEOUT`` are read ONCE at import
(``huggingface_hub.constants``), so setting them later has no effect; patch
``huggingface_hub.constants.HF_HUB_OFFLINE`` instead (``is_offline_mode()`` reads it per call).
Pass ``token=False`` so no stored token is read or sent, and ``cache_dir=`` so nothing touches
``~/.cache/huggingface``.

modelscope: pass ``endpoint=hub.url`` to ``modelscope.hub.snapshot_download.snapshot_download``,
``modelscope.hub.file_download.model_file_download`` (AND ``revision="master"``, see below) and
``modelscope.hub.api.HubApi(endpoint=...)`` / ``modelscope_hub.HubApi(endpoint=...)``. With an
explicit endpoint the SDK skips its modelscope.cn/modelscope.ai probing
(``resolve_endpoint_for_read``). The env var is ``MODELSCOPE_ENDPOINT`` (``MODELSCOPE_DOMAIN`` is
deprecated and gets https:// prepended); both, like ``MODELSCOPE_CACHE``/``MODELSCOPE_HOME``/
token, are read when the process-wide ``HubConfig`` is first built (``get_default_config()``,
lazily, then cached in ``modelscope_hub.config._default_config``), NOT at import; reset it with
``modelscope_hub.set_default_config(None)`` after changing them. Numeric tunables
(``MODELSCOPE_DOWNLOAD_MAX_RETRIES`` etc.) ARE read at import (``modelscope_hub.constants``).
Gotcha: ``modelscope.hub.file_download.model_file_download(..., revision=None)`` builds a bare
``HubApi()`` (default config endpoint, NOT the ``endpoint`` argument) to resolve the revision
and swallows errors: always pass ``revision="master"``. Even with ``local_dir`` the SDK writes
lock files under ``cache_dir`` (default ``~/.cache/modelscope/.lock``) and a session id under
``MODELSCOPE_HOME`` (``~/.modelscope/credentials/session``): pass ``cache_dir=`` and point
``MODELSCOPE_HOME`` somewhere private.

SDK behaviours that matter
==========================

Partial downloads / resume:
- huggingface_hub 2.4 downloads into a process-unique ``<blob or .cache/huggingface/download/
  ...>.<uuid>.incomplete`` and DELETES it when the call fails: there is no resume across calls.
  Within one call, ``http_get`` retries a dropped/timed-out body up to 5 times (1 s sleep each)
  with ``Range: bytes=<written>-``; it writes in ``constants.DOWNLOAD_CHUNK_SIZE`` (10 MB)
  blocks, so a cut in the first 10 MB restarts from byte 0 (no Range header). local_dir mode
  keeps metadata in ``<local_dir>/.cache/huggingface/download/<file>.metadata``.
- modelscope_hub writes ``<target>.incomplete`` next to the final file (``<local_dir>/<file>``
  or ``<cache>/models/<org>--<repo>/snapshots/<rev>/<file>``) and KEEPS it when a call fails on
  a transport error, so the next call resumes with ``Range: bytes=<size>-`` (a 206 must carry a
  matching ``Content-Range``). It deletes it on size/hash mismatch. Within a call it retries
  (urllib3 ``Retry(total=5, backoff_factor=1)``: waits 0, 2, 4, 8, 16 s).

Digest verification:
- huggingface_hub does NOT verify sha256 on download (only the byte count against
  Content-Length/X-Linked-Size); a corrupt body is returned as a success. Verify yourself against
  ``model_info(files_metadata=True).siblings[i].lfs.sha256`` (or git-sha1 ``blob_id`` for non-LFS
  files), or call ``HfApi.verify_repo_checksums(repo_id, local_dir=...)``.
- modelscope verifies sha256 in ``snapshot_download`` (the listing's ``Sha256`` is passed as
  ``expected_sha256``): a mismatch is retried 3 times (1 s, 2 s backoff) and then raises
  ``modelscope_hub.errors.FileDownloadError`` (``failed_files`` maps path ->
  ``FileIntegrityError``); the bad file is not left at the target. ``model_file_download`` does
  not pass a digest, but verifies when the response has ``X-Linked-ETag: <64 hex>`` (LFS files
  here, see ``ms_linked_etag``), raising ``FileIntegrityError``. It also checks sizes against the
  listing (``FileSizeMismatchError``).

Unreachable endpoint (connection refused), measured in tests/test_hubserver.py:
- ``HfApi.model_info``: ``httpx2.ConnectError`` at once (no retry).
- ``hf_hub_download``: one HEAD without retry, then a second HEAD series with
  ``http_backoff`` (5 retries, sleeps 1+2+4+8+8 = 23 s), then
  ``huggingface_hub.errors.LocalEntryNotFoundError`` (``__cause__`` is the ConnectError).
  No knob shortens it; call ``model_info`` first to fail fast.
- ``snapshot_download``: ``repo_info`` fails at once -> ``LocalEntryNotFoundError`` in < 1 s
  (it returns an existing, complete ``local_dir`` instead, with a warning).
- modelscope ``snapshot_download``: the listing is tried 4 times (sleeps 1+2+4 = 7 s;
  ``modelscope_hub._legacy_api.REPO_TREE_PAGE_MAX_ATTEMPTS``) then
  ``modelscope_hub.errors.NetworkError``.
- modelscope ``model_file_download``: 6 attempts (sleeps 0+2+4+8+16 = 30 s;
  ``modelscope_hub._download.DOWNLOAD_RETRY_TIMES``) then ``NetworkError``.
- ``modelscope.hub.api.HubApi(endpoint).get_model``: OpenAPI client, 5 attempts (sleeps about
  1+2+4+8 = 15 s; ``API_MAX_RETRIES``) then ``NetworkError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import parse_qs, quote, unquote

import uvicorn

LFS_SUFFIXES = (".gguf", ".safetensors", ".bin")
HF_REVISIONS = ("main",)
MS_REVISIONS = ("master", "main")
CREATED_AT = "2024-01-01T00:00:00.000Z"
_FLIP = bytes(255 - i for i in range(256))
_CHUNK = 64 * 1024

Scope = dict[str, Any]


class Request(NamedTuple):
    """One request the stand-in received."""

    method: str
    path: str  # URL-decoded path, plus "?<query>" when there is a query string
    range: str | None  # the Range header, if any
    authorization: str | None = None  # the Authorization header (a token the client sent)


@dataclass(frozen=True)
class RepoFile:
    """A file of a served repo, with the digests both hubs publish."""

    path: str  # repo-relative, "/"-separated
    size: int
    sha256: str
    blob_id: str  # git blob sha1 (of the LFS pointer for LFS files, as on the real Hub)
    lfs: bool
    pointer_size: int
    mtime: float


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob with this content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )


def read_front_matter(readme: Path) -> dict[str, Any]:
    """The YAML front matter of a model card (``---\\nlicense: mit\\n---``), or {}."""
    import yaml

    try:
        text = readme.read_text(encoding="utf-8")
    except OSError:
        return {}
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if not match:
        return {}
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


class _CutConnection(Exception):
    """Raised inside the app to make uvicorn drop the connection mid-body."""


class _DropCutTracebacks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _CutConnection))


class _Reply(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes = b""
    cut_at: int | None = None  # drop the connection after this many body bytes


def _json(status: int, data: Any, headers: Mapping[str, str] | None = None) -> _Reply:
    body = json.dumps(data).encode()
    return _Reply(status, {"content-type": "application/json", **(headers or {})}, body)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class HubServer:
    """The stand-in hub; a context manager that runs it on ``127.0.0.1:<free port>``.

    ``url`` is the base URL to pass as ``endpoint=`` to both SDKs.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        corrupt: Iterable[str] = (),
        cut_after: Mapping[str, int] | None = None,
        delay: float = 0.0,
        ms_linked_etag: bool = True,
        lfs_suffixes: Iterable[str] = LFS_SUFFIXES,
    ) -> None:
        self.root = Path(root)
        self.corrupt: set[str] = set(corrupt)
        self.cut_after: dict[str, int] = dict(cut_after or {})
        self.delay = delay
        self.ms_linked_etag = ms_linked_etag
        self.lfs_suffixes = tuple(lfs_suffixes)
        self.requests: list[Request] = []
        self.url = ""
        self.port = 0
        self._lock = threading.Lock()
        self._digests: dict[tuple[str, int, int], tuple[str, str]] = {}
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._log_filter = _DropCutTracebacks()

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> HubServer:
        logging.getLogger("uvicorn.error").addFilter(self._log_filter)
        config = uvicorn.Config(
            self,
            host="127.0.0.1",
            port=0,
            log_config=None,
            log_level="warning",
            lifespan="off",
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="hubserver", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("hub stand-in did not start")
            time.sleep(0.005)
        self.port = int(self._server.servers[0].sockets[0].getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        logging.getLogger("uvicorn.error").removeFilter(self._log_filter)

    # ---------------------------------------------------------------- helpers for tests

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def file_requests(self, path: str, method: str | None = "GET") -> list[Request]:
        """Logged requests that fetched repo file ``path`` (either hub), optionally by method."""
        found = []
        with self._lock:
            log = list(self.requests)
        for req in log:
            if method is not None and req.method != method:
                continue
            target, _, query = req.path.partition("?")
            if "/resolve/" in target:
                repo, _, rest = target.lstrip("/").partition("/resolve/")
                file = rest.partition("/")[2]
            elif target.startswith("/api/v1/models/") and target.endswith("/repo"):
                repo = target[len("/api/v1/models/") : -len("/repo")]
                file = parse_qs(query).get("FilePath", [""])[0]
            else:
                continue
            if path in (file, f"{repo}/{file}"):
                found.append(req)
        return found

    def repo_dir(self, repo_id: str) -> Path | None:
        parts = repo_id.split("/")
        if len(parts) != 2 or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            return None
        folder = self.root / parts[0] / parts[1]
        return folder if folder.is_dir() else None

    def repo_files(self, repo_id: str) -> list[RepoFile]:
        """Every file of the repo with its sizes and digests (what both hubs publish)."""
        folder = self.repo_dir(repo_id)
        if folder is None:
            raise KeyError(repo_id)
        files = []
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = file.relative_to(folder).as_posix()
            stat = file.stat()
            key = (str(file), stat.st_size, stat.st_mtime_ns)
            with self._lock:
                digests = self._digests.get(key)
            if digests is None:
                data = file.read_bytes()
                digests = (hashlib.sha256(data).hexdigest(), git_blob_sha1(data))
                with self._lock:
                    self._digests[key] = digests
            sha256, sha1 = digests
            lfs = rel.endswith(self.lfs_suffixes)
            pointer = lfs_pointer(sha256, stat.st_size)
            files.append(
                RepoFile(
                    path=rel,
                    size=stat.st_size,
                    sha256=sha256,
                    blob_id=git_blob_sha1(pointer) if lfs else sha1,
                    lfs=lfs,
                    pointer_size=len(pointer),
                    mtime=stat.st_mtime,
                )
            )
        return files

    def commit(self, repo_id: str) -> str:
        """The repo's current commit id (a sha1 over paths and blob ids)."""
        listing = "\n".join(f"{f.path} {f.blob_id}" for f in self.repo_files(repo_id))
        return hashlib.sha1(listing.encode(), usedforsecurity=False).hexdigest()

    def _is(self, knob: Iterable[str], repo_id: str, path: str) -> bool:
        return f"{repo_id}/{path}" in knob or path in knob

    def _take_cut(self, repo_id: str, path: str) -> int | None:
        with self._lock:
            for key in (f"{repo_id}/{path}", path):
                if key in self.cut_after:
                    return self.cut_after.pop(key)
        return None

    # ---------------------------------------------------------------- ASGI

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        method = scope["method"]
        raw_path = scope.get("raw_path") or scope["path"].encode()
        raw = raw_path.decode("latin-1").partition("?")[0]
        query = scope.get("query_string", b"").decode("latin-1")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        logged = unquote(raw) + (f"?{query}" if query else "")
        with self._lock:
            self.requests.append(
                Request(method, logged, headers.get("range"), headers.get("authorization"))
            )
        body = b""
        if method == "POST":
            more = True
            while more:
                message = await receive()
                body += message.get("body", b"")
                more = message.get("more_body", False)
        if self.delay:
            await asyncio.sleep(self.delay)
        try:
            reply = self._route(method, raw, parse_qs(query), headers, body)
        except Exception as exc:
            reply = _json(500, {"error": f"hub stand-in error: {exc!r}"})
        await self._send(send, method, reply)

    async def _send(self, send: Any, method: str, reply: _Reply) -> None:
        headers = dict(reply.headers)
        headers.setdefault("content-length", str(len(reply.body)))
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
            }
        )
        data = b"" if method == "HEAD" else reply.body
        if reply.cut_at is not None and method != "HEAD":
            data = data[: reply.cut_at]
        for start in range(0, len(data), _CHUNK):
            await send(
                {
                    "type": "http.response.body",
                    "body": data[start : start + _CHUNK],
                    "more_body": True,
                }
            )
        if reply.cut_at is not None and method != "HEAD":
            await asyncio.sleep(0.01)  # let the bytes leave before the connection drops
            raise _CutConnection
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    # ---------------------------------------------------------------- routing

    _HF_INFO = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?$")
    _HF_TREE = re.compile(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?$")
    _HF_PATHS = re.compile(r"^/api/models/([^/]+/[^/]+)/paths-info/([^/]+)$")
    _HF_REFS = re.compile(r"^/api/models/([^/]+/[^/]+)/refs$")
    _HF_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
    _MS_INFO = re.compile(r"^/api/v1/models/([^/]+/[^/]+)$")
    _MS_OPENAPI = re.compile(r"^/openapi/v1/models/([^/]+/[^/]+)$")
    _MS_REVISIONS = re.compile(r"^/api/v1/models/([^/]+/[^/]+)/revisions$")
    _MS_FILES = re.compile(r"^/api/v1/models/([^/]+/[^/]+)/repo/files$")
    _MS_DOWNLOAD = re.compile(r"^/api/v1/models/([^/]+/[^/]+)/repo$")

    def _route(
        self,
        method: str,
        raw: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
    ) -> _Reply:
        def q(name: str, default: str | None = None) -> str | None:
            return query.get(name, [default])[0]

        get = method in ("GET", "HEAD")
        if get and (m := self._HF_RESOLVE.match(raw)):
            reply = self._hf_resolve(unquote(m[1]), unquote(m[2]), unquote(m[3]), headers)
            return self._maybe_cut(method, unquote(m[1]), unquote(m[3]), reply)
        if get and (m := self._HF_INFO.match(raw)):
            blobs = (q("blobs") or "").lower() in ("true", "1")
            return self._hf_info(unquote(m[1]), unquote(m[2] or "main"), blobs)
        if get and (m := self._HF_TREE.match(raw)):
            recursive = (q("recursive") or "").lower() in ("true", "1")
            return self._hf_tree(unquote(m[1]), unquote(m[2]), unquote(m[3] or ""), recursive)
        if method == "POST" and (m := self._HF_PATHS.match(raw)):
            form = parse_qs(body.decode())
            return self._hf_paths_info(unquote(m[1]), unquote(m[2]), form.get("paths", []))
        if get and (m := self._HF_REFS.match(raw)):
            return self._hf_refs(unquote(m[1]))
        if get and raw == "/api/v1/repos/internalAccelerationInfo":
            return _json(200, {"Code": 200, "Success": True, "Data": {}})
        if get and (m := self._MS_FILES.match(raw)):
            recursive = (q("Recursive") or "true").lower() in ("true", "1")
            return self._ms_files(unquote(m[1]), q("Revision") or "master", q("Root"), recursive)
        if get and (m := self._MS_DOWNLOAD.match(raw)):
            path = (q("FilePath") or "").strip("/")
            reply = self._ms_download(unquote(m[1]), q("Revision") or "master", path, headers)
            return self._maybe_cut(method, unquote(m[1]), path, reply)
        if get and (m := self._MS_REVISIONS.match(raw)):
            return self._ms_revisions(unquote(m[1]))
        if get and (m := self._MS_OPENAPI.match(raw)):
            return self._ms_info(unquote(m[1]), openapi=True)
        if get and (m := self._MS_INFO.match(raw)):
            return self._ms_info(unquote(m[1]), openapi=False)
        return _json(404, {"error": f"no route for {method} {raw}"})

    # ---------------------------------------------------------------- shared pieces

    def _file_reply(
        self,
        repo_id: str,
        file: RepoFile,
        headers: dict[str, str],
        extra: dict[str, str],
    ) -> _Reply:
        folder = self.repo_dir(repo_id)
        assert folder is not None
        data = (folder / file.path).read_bytes()
        if self._is(self.corrupt, repo_id, file.path):
            data = data.translate(_FLIP)
        out = {
            "content-type": "application/octet-stream",
            "accept-ranges": "bytes",
            "content-disposition": f'attachment; filename="{Path(file.path).name}"',
            **extra,
        }
        status = 200
        rng = headers.get("range")
        if rng:
            match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", rng)
            if match and (match[1] or match[2]):
                if match[1]:
                    start = int(match[1])
                    end = min(int(match[2]), file.size - 1) if match[2] else file.size - 1
                else:
                    start, end = max(0, file.size - int(match[2])), file.size - 1
                if start >= file.size or start > end:
                    out["content-range"] = f"bytes */{file.size}"
                    return _Reply(416, out)
                data = data[start : end + 1]
                out["content-range"] = f"bytes {start}-{end}/{file.size}"
                status = 206
        return _Reply(status, out, data)

    def _maybe_cut(self, method: str, repo_id: str, path: str, reply: _Reply) -> _Reply:
        """Arm a pending ``cut_after`` on a successful GET of that file (consumes it)."""
        if method == "GET" and reply.status in (200, 206):
            cut = self._take_cut(repo_id, path)
            if cut is not None:
                return reply._replace(cut_at=cut)
        return reply

    def _find(self, repo_id: str, path: str) -> RepoFile | None:
        return next((f for f in self.repo_files(repo_id) if f.path == path), None)

    # ---------------------------------------------------------------- Hugging Face

    def _hf_error(self, code: str, message: str, commit: str | None = None) -> _Reply:
        extra = {"x-error-code": code, "x-error-message": message}
        if commit:
            extra["x-repo-commit"] = commit
        return _json(404, {"error": message}, extra)

    def _hf_check(self, repo_id: str, revision: str) -> _Reply | str:
        """The commit for (repo, revision), or the HF error reply."""
        if self.repo_dir(repo_id) is None:
            return self._hf_error("RepoNotFound", f"Repository Not Found for url: {repo_id}.")
        commit = self.commit(repo_id)
        if revision not in (*HF_REVISIONS, commit):
            return self._hf_error("RevisionNotFound", f"Invalid rev id: {revision}")
        return commit

    def _hf_resolve(
        self, repo_id: str, revision: str, path: str, headers: dict[str, str]
    ) -> _Reply:
        commit = self._hf_check(repo_id, revision)
        if isinstance(commit, _Reply):
            return commit
        file = self._find(repo_id, path)
        if file is None:
            return self._hf_error("EntryNotFound", f"{path} does not exist on {revision}", commit)
        extra = {"x-repo-commit": commit}
        if file.lfs:
            extra |= {
                "etag": f'"{file.sha256}"',
                "x-linked-etag": f'"{file.sha256}"',
                "x-linked-size": str(file.size),
            }
        else:
            extra["etag"] = f'"{file.blob_id}"'
        return self._file_reply(repo_id, file, headers, extra)

    def _hf_entry(self, f: RepoFile) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "oid": f.blob_id, "size": f.size, "path": f.path}
        if f.lfs:
            entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
        return entry

    def _hf_dirs(self, files: list[RepoFile]) -> dict[str, str]:
        """Directory path -> a stable tree oid."""
        dirs: dict[str, list[str]] = {}
        for f in files:
            parts = f.path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.setdefault("/".join(parts[:i]), []).append(f.blob_id)
        return {
            d: hashlib.sha1(" ".join(ids).encode(), usedforsecurity=False).hexdigest()
            for d, ids in dirs.items()
        }

    def _hf_tree(self, repo_id: str, revision: str, path: str, recursive: bool) -> _Reply:
        commit = self._hf_check(repo_id, revision)
        if isinstance(commit, _Reply):
            return commit
        files = self.repo_files(repo_id)
        dirs = self._hf_dirs(files)
        path = path.strip("/")
        if path and path not in dirs:
            return self._hf_error("EntryNotFound", f"{path} does not exist on {revision}", commit)
        prefix = f"{path}/" if path else ""

        def wanted(p: str) -> bool:
            return p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :])

        entries = [
            {"type": "directory", "oid": oid, "size": 0, "path": d}
            for d, oid in sorted(dirs.items())
            if wanted(d)
        ]
        entries += [self._hf_entry(f) for f in files if wanted(f.path)]
        return _json(200, entries)

    def _hf_paths_info(self, repo_id: str, revision: str, paths: list[str]) -> _Reply:
        commit = self._hf_check(repo_id, revision)
        if isinstance(commit, _Reply):
            return commit
        files = {f.path: f for f in self.repo_files(repo_id)}
        dirs = self._hf_dirs(list(files.values()))
        out: list[dict[str, Any]] = []
        for p in paths:
            p = p.strip("/")
            if p in files:
                out.append(self._hf_entry(files[p]))
            elif p in dirs:
                out.append({"type": "directory", "oid": dirs[p], "size": 0, "path": p})
        return _json(200, out)

    def _hf_refs(self, repo_id: str) -> _Reply:
        commit = self._hf_check(repo_id, "main")
        if isinstance(commit, _Reply):
            return commit
        branch = {"name": "main", "ref": "refs/heads/main", "targetCommit": commit}
        return _json(200, {"branches": [branch], "converts": [], "tags": []})

    def _hf_info(self, repo_id: str, revision: str, blobs: bool) -> _Reply:
        commit = self._hf_check(repo_id, revision)
        if isinstance(commit, _Reply):
            return commit
        folder = self.repo_dir(repo_id)
        assert folder is not None
        files = self.repo_files(repo_id)
        card = read_front_matter(folder / "README.md")
        names = {f.path for f in files}
        tags = [str(t) for t in card.get("tags") or []]
        library = card.get("library_name")
        if any(n.endswith(".gguf") for n in names):
            tags.append("gguf")
            library = library or "gguf"
        if any(n.endswith(".safetensors") for n in names):
            tags.append("safetensors")
        if "model_index.json" in names:
            tags.append("diffusers")
            library = library or "diffusers"
        elif "config.json" in names:
            tags.append("transformers")
            library = library or "transformers"
        if card.get("license"):
            tags.append(f"license:{card['license']}")
        tags.append("region:us")
        siblings = []
        for f in files:
            sib: dict[str, Any] = {"rfilename": f.path}
            if blobs:
                sib |= {"size": f.size, "blobId": f.blob_id}
                if f.lfs:
                    sib["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
            siblings.append(sib)
        org = repo_id.split("/")[0]
        info: dict[str, Any] = {
            "_id": hashlib.md5(repo_id.encode(), usedforsecurity=False).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": org,
            "sha": commit,
            "lastModified": _iso(max((f.mtime for f in files), default=0.0)),
            "createdAt": CREATED_AT,
            "private": False,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": list(dict.fromkeys(tags)),
            "pipeline_tag": card.get("pipeline_tag"),
            "library_name": library,
            "siblings": siblings,
            "spaces": [],
            "usedStorage": sum(f.size for f in files),
        }
        if card:
            info["cardData"] = card
        config = self._hf_config(folder)
        if config:
            info["config"] = config
        gguf_info = self._gguf_summary(folder, files)
        if gguf_info:
            info["gguf"] = gguf_info
        st = self._safetensors_summary(folder, files)
        if st:
            info["safetensors"] = st
        return _json(200, info)

    @staticmethod
    def _hf_config(folder: Path) -> dict[str, Any]:
        config: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            config = {k: raw[k] for k in ("architectures", "model_type", "auto_map") if k in raw}
        with contextlib.suppress(OSError, ValueError):
            tok = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
            keep = ("chat_template", "bos_token", "eos_token", "pad_token", "unk_token")
            config["tokenizer_config"] = {k: tok[k] for k in keep if k in tok}
        return config

    @staticmethod
    def _gguf_summary(folder: Path, files: list[RepoFile]) -> dict[str, Any] | None:
        ggufs = [f for f in files if f.path.endswith(".gguf")]
        if not ggufs:
            return None
        try:
            from gguf import GGUFReader

            reader = GGUFReader(str(folder / ggufs[0].path))
            fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tok")}
            template = reader.fields.get("tokenizer.chat_template")
            arch = str(fields.get("general.architecture", ""))
            return {
                "total": int(sum(int(t.n_elements) for t in reader.tensors)),
                "architecture": arch,
                "context_length": fields.get(f"{arch}.context_length"),
                "chat_template": template.contents() if template is not None else None,
            }
        except Exception:
            return None

    @staticmethod
    def _safetensors_summary(folder: Path, files: list[RepoFile]) -> dict[str, Any] | None:
        counts: dict[str, int] = {}
        for f in files:
            if not f.path.endswith(".safetensors"):
                continue
            try:
                with open(folder / f.path, "rb") as fh:
                    length = int.from_bytes(fh.read(8), "little")
                    header = json.loads(fh.read(length))
            except (OSError, ValueError):
                continue
            for name, meta in header.items():
                if name == "__metadata__":
                    continue
                n = 1
                for dim in meta["shape"]:
                    n *= int(dim)
                counts[meta["dtype"]] = counts.get(meta["dtype"], 0) + n
        if not counts:
            return None
        return {"parameters": counts, "total": sum(counts.values())}

    # ---------------------------------------------------------------- ModelScope

    @staticmethod
    def _ms_error(status: int, message: str) -> _Reply:
        return _json(
            status,
            {"Code": status, "Success": False, "Message": message, "RequestId": "stand-in"},
        )

    def _ms_check(self, repo_id: str, revision: str) -> _Reply | str:
        if self.repo_dir(repo_id) is None:
            return self._ms_error(404, f"model {repo_id} not found")
        commit = self.commit(repo_id)
        if revision not in (*MS_REVISIONS, commit):
            return self._ms_error(404, f"revision {revision} not found")
        return commit

    def _ms_files(self, repo_id: str, revision: str, root: str | None, recursive: bool) -> _Reply:
        commit = self._ms_check(repo_id, revision)
        if isinstance(commit, _Reply):
            return commit
        files = self.repo_files(repo_id)
        prefix = f"{root.strip('/')}/" if root and root.strip("/") else ""
        org = repo_id.split("/")[0]

        def wanted(p: str) -> bool:
            return p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :])

        entries: list[dict[str, Any]] = [
            {"Name": d.rsplit("/", 1)[-1], "Path": d, "Type": "tree", "Size": 0, "Sha256": ""}
            for d in sorted(self._hf_dirs(files))
            if wanted(d)
        ]
        for f in files:
            if not wanted(f.path):
                continue
            entries.append(
                {
                    "Id": f.blob_id,
                    "Name": f.path.rsplit("/", 1)[-1],
                    "Path": f.path,
                    "Type": "blob",
                    "Mode": "33188",
                    "Size": f.size,
                    "Sha256": f.sha256,
                    "IsLFS": f.lfs,
                    "Revision": commit,
                    "CommitId": commit,
                    "CommitMessage": "upload",
                    "CommitterName": org,
                    "CommittedDate": int(f.mtime),
                    "InCheck": False,
                }
            )
        return _json(
            200,
            {
                "Code": 200,
                "Success": True,
                "Message": "success",
                "RequestId": "stand-in",
                "Data": {"Files": entries, "LatestCommitter": {"CommitterName": org}},
            },
        )

    def _ms_download(
        self, repo_id: str, revision: str, path: str, headers: dict[str, str]
    ) -> _Reply:
        commit = self._ms_check(repo_id, revision)
        if isinstance(commit, _Reply):
            return commit
        file = self._find(repo_id, path.strip("/"))
        if file is None:
            return self._ms_error(404, f"file {path} not found in {repo_id}@{revision}")
        extra = {"x-request-id": "stand-in", "etag": f'"{file.blob_id}"'}
        if file.lfs and self.ms_linked_etag:
            extra["x-linked-etag"] = f'"{file.sha256}"'
        return self._file_reply(repo_id, file, headers, extra)

    def _ms_revisions(self, repo_id: str) -> _Reply:
        commit = self._ms_check(repo_id, "master")
        if isinstance(commit, _Reply):
            return commit
        created = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())
        branches = [{"Revision": "master", "CommitId": commit, "CreatedAt": created}]
        return _json(
            200,
            {
                "Code": 200,
                "Success": True,
                "Data": {"RevisionMap": {"Branches": branches, "Tags": []}},
            },
        )

    def _ms_info(self, repo_id: str, *, openapi: bool) -> _Reply:
        folder = self.repo_dir(repo_id)
        if folder is None:
            if openapi:
                body = {"success": False, "code": "NotFound", "message": "model not found"}
                return _json(404, body)
            return self._ms_error(404, f"model {repo_id} not found")
        card = read_front_matter(folder / "README.md")
        files = self.repo_files(repo_id)
        org, name = repo_id.split("/")
        tags = [str(t) for t in card.get("tags") or []]
        license_id = card.get("license")
        size = sum(f.size for f in files)
        modified = _iso(max((f.mtime for f in files), default=0.0))
        if openapi:
            data: dict[str, Any] = {
                "id": repo_id,
                "owner": org,
                "name": name,
                "display_name": name,
                "description": "",
                "license": license_id,
                "tags": tags,
                "tasks": [card["pipeline_tag"]] if card.get("pipeline_tag") else [],
                "downloads": 0,
                "likes": 0,
                "created_at": CREATED_AT,
                "last_modified": modified,
                "private": False,
                "gated": False,
                "file_size": size,
            }
            return _json(200, {"success": True, "request_id": "stand-in", "data": data})
        data = {
            "Id": int(hashlib.sha1(repo_id.encode(), usedforsecurity=False).hexdigest()[:8], 16),
            "Name": name,
            "Path": org,
            "ChineseName": name,
            "Description": "",
            "License": license_id,
            "Tags": tags,
            "Downloads": 0,
            "Likes": 0,
            "Visibility": 5,
            "CreatedTime": 1704067200,
            "LastUpdatedTime": int(max((f.mtime for f in files), default=0.0)),
            "Revision": self.commit(repo_id),
            "StorageSize": size,
        }
        return _json(200, {"Code": 200, "Success": True, "Message": "success", "Data": data})


def hf_file_url(base: str, repo_id: str, path: str, revision: str = "main") -> str:
    """The ``/resolve`` URL of a file on the stand-in (what ``hf_hub_url`` builds)."""
    return f"{base}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"
