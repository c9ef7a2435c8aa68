"""What kaiyuan knows about every model: format, shape, provenance and integrity."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

Format = Literal["gguf", "safetensors", "diffusers"]
CAPABILITIES = ("chat", "completion", "tools", "vision", "reasoning", "embedding", "image", "video")
FORMAT_BACKENDS: dict[str, str] = {
    "gguf": "llamacpp",
    "safetensors": "transformers",
    "diffusers": "diffusers",
}
EMBEDDING_FORMAT_BACKENDS: dict[str, str] = {
    "gguf": "llamacpp_embedding",
    "safetensors": "sentence_transformers",
}


@dataclass(slots=True)
class ModelRecord:
    id: str
    format: Format
    architecture: str | None = None
    parameters: int | None = None
    quantisation: str | None = None
    context_length: int | None = None
    size_bytes: int = 0
    capabilities: list[str] = field(default_factory=list)
    publisher: str | None = None
    origin: str | None = None
    licence: str | None = None
    source: str = ""
    sha256: str = ""
    added: str = ""
    # Where the weights are: the GGUF file, or the model folder.
    path: str = ""
    # Per-file sha256 for folders (the record's sha256 is then the digest of this manifest).
    files: dict[str, str] = field(default_factory=dict)
    # Estimated memory to serve it (weights + a full-context KV cache), for the pool's budget.
    memory_bytes: int = 0
    trust_remote_code: bool = False

    @property
    def backend(self) -> str:
        if self.capabilities == ["embedding"] and self.format in EMBEDDING_FORMAT_BACKENDS:
            return EMBEDDING_FORMAT_BACKENDS[self.format]
        return FORMAT_BACKENDS[self.format]

    def public(self) -> dict[str, Any]:
        """The fields users see (CLI --json, /v1/models), without local paths."""
        data = asdict(self)
        for private in ("path", "files", "memory_bytes", "trust_remote_code"):
            data.pop(private)
        return data

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelRecord:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def load(cls, path: Path) -> ModelRecord:
        return cls.from_json(path.read_text())
