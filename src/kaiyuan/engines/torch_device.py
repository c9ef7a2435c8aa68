"""Where a torch-based engine runs: CUDA in bf16 when a GPU (with bf16) is present, else the
CPU in fp32; and how many CPU threads it may use. Imports torch: for engines only."""

from __future__ import annotations

import os
from typing import Any

import torch


def place(threads: int | None) -> tuple[str, Any]:
    """(device, dtype) for a model about to load from a store folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a store folder, never a hub
    if threads:
        torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    return device, torch.bfloat16 if bf16 else torch.float32
