"""Tiny random diffusers pipelines built in code (shared guide facts.md), saved with
save_pretrained so the real loading path is tested. Every component is small enough to run a
step in milliseconds on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def clip_tokenizer() -> Any:
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    for i, ch in enumerate("abcdefghijklmnopqrstuvwxyz"):
        vocab[ch] = 3 + i
        vocab[ch + "</w>"] = 30 + i
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def stable_diffusion(folder: Path) -> Path:
    """SD 1.5 layout: UNet2DConditionModel, AutoencoderKL, CLIP text encoder, DDIM."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4,
        out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=8,
        norm_num_groups=4, attention_head_dim=2,
    )  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=[8, 8], in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4, norm_num_groups=4, sample_size=16,
    )  # fmt: skip
    text = CLIPTextModel(CLIPTextConfig(
        hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
        vocab_size=100, max_position_embeddings=77, projection_dim=8,
    ))  # fmt: skip
    pipe = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text, tokenizer=clip_tokenizer(),
        scheduler=DDIMScheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
