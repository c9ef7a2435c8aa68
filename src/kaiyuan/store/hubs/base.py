"""The hub interface, and a resumable HTTP download shared by hubs that need one."""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from kaiyuan.errors import KaiyuanError

Progress = Callable[[int], None]  # called with the bytes of the file on disk so far
IMPORT_HINT = "to add a model you already have, use `kaiyuan import PATH --name ID`"


class HubUnreachable(KaiyuanError):
    status = 503
    code = "hub_unreachable"


class DigestMismatch(KaiyuanError):
    status = 502
    code = "digest_mismatch"


@dataclass(slots=True, frozen=True)
class HubFile:
    path: str
    size: int
    sha256: str | None = None  # what the hub says the content hashes to (LFS / ModelScope)
    blob_sha1: str | None = None  # git blob id, for small files that have no sha256


@dataclass(slots=True, frozen=True)
class RepoInfo:
    repo: str
    revision: str
    files: tuple[HubFile, ...]
    licence: str | None = None


class Hub(abc.ABC):
    scheme: str
    name: str
    endpoint: str

    @abc.abstractmethod
    def info(self, repo: str) -> RepoInfo:
        """Files (sizes, digests), revision and licence; ModelNotFound / HubUnreachable."""

    @abc.abstractmethod
    def download(
        self, repo: str, revision: str, file: HubFile, folder: Path, progress: Progress
    ) -> Path:
        """Fetch ``file`` to ``folder/file.path``, resuming what an earlier call left."""

    def unreachable(self, cause: BaseException | None = None) -> HubUnreachable:
        why = f" ({describe(cause)})" if cause is not None else ""
        return HubUnreachable(f"cannot reach {self.name} at {self.endpoint}{why}; {IMPORT_HINT}")


def describe(cause: BaseException) -> str:
    """One short phrase for why a hub could not be reached: the error's class and first line."""
    response = getattr(cause, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int):
        return f"it answered HTTP {status}"
    text = str(cause).strip()
    first = text.splitlines()[0][:120] if text else ""
    return f"offline? {type(cause).__name__}{': ' + first if first else ''}"


def resumable_get(
    url: str,
    target: Path,
    *,
    size: int,
    headers: Mapping[str, str],
    timeout: float,
    progress: Progress,
    attempts: int = 3,
) -> Path:
    """GET ``url`` into ``target`` via ``target.part``, continuing a partial file with Range.

    The partial file survives failures and Ctrl-C, so the next call resumes where this one
    stopped. Raises OSError-derived errors for the caller to map.
    """
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(attempts):
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            part.unlink()
            have = 0
        if have == size and size > 0:
            break
        request_headers = dict(headers)
        if have:
            request_headers["Range"] = f"bytes={have}-"
        try:
            with (
                httpx.Client(follow_redirects=True, timeout=timeout) as client,
                client.stream("GET", url, headers=request_headers) as response,
            ):
                if response.status_code == 416 and have:
                    part.unlink()  # the server disagrees about what we have: start again
                    continue
                response.raise_for_status()
                resumed = response.status_code == 206
                with part.open("ab" if resumed else "wb") as out:
                    written = have if resumed else 0
                    # As received: bytes that arrived before a drop are kept for the resume.
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                        written += len(chunk)
                        progress(written)
            if part.stat().st_size >= size:
                break
        except httpx.TransportError:
            if attempt == attempts - 1:
                raise
    os.replace(part, target)
    progress(target.stat().st_size)
    return target
