"""Image and video pipelines through diffusers (CPU here, CUDA when present).

torch and diffusers load only when such a model does. One worker thread runs one generation
at a time (``generate_media``, called through ``asyncio.to_thread`` by the routes and the video
job runner); progress is reported per denoising step and a cancellation is honoured at the
next step. Size and frame rules come from the loaded pipeline itself (its VAE's spatial and
temporal compression and the transformer's patch size), so a request that breaks them gets a
400 stating the rule before any work starts.
"""

from __future__ import annotations

import inspect
import logging
import threading
from typing import Any

from kaiyuan.engines.base import (
    Cancelled,
    EngineOptions,
    MediaEngine,
    MediaRequest,
    ModelInfo,
    Rules,
)
from kaiyuan.errors import EngineFailure

log = logging.getLogger(__name__)
VIDEO_CLASSES = ("Wan", "CogVideoX", "LTX", "HunyuanVideo")
PACKED = ("Flux", "QwenImage", "Chroma")  # latents packed 2x2 into tokens


class DiffusionEngine(MediaEngine):
    def __init__(self, options: EngineOptions) -> None:
        import torch
        from diffusers import DiffusionPipeline
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        from kaiyuan.engines.torch_device import place

        for library in (diffusers_logging, transformers_logging):  # loading bars and notices
            library.disable_progress_bar()
            library.set_verbosity_error()
        model_id, path = options.model_id, options.path
        self.device, self.dtype = place(options.threads)
        self._torch = torch
        try:
            pipeline: Any = DiffusionPipeline.from_pretrained(
                str(path), local_files_only=True, use_safetensors=True, dtype=self.dtype,
                trust_remote_code=options.trust_remote_code,
            )  # fmt: skip
        except (OSError, ValueError) as exc:  # e.g. a component's weights are missing
            reason = str(exc).splitlines()[0].replace(str(path), "<model>")[:300]
            raise EngineFailure(f"model '{model_id}' cannot be loaded: {reason}") from None
        for component in pipeline.components.values():
            if hasattr(component, "eval"):
                component.eval()  # dropout off: a seed gives the same pixels
        self.pipeline: Any = pipeline.to(self.device)
        self.pipeline.set_progress_bar_config(disable=True)
        name = type(pipeline).__name__
        # image-to-video pipelines take an `image`; text-to-video ones do not
        call = inspect.signature(type(pipeline).__call__).parameters
        self.takes_image = "image" in call
        self.needs_image = self.takes_image and call["image"].default is inspect.Parameter.empty
        denoiser = getattr(pipeline, "transformer", None)
        length = getattr(getattr(denoiser, "config", None), "max_text_seq_length", None)
        self.text_length = int(length) if length and "max_sequence_length" in call else None
        self.rules = _rules(self.pipeline, video=name.startswith(VIDEO_CLASSES) or "Video" in name)
        self.info = ModelInfo(
            id=model_id,
            backend="diffusers",
            context_length=0,  # a pipeline reads no token context
            chat_template=None,
            capabilities=("video",) if self.rules.video else ("image",),
            created=options.created,
            owned_by=options.owned_by,
        )
        self._lock = threading.Lock()
        self._busy = 0

    @property
    def in_flight(self) -> int:
        return self._busy

    @property
    def alive(self) -> bool:
        return self.pipeline is not None

    def generate_media(self, request: MediaRequest) -> list[Any]:
        self._busy += 1
        try:
            with self._lock, self._torch.inference_mode():
                return self._run(request)
        finally:
            self._busy -= 1

    def _run(self, r: MediaRequest) -> list[Any]:
        torch = self._torch
        generator = torch.Generator(device="cpu").manual_seed(
            r.seed if r.seed is not None else int(torch.seed() % 2**32)
        )

        def on_step(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            if r.cancelled is not None and r.cancelled.is_set():
                raise Cancelled("the generation was cancelled")
            if r.progress is not None:
                r.progress(step + 1, r.steps)
            return kwargs

        options: dict[str, Any] = {
            "prompt": r.prompt, "height": r.height, "width": r.width,
            "num_inference_steps": r.steps, "generator": generator,
            "callback_on_step_end": on_step,
        }  # fmt: skip
        if r.guidance_scale is not None:
            options["guidance_scale"] = r.guidance_scale
        if r.negative_prompt:
            options["negative_prompt"] = r.negative_prompt
        if self.text_length is not None:  # the prompt length its position table was built for
            options["max_sequence_length"] = self.text_length
        if self.rules.video:
            options["num_frames"] = r.frames or self.rules.default_frames
            options["output_type"] = "pil"
            if r.image is not None:
                options["image"] = r.image
            out = self.pipeline(**options)
            return [list(video) for video in out.frames]
        options["num_images_per_prompt"] = r.n
        options["output_type"] = "pil"
        return list(self.pipeline(**options).images)

    async def aclose(self) -> None:
        self.pipeline = None


def _rules(pipeline: Any, *, video: bool) -> Rules:
    """Size and frame rules from the pipeline's own components."""
    spatial = int(
        getattr(pipeline, "vae_scale_factor_spatial", 0)
        or getattr(pipeline, "vae_scale_factor", 0)
        or 8
    )
    denoiser = getattr(pipeline, "transformer", None) or getattr(pipeline, "unet", None)
    patch = getattr(getattr(denoiser, "config", None), "patch_size", None) or 1
    if isinstance(patch, list | tuple):  # Wan: (t, h, w)
        patch = patch[-1]
    multiple = spatial * int(patch) * (2 if type(pipeline).__name__.startswith(PACKED) else 1)
    config = getattr(getattr(denoiser, "config", None), "sample_size", None)
    side = int(config) * spatial if isinstance(config, int) and config > 0 else 64 * spatial
    temporal = int(getattr(pipeline, "vae_scale_factor_temporal", 0) or 4) if video else 1
    fixed, fixed_frames = None, None
    options = getattr(denoiser, "config", None)
    learned = options is not None and getattr(options, "use_learned_positional_embeddings", None)
    rotary = getattr(options, "use_rotary_positional_embeddings", True)
    if options is not None and (learned or rotary is False) and hasattr(options, "sample_width"):
        fixed = (int(options.sample_width) * spatial, int(options.sample_height) * spatial)
        fixed_frames = int(getattr(options, "sample_frames", 0)) or None
    return Rules(
        multiple=multiple, default_size=fixed or (side, side), video=video, temporal=temporal,
        default_frames=fixed_frames or (temporal * 4 + 1 if video else 1), fixed=fixed,
        fixed_frames=fixed_frames,
    )  # fmt: skip
