"""Tiny but real model files for tests: GGUF, Hugging Face folders, diffusers pipelines.

Every builder writes real file formats (each in a few milliseconds) so that code under test
can parse them with the real readers:

- ``write_tiny_gguf``: a valid GGUF v3 file that ``gguf.GGUFReader`` parses, with
  ``general.architecture``, ``general.name``, ``general.file_type``, ``{arch}.context_length``,
  ``tokenizer.chat_template``, a small gpt2-style vocabulary and a few F32 tensors. The quant
  label only sets ``general.file_type``: the tensors stay F32, so llama.cpp is not expected to
  load it.
- ``write_truncated_gguf`` (a valid header cut in the middle) and ``write_garbage``.
- ``write_tiny_hf_model``: a Qwen2-shaped transformers folder (config.json, tokenizer.json,
  tokenizer_config.json with a chat template, generation_config.json, model.safetensors or
  shards plus index).
- ``write_tiny_diffusers_pipeline``: model_index.json plus component folders.
- ``make_hub_tree``: the repos ``tests.hubserver.HubServer`` serves (``root/<org>/<repo>/...``).

``safetensors`` and ``tokenizers`` are used when installed; otherwise equivalent files are
written by hand (same on-disk format), so the builders never need torch or transformers.
"""

from __future__ import annotations

import json
import pickle
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_WORDS = [
    "hello",
    "world",
    "the",
    "sky",
    "is",
    "blue",
    "why",
    "a",
    "tiny",
    "model",
    "yes",
    "no",
    ".",
    ",",
    "?",
    "!",
]

GGUF_MAGIC = b"GGUF"


def _tiny_vocab(n_vocab: int) -> list[str]:
    """Special tokens, a few words, then filler tokens up to ``n_vocab`` entries."""
    base = [*SPECIAL_TOKENS, "<unk>", *_WORDS]
    if n_vocab < len(base):
        raise ValueError(f"n_vocab must be at least {len(base)}")
    return base + [f"tok{i}" for i in range(n_vocab - len(base))]


def _file_type_value(file_type: str | int) -> int:
    """``general.file_type`` for a quant label ("Q4_K_M", "Q8_0", "F16", "F32", ...) or int."""
    from gguf import LlamaFileType

    if isinstance(file_type, int):
        return int(file_type)
    label = file_type.upper()
    if label == "F32":
        return int(LlamaFileType.ALL_F32)
    try:
        return int(LlamaFileType[f"MOSTLY_{label}"])
    except KeyError:
        raise ValueError(f"unknown GGUF file type label {file_type!r}") from None


# --------------------------------------------------------------------------------------------
# GGUF
# --------------------------------------------------------------------------------------------


def write_tiny_gguf(
    path: str | Path,
    *,
    arch: str = "llama",
    name: str = "tiny",
    n_ctx: int = 2048,
    chat_template: str | None = CHATML_TEMPLATE,
    file_type: str | int = "F32",
    n_embd: int = 16,
    n_layer: int = 1,
    n_vocab: int = 32,
    license: str | None = None,
    extra_kv: Mapping[str, str | int | float | bool] | None = None,
    seed: int = 0,
) -> Path:
    """Write a small valid GGUF and return its path.

    ``file_type`` is a quant label such as "Q4_K_M" or "Q8_0" (or the integer value) stored in
    ``general.file_type``; the tensors themselves are F32. ``extra_kv`` adds string/int/float/
    bool keys verbatim. About 3 KB with the defaults; grow ``n_vocab``/``n_embd`` for bigger.
    """
    from gguf import GGUFWriter, TokenType

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    vocab = _tiny_vocab(n_vocab)
    writer = GGUFWriter(str(path), arch)
    writer.add_name(name)
    writer.add_file_type(_file_type_value(file_type))
    writer.add_quantization_version(2)
    if license is not None:
        writer.add_license(license)
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_embd * 2)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(n_vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(vocab)
    writer.add_token_types(
        [TokenType.CONTROL if t in SPECIAL_TOKENS else TokenType.NORMAL for t in vocab]
    )
    writer.add_bos_token_id(vocab.index("<|endoftext|>"))
    writer.add_eos_token_id(vocab.index("<|im_end|>"))
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    for key, value in (extra_kv or {}).items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_string(key, str(value))

    rng = np.random.default_rng(seed)
    writer.add_tensor("token_embd.weight", rng.standard_normal((n_vocab, n_embd), np.float32))
    for layer in range(n_layer):
        writer.add_tensor(f"blk.{layer}.attn_norm.weight", np.ones(n_embd, np.float32))
        writer.add_tensor(
            f"blk.{layer}.attn_q.weight", rng.standard_normal((n_embd, n_embd), np.float32)
        )
    writer.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_truncated_gguf(path: str | Path, *, keep: float = 0.5, **kwargs: Any) -> Path:
    """A GGUF whose start is valid (magic, version, counts) but that stops part-way.

    ``keep`` is the fraction of the full file kept; ``kwargs`` go to :func:`write_tiny_gguf`.
    """
    path = Path(path)
    write_tiny_gguf(path, **kwargs)
    data = path.read_bytes()
    path.write_bytes(data[: max(24, int(len(data) * keep))])
    return path


def write_garbage(path: str | Path, size: int = 4096, *, seed: int = 1) -> Path:
    """Random bytes that are not GGUF, safetensors, JSON or pickle."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = bytearray(np.random.default_rng(seed).bytes(size))
    data[:4] = b"\xde\xad\xbe\xef"
    path.write_bytes(bytes(data))
    return path


# --------------------------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------------------------

_SAFETENSORS_DTYPES = {
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
}


def save_safetensors(
    tensors: Mapping[str, np.ndarray], path: str | Path, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write ``tensors`` in safetensors format (the ``safetensors`` package when installed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": "pt", **(metadata or {})}
    try:
        from safetensors.numpy import save_file
    except ImportError:
        pass
    else:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), meta)
        return path

    header: dict[str, Any] = {"__metadata__": meta}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))
    return path


def read_safetensors_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (names, dtypes, shapes, offsets, metadata)."""
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        return dict(json.loads(fh.read(length)))


# --------------------------------------------------------------------------------------------
# Hugging Face transformers folder
# --------------------------------------------------------------------------------------------


def _write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def tokenizer_json(vocab: list[str]) -> str:
    """A WordLevel ``tokenizer.json`` over ``vocab`` (built with ``tokenizers`` if installed)."""
    ids = {token: i for i, token in enumerate(vocab)}
    try:
        from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    except ImportError:
        pass
    else:
        tok = Tokenizer(models.WordLevel(vocab=ids, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.add_special_tokens([AddedToken(t, special=True) for t in SPECIAL_TOKENS])
        return str(tok.to_str(pretty=True))

    added = [
        {
            "id": ids[t],
            "content": t,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for t in SPECIAL_TOKENS
    ]
    data = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": ids, "unk_token": "<unk>"},
    }
    return json.dumps(data, indent=2)


def write_tiny_hf_model(
    folder: str | Path,
    *,
    architecture: str = "Qwen2ForCausalLM",
    model_type: str = "qwen2",
    max_position_embeddings: int = 4096,
    chat_template: str | None = CHATML_TEMPLATE,
    hidden_size: int = 16,
    num_layers: int = 1,
    vocab_size: int = 32,
    shards: int = 1,
    extra_config: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """A tiny transformers-style model folder (Qwen2 by default); returns ``folder``.

    Files: config.json, generation_config.json, tokenizer.json, tokenizer_config.json,
    special_tokens_map.json, and model.safetensors (``shards == 1``) or
    model-0000i-of-0000n.safetensors plus model.safetensors.index.json.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = _tiny_vocab(vocab_size)
    bos, eos = vocab.index("<|endoftext|>"), vocab.index("<|im_end|>")
    config = {
        "architectures": [architecture],
        "model_type": model_type,
        "hidden_size": hidden_size,
        "intermediate_size": hidden_size * 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "num_hidden_layers": num_layers,
        "max_position_embeddings": max_position_embeddings,
        "vocab_size": vocab_size,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "bos_token_id": bos,
        "eos_token_id": eos,
        "transformers_version": "4.45.0",
        **(extra_config or {}),
    }
    _write_json(folder / "config.json", config)
    _write_json(
        folder / "generation_config.json",
        {
            "bos_token_id": bos,
            "eos_token_id": [eos, bos],
            "do_sample": True,
            "temperature": 0.7,
            "top_p": 0.8,
            "transformers_version": "4.45.0",
        },
    )
    (folder / "tokenizer.json").write_text(tokenizer_json(vocab), encoding="utf-8")
    tokenizer_config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<unk>",
        "model_max_length": max_position_embeddings,
        "clean_up_tokenization_spaces": False,
    }
    if chat_template is not None:
        tokenizer_config["chat_template"] = chat_template
    _write_json(folder / "tokenizer_config.json", tokenizer_config)
    _write_json(
        folder / "special_tokens_map.json",
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": "<unk>"},
    )

    rng = np.random.default_rng(seed)
    h = hidden_size
    tensors: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": rng.standard_normal((vocab_size, h), np.float32),
        "model.norm.weight": np.ones(h, np.float32),
        "lm_head.weight": rng.standard_normal((vocab_size, h), np.float32),
    }
    for i in range(num_layers):
        prefix = f"model.layers.{i}"
        tensors[f"{prefix}.input_layernorm.weight"] = np.ones(h, np.float32)
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            tensors[f"{prefix}.self_attn.{proj}.weight"] = rng.standard_normal((h, h), np.float32)
        tensors[f"{prefix}.mlp.gate_proj.weight"] = rng.standard_normal((2 * h, h), np.float32)
    if shards <= 1:
        save_safetensors(tensors, folder / "model.safetensors")
    else:
        names = sorted(tensors)
        weight_map: dict[str, str] = {}
        for index in range(shards):
            shard = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: tensors[n] for n in names[index::shards]}
            save_safetensors(part, folder / shard)
            weight_map.update(dict.fromkeys(part, shard))
        total = sum(int(t.nbytes) for t in tensors.values())
        _write_json(
            folder / "model.safetensors.index.json",
            {"metadata": {"total_size": total}, "weight_map": weight_map},
        )
    return folder


# --------------------------------------------------------------------------------------------
# diffusers pipeline
# --------------------------------------------------------------------------------------------


def write_tiny_diffusers_pipeline(
    folder: str | Path,
    *,
    class_name: str = "StableDiffusionPipeline",
    diffusers_version: str = "0.30.0",
    seed: int = 0,
) -> Path:
    """A diffusers-shaped pipeline folder (model_index.json + component subfolders).

    Not loadable by diffusers: the weights are a few random tensors with plausible names.
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    _write_json(
        folder / "model_index.json",
        {
            "_class_name": class_name,
            "_diffusers_version": diffusers_version,
            "feature_extractor": [None, None],
            "requires_safety_checker": False,
            "safety_checker": [None, None],
            "scheduler": ["diffusers", "PNDMScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        },
    )
    _write_json(
        folder / "scheduler" / "scheduler_config.json",
        {
            "_class_name": "PNDMScheduler",
            "_diffusers_version": diffusers_version,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "num_train_timesteps": 1000,
            "skip_prk_steps": True,
        },
    )
    _write_json(
        folder / "text_encoder" / "config.json",
        {
            "architectures": ["CLIPTextModel"],
            "model_type": "clip_text_model",
            "hidden_size": 8,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
            "vocab_size": 32,
        },
    )
    save_safetensors(
        {"text_model.embeddings.token_embedding.weight": rng.standard_normal((32, 8), np.float32)},
        folder / "text_encoder" / "model.safetensors",
    )
    vocab = {t: i for i, t in enumerate(_tiny_vocab(32))}
    _write_json(folder / "tokenizer" / "vocab.json", vocab)
    (folder / "tokenizer" / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    _write_json(
        folder / "tokenizer" / "tokenizer_config.json",
        {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77},
    )
    _write_json(folder / "tokenizer" / "special_tokens_map.json", {"unk_token": "<unk>"})
    _write_json(
        folder / "unet" / "config.json",
        {
            "_class_name": "UNet2DConditionModel",
            "_diffusers_version": diffusers_version,
            "sample_size": 8,
            "in_channels": 4,
            "out_channels": 4,
            "cross_attention_dim": 8,
        },
    )
    save_safetensors(
        {"conv_in.weight": rng.standard_normal((4, 4, 3, 3), np.float32)},
        folder / "unet" / "diffusion_pytorch_model.safetensors",
    )
    _write_json(
        folder / "vae" / "config.json",
        {
            "_class_name": "AutoencoderKL",
            "_diffusers_version": diffusers_version,
            "latent_channels": 4,
            "sample_size": 8,
        },
    )
    save_safetensors(
        {"encoder.conv_in.weight": rng.standard_normal((4, 3, 3, 3), np.float32)},
        folder / "vae" / "diffusion_pytorch_model.safetensors",
    )
    return folder


# --------------------------------------------------------------------------------------------
# A hub tree
# --------------------------------------------------------------------------------------------


def write_readme(folder: str | Path, front_matter: Mapping[str, Any], body: str = "") -> Path:
    """README.md with YAML front matter (``license: ...``, ``tags: [...]``...)."""
    import yaml

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = "---\n" + yaml.safe_dump(dict(front_matter), sort_keys=False) + "---\n\n" + body
    path = folder / "README.md"
    path.write_text(text, encoding="utf-8")
    return path


CUSTOM_MODELING = '''"""Custom modeling code shipped in a model repo (needs trust_remote_code)."""


class CustomForCausalLM:
    def __init__(self, config):
        self.config = config
'''

TINY_GGUF = "TheOrg/tiny-GGUF"
TINY_MODEL = "TheOrg/tiny-model"
PICKLE_MODEL = "TheOrg/pickle-model"
CUSTOM_CODE = "TheOrg/custom-code"
TINY_DIFFUSERS = "TheOrg/tiny-diffusers"


def make_hub_tree(root: str | Path) -> dict[str, Path]:
    """Lay out the standard test repos under ``root/<org>/<repo>``; returns {repo_id: folder}.

    - ``TheOrg/tiny-GGUF``: tiny-Q4_K_M.gguf, tiny-Q8_0.gguf (n_ctx 4096 / 8192, ChatML
      template), README.md with ``license: apache-2.0``.
    - ``TheOrg/tiny-model``: a Qwen2 transformers folder + README.md with ``license: mit``.
    - ``TheOrg/pickle-model``: only ``pytorch_model.bin`` (a pickle).
    - ``TheOrg/custom-code``: config.json with ``auto_map`` + ``modeling_custom.py``.
    - ``TheOrg/tiny-diffusers``: a StableDiffusionPipeline-shaped tree, ``license: openrail``.
    """
    root = Path(root)
    repos = {
        name: root / name
        for name in (TINY_GGUF, TINY_MODEL, PICKLE_MODEL, CUSTOM_CODE, TINY_DIFFUSERS)
    }

    gguf_dir = repos[TINY_GGUF]
    write_tiny_gguf(gguf_dir / "tiny-Q4_K_M.gguf", name="tiny", file_type="Q4_K_M", n_ctx=4096)
    write_tiny_gguf(
        gguf_dir / "tiny-Q8_0.gguf", name="tiny", file_type="Q8_0", n_ctx=8192, n_vocab=64
    )
    write_readme(
        gguf_dir,
        {"license": "apache-2.0", "tags": ["gguf", "chat"], "pipeline_tag": "text-generation"},
        "# tiny GGUF\n\nTwo quantisations of a tiny test model.\n",
    )

    write_tiny_hf_model(repos[TINY_MODEL])
    write_readme(
        repos[TINY_MODEL],
        {"license": "mit", "library_name": "transformers", "pipeline_tag": "text-generation"},
        "# tiny model\n",
    )

    pickle_dir = repos[PICKLE_MODEL]
    pickle_dir.mkdir(parents=True, exist_ok=True)
    (pickle_dir / "pytorch_model.bin").write_bytes(
        pickle.dumps({"model.weight": [0.5] * 64}, protocol=2)
    )

    custom = repos[CUSTOM_CODE]
    _write_json(
        custom / "config.json",
        {
            "architectures": ["CustomForCausalLM"],
            "model_type": "custom",
            "auto_map": {"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"},
            "max_position_embeddings": 1024,
        },
    )
    (custom / "modeling_custom.py").write_text(CUSTOM_MODELING, encoding="utf-8")

    write_tiny_diffusers_pipeline(repos[TINY_DIFFUSERS])
    write_readme(repos[TINY_DIFFUSERS], {"license": "openrail", "library_name": "diffusers"})
    return repos


def byte_bpe(corpus: list[str], specials: list[str], vocab_size: int) -> Any:
    """A byte-level BPE (any text encodes) trained on ``corpus``; ``specials`` come first, with
    ids 0, 1, ... in order. Wrap it in ``PreTrainedTokenizerFast`` with the roles a model needs."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tok.train_from_iterator(corpus, trainer)
    return tok
