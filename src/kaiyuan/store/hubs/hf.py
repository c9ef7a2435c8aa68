"""Hugging Face through ``huggingface_hub``.

Metadata (files, sizes, LFS sha256, licence, commit), URLs and headers come from the SDK. The
bytes are streamed by :func:`resumable_get`: huggingface_hub 2.x deletes its partial file when
a download fails, so it cannot resume after an interruption, which a multi-GB pull must.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from kaiyuan.errors import ModelNotFound
from kaiyuan.store.hubs.base import Hub, HubFile, Progress, RepoInfo, resumable_get


class HuggingFace(Hub):
    scheme = "hf"
    name = "Hugging Face"

    def __init__(self, endpoint: str, timeout: float, token: str | None = None) -> None:
        from huggingface_hub import constants

        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout
        # With telemetry on, the SDK's user agent fetches huggingface.co/api/agent-harnesses
        # (its own endpoint, not this one) once a day: a request nobody asked for, and a 3 s
        # stall where huggingface.co is blocked and a mirror is in use.
        constants.HF_HUB_DISABLE_TELEMETRY = True
        # The SDK's own token lookup (env, ~/.cache/huggingface) stays off: kaiyuan's settings
        # say which token, if any, goes to the hub.
        self._token: str | bool = token or False

    def __repr__(self) -> str:  # never the token
        return f"HuggingFace({self.endpoint!r})"

    def info(self, repo: str) -> RepoInfo:
        import httpx2
        from huggingface_hub import HfApi
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            RepositoryNotFoundError,
        )

        try:
            info = HfApi(endpoint=self.endpoint, token=self._token).model_info(
                repo, files_metadata=True, timeout=self.timeout
            )
        except GatedRepoError:
            raise ModelNotFound(
                f"'{repo}' on Hugging Face is gated: accept its licence on the website, then "
                "set HF_TOKEN to an access token of that account (or download it there and "
                "use `kaiyuan import`)",
                param="model",
            ) from None
        except RepositoryNotFoundError:
            raise ModelNotFound(
                f"repository '{repo}' not found on Hugging Face", param="model"
            ) from None
        except (httpx2.TransportError, httpx.TransportError, OSError) as exc:
            raise self.unreachable(exc) from None
        except HfHubHTTPError as exc:
            if exc.response is not None and exc.response.status_code >= 500:
                raise self.unreachable(exc) from None
            raise
        files = tuple(
            HubFile(
                path=s.rfilename,
                size=int(s.size or (s.lfs.size if s.lfs else 0) or 0),
                sha256=s.lfs.sha256 if s.lfs else None,
                blob_sha1=s.blob_id,
            )
            for s in info.siblings or []
        )
        licence = None
        card = info.card_data
        if card is not None and getattr(card, "license", None):
            licence = str(card.license)
        else:
            tags = [t for t in info.tags or [] if t.startswith("license:")]
            licence = tags[0].removeprefix("license:") if tags else None
        return RepoInfo(repo=repo, revision=str(info.sha or "main"), files=files, licence=licence)

    def download(
        self, repo: str, revision: str, file: HubFile, folder: Path, progress: Progress
    ) -> Path:
        import httpx2
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers

        url = hf_hub_url(repo, file.path, revision=revision, endpoint=self.endpoint)
        headers = build_hf_headers(token=self._token)
        # Compressed transfer would make Range offsets meaningless.
        headers["Accept-Encoding"] = "identity"
        try:
            return resumable_get(
                url,
                folder / file.path,
                size=file.size,
                headers=headers,
                timeout=self.timeout,
                progress=progress,
            )
        except (httpx2.TransportError, httpx.TransportError) as exc:
            raise self.unreachable(exc) from None
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 404:
                raise ModelNotFound(
                    f"'{file.path}' is missing from '{repo}'", param="model"
                ) from None
            raise self.unreachable(exc) from None
