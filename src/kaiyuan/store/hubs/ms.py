"""ModelScope through the ``modelscope`` SDK.

The SDK keeps ``<file>.incomplete`` after a failure and resumes it with Range on the next call,
and checks sizes and sha256; kaiyuan still re-checks the digest after each file. Progress is
read from the size of the partial file while the SDK downloads.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from kaiyuan.errors import ModelNotFound
from kaiyuan.store.hubs.base import DigestMismatch, Hub, HubFile, Progress, RepoInfo

REVISION = "master"


class ModelScope(Hub):
    scheme = "ms"
    name = "ModelScope"

    def __init__(self, endpoint: str, timeout: float, home: Path) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout
        self.cache = home / "hub-cache" / "modelscope"
        # The SDK writes a session id and lock files under these; keep them in kaiyuan's home.
        os.environ.setdefault("MODELSCOPE_HOME", str(self.cache / "home"))
        os.environ.setdefault("MODELSCOPE_CACHE", str(self.cache / "cache"))
        os.environ.setdefault("TQDM_DISABLE", "1")  # kaiyuan draws its own progress bars
        import modelscope_hub  # noqa: F401  (creates the SDK's loggers)

        # Its loggers set their own levels; its retries end up as one readable error here.
        for name in list(logging.root.manager.loggerDict):
            if name.startswith("modelscope"):
                logging.getLogger(name).setLevel(logging.ERROR)

    def info(self, repo: str) -> RepoInfo:
        import modelscope_hub
        from modelscope_hub.errors import NetworkError, NotExistError, NotFoundError

        try:
            api = modelscope_hub.HubApi(endpoint=self.endpoint)
            raw = api.legacy.list_repo_files(repo, "model", revision=REVISION)
            licence = api.get_repo(repo, "model").license
        except (NotExistError, NotFoundError):
            raise ModelNotFound(
                f"repository '{repo}' not found on ModelScope", param="model"
            ) from None
        except (NetworkError, ConnectionError, OSError) as exc:
            raise self.unreachable(exc) from None
        files = tuple(
            HubFile(
                path=str(e["Path"]), size=int(e.get("Size") or 0), sha256=e.get("Sha256") or None
            )
            for e in raw
            if e.get("Type", "blob") != "tree"
        )
        revision = next((str(e["Revision"]) for e in raw if e.get("Revision")), REVISION)
        return RepoInfo(repo=repo, revision=revision, files=files, licence=licence or None)

    def download(
        self, repo: str, revision: str, file: HubFile, folder: Path, progress: Progress
    ) -> Path:
        import requests
        from modelscope.hub.file_download import model_file_download
        from modelscope_hub.errors import (
            FileDownloadError,
            FileIntegrityError,
            FileSizeMismatchError,
            HubError,
            NetworkError,
        )

        target = folder / file.path
        partial = target.with_name(target.name + ".incomplete")
        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.25):
                if partial.exists():
                    progress(partial.stat().st_size)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            path = model_file_download(
                repo,
                file.path,
                revision=REVISION,
                local_dir=str(folder),
                cache_dir=str(self.cache / "cache"),
                endpoint=self.endpoint,
            )
        except (FileIntegrityError, FileSizeMismatchError, FileDownloadError):
            raise DigestMismatch(
                f"'{file.path}' from '{repo}' failed ModelScope's integrity check; the bad "
                "download was discarded, run the command again"
            ) from None
        except (NetworkError, ConnectionError, requests.ConnectionError) as exc:
            raise self.unreachable(exc) from None
        except (requests.HTTPError, HubError):
            raise ModelNotFound(
                f"'{file.path}' could not be fetched from '{repo}' on ModelScope", param="model"
            ) from None
        finally:
            done.set()
            watcher.join()
        result = Path(path)
        progress(result.stat().st_size)
        return result
