"""Validates model files and reads what they say about themselves.

Nothing here executes model code: GGUF headers are parsed by the ``gguf`` package (pure
Python, bounds-checked against the file size), safetensors by their JSON header, and folders
that need pickle weights or custom code are refused unless the user opts in (T19).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kaiyuan.errors import InvalidRequest
from kaiyuan.store.records import Format

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_MAX_HEADER = 100 * 1024 * 1024
_QUANT = re.compile(
    r"(?<![A-Za-z0-9])(IQ\d_[A-Z0-9]+|Q\d_K_[SML]|Q\d_K|Q\d_\d|Q\d|BF16|F16|F32)(?![A-Za-z0-9])",
    re.IGNORECASE,
)


class InvalidModel(InvalidRequest):
    """The files are not a model kaiyuan will accept (corrupt, unsafe or unknown)."""

    code = "invalid_model"


@dataclass(slots=True)
class Inspection:
    format: Format
    architecture: str | None = None
    parameters: int | None = None
    quantisation: str | None = None
    context_length: int | None = None
    capabilities: list[str] = field(default_factory=list)
    licence: str | None = None
    organisation: str | None = None
    memory_bytes: int = 0
    custom_code: bool = False


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def manifest_digest(files: dict[str, str]) -> str:
    """One digest for a folder: sha256 over its sorted 'path sha256' lines."""
    lines = "".join(f"{name} {digest}\n" for name, digest in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def quant_from_name(name: str) -> str | None:
    match = _QUANT.search(Path(name).name)
    return match.group(1).upper() if match else None


def detect_format(path: Path) -> Format:
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return "gguf"
        raise InvalidModel(f"'{path.name}' is not a GGUF file; import a .gguf file or a folder")
    if (path / "model_index.json").is_file():
        return "diffusers"
    if (path / "config.json").is_file():
        return "safetensors"
    if path.is_dir() and any(p.suffix.lower() == ".gguf" for p in path.iterdir()):
        return "gguf"
    raise InvalidModel(
        f"'{path.name}' is not a model: expected a .gguf file, a Hugging Face model folder "
        "(config.json) or a diffusers pipeline folder (model_index.json)"
    )


def inspect(
    path: Path, *, allow_pickle: bool = False, trust_remote_code: bool = False
) -> Inspection:
    fmt = detect_format(path)
    if fmt == "gguf":
        return inspect_gguf(path if path.is_file() else main_gguf(path))
    found = inspect_diffusers(path) if fmt == "diffusers" else inspect_hf(path)
    _check_weights(path, allow_pickle)
    if found.custom_code and not trust_remote_code:
        raise InvalidModel(
            f"'{path.name}' needs custom code (auto_map / .py files), which runs arbitrary "
            "Python; refused. Pass --trust-remote-code only if you trust its publisher"
        )
    return found


# --- GGUF --------------------------------------------------------------------------------------
def main_gguf(folder: Path) -> Path:
    """The model file of a GGUF folder (first shard; never the vision projector)."""
    candidates = sorted(
        p for p in folder.iterdir() if p.suffix.lower() == ".gguf" and not is_projector(p.name)
    )
    if not candidates:
        raise InvalidModel(f"'{folder.name}' holds no GGUF model file")
    return candidates[0]


def is_projector(name: str) -> bool:
    return "mmproj" in name.lower()


def inspect_gguf(path: Path) -> Inspection:
    from gguf import GGUFReader, LlamaFileType

    size = path.stat().st_size
    try:
        reader = GGUFReader(path)
        meta = {
            key: _field(reader, key)
            for key in reader.fields
            if not key.startswith("tokenizer.ggml.")
        }
        end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
        parameters = sum(int(t.n_elements) for t in reader.tensors)
    except Exception as exc:  # the gguf package raises many kinds on malformed input
        raise InvalidModel(
            f"'{path.name}' is not a valid GGUF file: its header does not parse "
            "(corrupt or truncated?)"
        ) from exc
    if end > size or not reader.tensors:
        raise InvalidModel(
            f"'{path.name}' is truncated or corrupt: its tensors need {end} bytes, "
            f"the file has {size}"
        )
    arch = str(meta.get("general.architecture") or "") or None
    if arch == "clip" or meta.get("general.type") == "mmproj":
        raise InvalidModel(f"'{path.name}' is a vision projector, not a model")
    template = meta.get("tokenizer.chat_template")
    caps = _text_caps(template if isinstance(template, str) else None)
    if (
        arch in ("bert", "nomic-bert", "jina-bert-v2", "t5encoder")
        or f"{arch}.pooling_type" in meta
    ):
        caps = ["embedding"]
    elif "completion" not in caps:
        caps.insert(0, "completion")
    if (path.parent / "mmproj.gguf").exists() or any(
        is_projector(p.name) for p in path.parent.glob("*.gguf")
    ):
        caps.append("vision")
    quant = None
    if isinstance(meta.get("general.file_type"), int):
        try:
            quant = LlamaFileType(meta["general.file_type"]).name.removeprefix("MOSTLY_")
        except ValueError:
            quant = None
    context = _int(meta.get(f"{arch}.context_length"))
    return Inspection(
        format="gguf",
        architecture=arch,
        parameters=parameters,
        quantisation=quant or quant_from_name(path.name),
        context_length=context,
        capabilities=caps,
        licence=_str(meta.get("general.license")),
        organisation=_str(meta.get("general.organization")),
        memory_bytes=size + _kv_bytes(meta, arch, context),
    )


def _field(reader: Any, key: str) -> Any:
    try:
        return reader.fields[key].contents()
    except Exception:
        return None


def _kv_bytes(meta: dict[str, Any], arch: str | None, context: int | None) -> int:
    layers = _int(meta.get(f"{arch}.block_count")) or 0
    heads = _int(meta.get(f"{arch}.attention.head_count")) or 1
    kv_heads = _int(meta.get(f"{arch}.attention.head_count_kv")) or heads
    width = _int(meta.get(f"{arch}.embedding_length")) or 0
    key = _int(meta.get(f"{arch}.attention.key_length")) or width // max(heads, 1)
    value = _int(meta.get(f"{arch}.attention.value_length")) or key
    tokens = min(context or 4096, 8192)  # kaiyuan caps the default context at 8192
    return layers * tokens * kv_heads * (key + value) * 2  # f16 cache


# --- Hugging Face folders ------------------------------------------------------------------------
def inspect_hf(folder: Path) -> Inspection:
    config = _json(folder / "config.json")
    archs = config.get("architectures") or []
    arch = str(archs[0]) if archs else _str(config.get("model_type"))
    nested = config.get("text_config")
    text: dict[str, Any] = nested if isinstance(nested, dict) else {}
    context = _int(
        config.get("max_position_embeddings")
        or text.get("max_position_embeddings")
        or config.get("n_positions")
        or config.get("seq_length")
    )
    template = _chat_template(folder)
    caps = _text_caps(template)
    name = arch or ""
    if (folder / "modules.json").is_file() or (
        name.endswith("Model") and "ForCausalLM" not in name
    ):
        caps = ["embedding"]
    else:
        if "completion" not in caps:
            caps.insert(0, "completion")
        if "vision_config" in config or "VL" in name or "Vision" in name:
            caps.append("vision")
    parameters = _safetensors_parameters(folder)
    quant = (
        config.get("quantization_config", {}).get("quant_method")
        if isinstance(config.get("quantization_config"), dict)
        else None
    )
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    layers = _int(config.get("num_hidden_layers") or text.get("num_hidden_layers")) or 0
    heads = _int(config.get("num_attention_heads") or text.get("num_attention_heads")) or 1
    kv_heads = _int(config.get("num_key_value_heads") or text.get("num_key_value_heads")) or heads
    hidden = _int(config.get("hidden_size") or text.get("hidden_size")) or 0
    head_dim = _int(config.get("head_dim")) or hidden // max(heads, 1)
    kv = layers * min(context or 4096, 8192) * kv_heads * head_dim * 2 * 2
    return Inspection(
        format="safetensors",
        architecture=arch,
        parameters=parameters or None,
        quantisation=str(quant or config.get("torch_dtype") or config.get("dtype") or "") or None,
        context_length=context,
        capabilities=caps,
        memory_bytes=int(size * 1.2) + kv,
        custom_code=bool(config.get("auto_map")) or any(folder.rglob("*.py")),
    )


def inspect_diffusers(folder: Path) -> Inspection:
    index = _json(folder / "model_index.json")
    name = str(index.get("_class_name") or "")
    if not name:
        raise InvalidModel(f"'{folder.name}/model_index.json' names no pipeline class")
    video = "Video" in name or name.startswith(("Wan", "CogVideoX", "LTX", "HunyuanVideo"))
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    custom = any(folder.rglob("*.py"))
    return Inspection(
        format="diffusers",
        architecture=name,
        parameters=_safetensors_parameters(folder) or None,
        capabilities=["video"] if video else ["image"],
        memory_bytes=int(size * 1.2),
        custom_code=custom,
    )


def _check_weights(folder: Path, allow_pickle: bool) -> None:
    safe = list(folder.rglob("*.safetensors"))
    pickles = [p for p in folder.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES]
    if pickles and not safe and not allow_pickle:
        raise InvalidModel(
            f"'{folder.name}' has only pickle weights ({pickles[0].name}), which can run code "
            "when loaded; refused. Pass --allow-pickle only if you trust its publisher"
        )
    if not pickles and not safe:
        raise InvalidModel(f"'{folder.name}' has no weights (*.safetensors)")


def _safetensors_parameters(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*.safetensors"):
        total += safetensors_parameters(path)
    return total


def safetensors_parameters(path: Path) -> int:
    """Parameter count from a safetensors header; InvalidModel when the header is corrupt."""
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > min(_MAX_HEADER, size - 8):
                raise ValueError("header length out of range")
            header = json.loads(handle.read(length))
        total = 0
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            if not 0 <= begin <= end <= size - 8 - length:
                raise ValueError("tensor outside the file")
            total += math.prod(int(d) for d in info["shape"])
        return total
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise InvalidModel(f"'{path.name}' is not a valid safetensors file") from exc


def _chat_template(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(errors="replace")
    for name in ("chat_template.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            template = _json(folder / name).get("chat_template")
            if isinstance(template, str):
                return template
            if isinstance(template, list):  # named templates: [{"name", "template"}]
                return "\n".join(
                    str(t.get("template", "")) for t in template if isinstance(t, dict)
                )
    return None


def _text_caps(template: str | None) -> list[str]:
    if not template:
        return []
    caps = ["chat"]
    if "tools" in template:
        caps.append("tools")
    if "<think>" in template or "reasoning_content" in template:
        caps.append("reasoning")
    return caps


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidModel(f"'{path.parent.name}/{path.name}' is not valid JSON") from exc
    if not isinstance(data, dict):
        raise InvalidModel(f"'{path.parent.name}/{path.name}' is not a JSON object")
    return data


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return str(value) if isinstance(value, str) and value else None
