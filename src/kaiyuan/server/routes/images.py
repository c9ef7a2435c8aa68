"""POST /v1/images/generations, and GET /v1/media/{name} for images and videos returned as URLs."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from kaiyuan.engines.base import MediaEngine, MediaRequest
from kaiyuan.errors import InvalidRequest, NotFound
from kaiyuan.extras import require
from kaiyuan.protocol.openai.media import Image, ImageRequest, ImagesResponse
from kaiyuan.server.errors import ERROR_RESPONSES
from kaiyuan.server.routing import ApiRoute

router = APIRouter(tags=["images"], route_class=ApiRoute)
MEDIA_NAME = re.compile(r"^[0-9a-f]{32}\.(png|mp4)$")


@router.post(
    "/v1/images/generations",
    response_model=ImagesResponse,
    response_model_exclude_none=True,  # an image carries b64_json or url, never both
    responses=ERROR_RESPONSES,
)
async def create_images(body: ImageRequest, request: Request) -> ImagesResponse:
    require("diffusion", "image generation")
    state = request.app.state
    engine = await state.pool.acquire(
        body.model, MediaEngine, "image", route="/v1/images/generations"
    )
    rules = engine.rules
    width, height = parse_size(body.size, rules.default_size)
    steps = body.steps if body.steps is not None else 30
    rules.check(width, height, None, steps)
    check_pixels(width * height * body.n, state.settings.media_max_pixels)
    job = MediaRequest(
        prompt=body.prompt, width=width, height=height, steps=steps, n=body.n, seed=body.seed,
        guidance_scale=body.guidance_scale, negative_prompt=body.negative_prompt,
    )  # fmt: skip
    images = await asyncio.to_thread(engine.generate_media, job)
    data = []
    for image in images:
        png = to_png(image)
        if body.response_format == "url":
            data.append(Image(url=save_media(request, state.settings.home, png, "png")))
        else:
            data.append(Image(b64_json=base64.b64encode(png).decode()))
    return ImagesResponse(created=int(time.time()), data=data)


@router.get("/v1/media/{name}", responses=ERROR_RESPONSES)
async def get_media(name: str, request: Request) -> FileResponse:
    path = media_dir(request.app.state.settings.home) / name
    if not MEDIA_NAME.match(name) or not path.is_file():
        raise NotFound(f"no media '{name[:80]}'", param="name")
    kind = "image/png" if name.endswith(".png") else "video/mp4"
    return FileResponse(path, media_type=kind)


def parse_size(size: str | None, default: tuple[int, int]) -> tuple[int, int]:
    if size is None or size == "auto":
        return default
    match = re.fullmatch(r"(\d{1,5})x(\d{1,5})", size)
    if match is None:
        raise InvalidRequest(f"size must look like 1024x768, got '{size[:40]}'", param="size")
    width, height = int(match.group(1)), int(match.group(2))
    if width < 1 or height < 1:
        raise InvalidRequest("size must be positive", param="size")
    return width, height


def check_pixels(pixels: int, limit: int) -> None:
    if pixels > limit:
        raise InvalidRequest(
            f"this request would produce {pixels} pixels, more than the {limit} allowed "
            "(media_max_pixels); ask for fewer or smaller outputs",
            param="size",
        )


def to_png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def media_dir(home: Path) -> Path:
    return home / "media"


def save_media(request: Request, home: Path, data: bytes, suffix: str) -> str:
    folder = media_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{uuid.uuid4().hex}.{suffix}"
    (folder / name).write_bytes(data)
    return str(request.url_for("get_media", name=name))
