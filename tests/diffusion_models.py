"""Tiny random diffusers pipelines built in code (shared guide facts.md), saved with
save_pretrained so the real loading path is tested. Every component is small enough to run a
step in milliseconds on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.tinymodels import byte_bpe


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


def byte_tokenizer(vocab_size: int = 300) -> Any:
    """A byte-level BPE with pad and end tokens, as T5-style pipelines expect."""
    from transformers import PreTrainedTokenizerFast

    corpus = ["a red fox runs through the snowy forest at dawn"] * 10
    tok = byte_bpe(corpus, ["<pad>", "</s>", "<unk>"], vocab_size)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def t5_encoder(vocab_size: int) -> Any:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(
        vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, dropout_rate=0.0,
    ))  # fmt: skip


def _wan_parts(*, in_channels: int = 16, image_dim: int | None = None) -> dict[str, Any]:
    """What every Wan layout shares: UMT5 text encoder, Wan VAE (4x temporal, 8x spatial
    compression, as in the real model), a WanTransformer3DModel with 2x2 patches."""
    import torch
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    tokenizer = byte_tokenizer()
    text = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, dropout_rate=0.0,
    ))  # fmt: skip
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )  # fmt: skip
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=4,
        in_channels=in_channels, out_channels=16, text_dim=16, freq_dim=16, ffn_dim=16,
        num_layers=1, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32, image_dim=image_dim,
    )  # fmt: skip
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    return {"tokenizer": tokenizer, "text_encoder": text, "vae": vae,
            "transformer": transformer, "scheduler": scheduler}  # fmt: skip


def wan(folder: Path, *, two_experts: bool = False) -> Path:
    """Wan 2.1 text-to-video. With ``two_experts``, Wan 2.2 A14B's layout: a high-noise and a
    low-noise transformer split at a boundary timestep."""
    from diffusers import WanPipeline, WanTransformer3DModel

    parts = _wan_parts()
    if two_experts:
        parts["transformer_2"] = WanTransformer3DModel(**parts["transformer"].config)
        parts["boundary_ratio"] = 0.5
    WanPipeline(**parts).save_pretrained(folder, safe_serialization=True)
    return folder


def flux(folder: Path) -> Path:
    """FLUX.1 layout: CLIP + T5 text encoders, a flow-matching MMDiT on 2x2-packed latents."""
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    t5_tokenizer = byte_tokenizer()
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )  # fmt: skip
    clip = CLIPTextModel(CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
        vocab_size=100, max_position_embeddings=77, projection_dim=32,
    ))  # fmt: skip
    t5 = t5_encoder(len(t5_tokenizer))
    vae = AutoencoderKL(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,),
        layers_per_block=1, latent_channels=1, norm_num_groups=1, use_quant_conv=False,
        use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035,
    )  # fmt: skip
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=clip,
        tokenizer=clip_tokenizer(), text_encoder_2=t5, tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )  # fmt: skip
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def stable_diffusion_xl(folder: Path) -> Path:
    """SDXL layout: two CLIP text encoders (the second with a projection) and a UNet with
    added time/text conditioning."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(2, 4), layers_per_block=1, sample_size=8, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=80,
        cross_attention_dim=64, norm_num_groups=1,
    )  # fmt: skip
    config = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                  num_attention_heads=4, vocab_size=100, max_position_embeddings=77,
                  projection_dim=32)  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=[8, 8], in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4, norm_num_groups=4, sample_size=16,
    )  # fmt: skip
    pipe = StableDiffusionXLPipeline(
        unet=unet, vae=vae, scheduler=EulerDiscreteScheduler(),
        text_encoder=CLIPTextModel(CLIPTextConfig(**config)), tokenizer=clip_tokenizer(),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**config)),
        tokenizer_2=clip_tokenizer(),
    )  # fmt: skip
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def cogvideox(folder: Path) -> Path:
    """CogVideoX layout: T5 text encoder, a 3D causal VAE (4x temporal compression) and an
    expert transformer with 2x2 patches."""
    import torch
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )

    torch.manual_seed(0)
    tokenizer = byte_tokenizer()
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=4, attention_head_dim=8, in_channels=4, out_channels=4,
        time_embed_dim=2, text_embed_dim=32, num_layers=1, sample_width=2, sample_height=2,
        sample_frames=9, patch_size=2, temporal_compression_ratio=4, max_text_seq_length=16,
    )  # fmt: skip
    vae = AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8),
        latent_channels=4, layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4,
    )  # fmt: skip
    text = t5_encoder(len(tokenizer))
    pipe = CogVideoXPipeline(
        tokenizer=tokenizer, text_encoder=text, vae=vae, transformer=transformer,
        scheduler=CogVideoXDDIMScheduler(),
    )  # fmt: skip
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def wan_image_to_video(folder: Path) -> Path:
    """Wan 2.1 image-to-video: the text-to-video parts plus a CLIP image encoder, and a
    transformer that also reads the first frame's latents and mask (36 input channels)."""
    from diffusers import WanImageToVideoPipeline
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    parts = _wan_parts(in_channels=36, image_dim=4)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=4, projection_dim=4, num_hidden_layers=1, num_attention_heads=2,
        image_size=32, intermediate_size=16, patch_size=4,
    ))  # fmt: skip
    pipe = WanImageToVideoPipeline(
        **parts, image_encoder=encoder, image_processor=CLIPImageProcessor(crop_size=32, size=32)
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def qwen_image(folder: Path) -> Path:
    """Qwen-Image layout: a Qwen2.5-VL text encoder (tiny, random) with a byte-level BPE that
    has Qwen's chat markers, the Qwen-Image VAE and an MMDiT on 2x2-packed latents."""
    import torch
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
    )

    torch.manual_seed(0)
    tok = byte_bpe(["Describe the image: the color, shape and size of a fox"] * 10,
                   ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], 400)  # fmt: skip
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>"
    )
    z = 4
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=16, guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )  # fmt: skip
    vae = AutoencoderKLQwenImage(
        base_dim=z * 6, z_dim=z, dim_mult=[1, 2, 4], num_res_blocks=1,
        temperal_downsample=[False, True], latents_mean=[0.0] * z, latents_std=[1.0] * z,
    )  # fmt: skip
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": 16, "intermediate_size": 16, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 400,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
        },
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2,
                       "out_hidden_size": 16},
        vision_start_token_id=397, vision_end_token_id=398, image_token_id=399,
        video_token_id=396,
    )  # fmt: skip
    pipe = QwenImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae,
        text_encoder=Qwen2_5_VLForConditionalGeneration(config), tokenizer=tokenizer,
        transformer=transformer,
    )  # fmt: skip
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
