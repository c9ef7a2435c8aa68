"""Which catalogue model to use for each task on this machine, and how fast it will decode.

Decoding one token reads every weight once (for a mixture of experts, the active experts'
share), so a CPU decodes at about ``EFFICIENCY x bandwidth / bytes read per token``, with the
bandwidth measured on this machine (:func:`kaiyuan.machine.memory_bandwidth`).

The pick per task is the best model (most parameters; the geometric mean of total and active
for a mixture of experts) that fits memory and decodes at ``USABLE_TOK_S`` or more, at the
largest quantisation that still does, never below Q4_K_M unless the catalogue recommends it.
When nothing is that fast, the fastest model that fits. Image and video pipelines have no
decode speed: without a GPU the smallest pipeline that fits is picked (every step is CPU
bound), with one the largest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from kaiyuan import machine
from kaiyuan.store import catalog
from kaiyuan.store.catalog import CatalogModel

TASKS = ("chat", "code", "reasoning", "vision", "embedding", "image", "video")
SPEED_TASKS = ("chat", "code", "reasoning", "vision")
USABLE_TOK_S = 8.0
# llama.cpp reads weights at roughly half the bandwidth a plain copy moves (read + write).
EFFICIENCY = 0.5
FLOOR_QUANT = "Q4_K_M"  # faster but worse quantisations are never offered for speed
# Memory a safetensors/diffusers model needs beyond its weights (activations, buffers).
HEADROOM = 1.25


@dataclass(slots=True, frozen=True)
class Option:
    """One way to run a catalogue model here: its quantisation, size and expected speed."""

    model: CatalogModel
    quant: str | None  # GGUF quantisation; None for safetensors and diffusers models
    size_gb: float  # the download, and about what the weights take in memory
    size_estimated: bool  # from the parameter count (bf16), the catalogue having no size
    tok_s: float | None  # estimated decode speed; None where decoding is not the work
    default: bool  # the quantisation `kaiyuan pull ID` chooses on this machine

    @property
    def pull(self) -> str:
        suffix = f":{self.quant}" if self.quant and not self.default else ""
        return f"kaiyuan pull {self.model.id}{suffix}"


# Newer families do more per parameter (their own published benchmarks: Qwen3-1.7B matches
# Qwen2.5-3B; SmolLM2-1.7B trails Qwen2.5-1.5B), so size alone would pick the older model.
FAMILY_WEIGHT = {
    "qwen3": 1.6, "qwen3-moe": 1.6, "qwen2.5": 1.25, "qwen2.5-coder": 1.25, "qwen2.5-vl": 1.25,
    "deepseek-r1-distill": 1.1, "gemma3": 1.2, "llama3.2": 1.0, "llama3.1": 1.0,
    "smollm2": 0.7,
}  # fmt: skip


def quality(model: CatalogModel) -> float:
    """Parameters in billions weighed by the family's generation, the measure of "best" (a
    mixture of experts counts as the geometric mean of its total and active parameters)."""
    total = model.params_b or 0.0
    if model.active_params_b:
        total = math.sqrt(total * model.active_params_b)
    return total * FAMILY_WEIGHT.get(model.family, 1.0)


def tok_s(model: CatalogModel, size_gb: float, bandwidth: float | None) -> float | None:
    if bandwidth is None or size_gb <= 0:
        return None
    per_token = size_gb * 1e9
    if model.active_params_b and model.params_b:
        per_token *= model.active_params_b / model.params_b
    return EFFICIENCY * bandwidth / per_token


def options(model: CatalogModel, memory: int, bandwidth: float | None) -> list[Option]:
    """The ways ``model`` fits ``memory``: the catalogue's quantisation for it first, then
    smaller ones down to Q4_K_M (faster). Empty when it does not fit."""
    speed = bandwidth if any(t in model.capabilities for t in SPEED_TASKS) else None
    if model.format == "gguf":
        chosen = model.quant_for(memory)
        if chosen is None:
            return []
        size = model.gguf_sizes[chosen]
        floor = model.gguf_sizes.get(FLOOR_QUANT, 0.0)
        smaller = sorted(
            (q for q, gb in model.gguf_sizes.items() if floor <= gb < size and q != "Q2_K"),
            key=lambda q: -model.gguf_sizes[q],
        )
        return [
            Option(model, q, model.gguf_sizes[q], False,
                   tok_s(model, model.gguf_sizes[q], speed), q == chosen)
            for q in (chosen, *smaller)
        ]  # fmt: skip
    estimated = model.size_gb is None
    size = model.size_gb if model.size_gb is not None else (model.params_b or 0.0) * 2
    if size <= 0 or size * 1e9 * HEADROOM > memory:
        return []
    return [Option(model, None, size, estimated, tok_s(model, size, speed), True)]


def serves(model: CatalogModel, task: str) -> bool:
    """Whether ``model`` is a candidate for ``task``. A code model is picked for code, and a
    reasoning-only model (it thinks before every answer and calls no tools) for reasoning,
    not for chat."""
    caps = model.capabilities
    if task == "chat":
        return (
            "chat" in caps
            and "code" not in caps
            and not ("reasoning" in caps and "tools" not in caps)
        )
    return task in caps


def fitting(memory: int, bandwidth: float | None) -> list[list[Option]]:
    """Every catalogue model that fits, each as its options (the default first)."""
    return [found for m in catalog.models() if (found := options(m, memory, bandwidth))]


def pick(task: str, memory: int, bandwidth: float | None, *, gpu: bool = False) -> Option | None:
    """The model to use for ``task`` on a machine with ``memory`` bytes for weights."""
    candidates = [opts for opts in fitting(memory, bandwidth) if serves(opts[0].model, task)]
    if not candidates:
        return None
    if task not in SPEED_TASKS or bandwidth is None:
        chosen = [opts[0] for opts in candidates]
        if task in ("image", "video") and not gpu:
            return min(chosen, key=lambda o: (quality(o.model), o.size_gb))
        return max(chosen, key=lambda o: (quality(o.model), -o.size_gb))
    usable = []
    for opts in candidates:
        fast = [o for o in opts if o.tok_s is not None and o.tok_s >= USABLE_TOK_S]
        if fast:
            usable.append(fast[0])  # options run largest first: the best quality that is fast
    if usable:
        return max(usable, key=lambda o: (quality(o.model), o.size_gb))
    everything = [o for opts in candidates for o in opts]
    return max(everything, key=lambda o: (o.tok_s or 0.0, quality(o.model)))


def pick_here(task: str, cache_dir: Path | None) -> Option | None:
    """``pick`` for this machine (its memory, GPUs and measured bandwidth, cached in
    ``cache_dir``)."""
    here = machine.this_machine()
    bandwidth = machine.memory_bandwidth(cache_dir)
    return pick(task, machine.model_memory(here), bandwidth, gpu=bool(here.gpus))


def smallest(task: str) -> CatalogModel | None:
    """The catalogue's smallest model for ``task`` (what to name when nothing fits)."""
    models = [m for m in catalog.models() if serves(m, task) and need_gb(m)]
    return min(models, key=lambda m: need_gb(m) or 0.0) if models else None


def need_gb(model: CatalogModel) -> float | None:
    """The smallest download of ``model`` (GB), for saying why it does not fit."""
    sizes = [gb for q, gb in model.gguf_sizes.items() if q != "Q2_K"]
    if sizes:
        return min(sizes)
    return model.size_gb if model.size_gb is not None else (model.params_b or 0.0) * 2 or None
