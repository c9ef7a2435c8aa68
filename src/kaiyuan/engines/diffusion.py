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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaiyuan.engines.base import Engine, EventStream, ModelInfo, SamplingParams
from kaiyuan.errors import EngineFailure, InvalidRequest, KaiyuanError

log = logging.getLogger(__name__)
VIDEO_CLASSES = ("Wan", "CogVideoX", "LTX", "HunyuanVideo")
PACKED = ("Flux", "QwenImage", "Chroma")  # latents packed 2x2 into tokens


class Cancelled(KaiyuanError):
    status = 499
    code = "cancelled"


@dataclass(slots=True, frozen=True)
class Rules:
    multiple: int  # width and height must be multiples of this
    default_size: tuple[int, int]  # (width, height)
    video: bool
    temporal: int = 1  # frames must be temporal * k + 1 (video)
    default_frames: int = 1
    max_steps: int = 150
    fixed: tuple[int, int] | None = None  # learned position tables: only this (width, height)
    fixed_frames: int | None = None  # ... and only this many frames

    def check(self, width: int, height: int, frames: int | None, steps: int) -> None:
        if self.fixed is not None and (width, height) != self.fixed:
            raise InvalidRequest(
                f"size {width}x{height} is not allowed: this pipeline makes only "
                f"{self.fixed[0]}x{self.fixed[1]} (its position embeddings are learned for it)",
                param="size",
            )
        if self.fixed_frames is not None and frames is not None and frames != self.fixed_frames:
            raise InvalidRequest(
                f"{frames} frames are not allowed: this pipeline makes only {self.fixed_frames}",
                param="frames",
            )
        if width % self.multiple or height % self.multiple:
            raise InvalidRequest(
                f"size {width}x{height} is not allowed: this pipeline needs width and height "
                f"divisible by {self.multiple}",
                param="size",
            )
        if not 1 <= steps <= self.max_steps:
            raise InvalidRequest(
                f"steps must be between 1 and {self.max_steps}, got {steps}", param="steps"
            )
        if self.video and frames is not None and (frames < 1 or (frames - 1) % self.temporal):
            raise InvalidRequest(
                f"{frames} frames are not allowed: this pipeline needs a frame count of the "
                f"form {self.temporal}k+1 (e.g. {self.temporal * 4 + 1})",
                param="frames",
            )


@dataclass(slots=True)
class MediaRequest:
    prompt: str
    width: int
    height: int
    steps: int
    n: int = 1
    seed: int | None = None
    guidance_scale: float | None = None
    negative_prompt: str | None = None
    frames: int | None = None  # video only
    image: Any = None  # a PIL image for image-to-video
    progress: Callable[[int, int], None] | None = None  # (step, steps)
    cancelled: threading.Event | None = None


class DiffusionEngine(Engine):
    def __init__(
        self,
        *,
        model_id: str,
        path: Path,
        threads: int | None = None,
        created: int = 0,
        owned_by: str = "kaiyuan",
        trust_remote_code: bool = False,
        **_: Any,
    ) -> None:
        import torch
        from diffusers import DiffusionPipeline
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        from kaiyuan.engines.torch_device import place

        for library in (diffusers_logging, transformers_logging):  # loading bars and notices
            library.disable_progress_bar()
            library.set_verbosity_error()
        self.device, self.dtype = place(threads)
        self._torch = torch
        try:
            pipeline: Any = DiffusionPipeline.from_pretrained(
                str(path), local_files_only=True, use_safetensors=True, dtype=self.dtype,
                trust_remote_code=trust_remote_code,
            )  # fmt: skip
        except (OSError, ValueError) as exc:  # e.g. a component's weights are missing
            reason = str(exc).splitlines()[0].replace(str(path), "<model>")[:300]
            raise EngineFailure(f"model '{model_id}' cannot be loaded: {reason}") from None
        for component in pipeline.components.values():
            if hasattr(component, "eval"):
                component.eval()  # dropout off: a seed gives the same pixels
        self.pipeline = pipeline.to(self.device)
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
            context_length=0,
            chat_template=None,
            capabilities=("video",) if self.rules.video else ("image",),
            created=created,
            owned_by=owned_by,
        )
        self._lock = threading.Lock()
        self._busy = 0

    @property
    def in_flight(self) -> int:
        return self._busy

    @property
    def alive(self) -> bool:
        return True

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        raise self._not_text()

    def generate(self, prompt: list[int], params: SamplingParams, media: Any = None) -> EventStream:
        raise self._not_text()

    def _not_text(self) -> InvalidRequest:
        what = "/v1/videos" if self.rules.video else "/v1/images/generations"
        return InvalidRequest(
            f"model '{self.info.id}' generates {self.info.capabilities[0]}s (its capabilities: "
            f"{', '.join(self.info.capabilities)}); use {what}",
            param="model",
        )

    def generate_media(self, request: MediaRequest) -> list[Any]:
        """PIL images (one per image), or for video one list of PIL frames per video. Blocks:
        call it from a worker thread."""
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
