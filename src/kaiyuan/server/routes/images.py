"""POST /v1/images/generations, GET /v1/media/{name} for images and videos returned as URLs, and
the images kept that way: GET /v1/kaiyuan/media (newest first, with their settings) and DELETE
/v1/kaiyuan/media/{name} (media/gallery.py)."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import secrets
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse

from kaiyuan.engines.base import MediaEngine, MediaRequest
from kaiyuan.errors import InvalidRequest, NotFound
from kaiyuan.extras import require
from kaiyuan.media.gallery import Gallery
from kaiyuan.protocol.kaiyuan.media import MediaDeleted, MediaList
from kaiyuan.protocol.openai.media import Image, ImageRequest, ImagesResponse
from kaiyuan.server.auth import key_of
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
    # The engine would draw a random seed anyway; drawn here, it is kept with a saved image.
    seed = body.seed if body.seed is not None else secrets.randbelow(2**32)
    job = MediaRequest(
        prompt=body.prompt, width=width, height=height, steps=steps, n=body.n, seed=seed,
        guidance_scale=body.guidance_scale, negative_prompt=body.negative_prompt,
    )  # fmt: skip
    images = await asyncio.to_thread(engine.generate_media, job)
    settings = {"model": body.model, "prompt": body.prompt, "negative_prompt": body.negative_prompt,
                "size": f"{width}x{height}", "steps": steps, "seed": seed,
                "guidance_scale": body.guidance_scale}  # fmt: skip
    data = []
    for image in images:
        png = to_png(image)
        if body.response_format == "url":
            name = await asyncio.to_thread(gallery(request).save, png, _owner(request), settings)
            data.append(Image(url=str(request.url_for("get_media", name=name))))
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


@router.get("/v1/kaiyuan/media", response_model=MediaList, responses=ERROR_RESPONSES)
async def list_media(
    request: Request, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> MediaList:
    """The images this server kept for the request's key (``response_format: "url"``), newest
    first, each with the model, prompt and settings it was made with."""
    items = await asyncio.to_thread(gallery(request).list, _owner(request), limit)
    return MediaList(data=items)


@router.delete("/v1/kaiyuan/media/{name}", response_model=MediaDeleted, responses=ERROR_RESPONSES)
async def delete_media(name: str, request: Request) -> MediaDeleted:
    await asyncio.to_thread(gallery(request).delete, _owner(request), name)
    return MediaDeleted(id=name)


def gallery(request: Request) -> Gallery:
    return Gallery(media_dir(request.app.state.settings.home))


def _owner(request: Request) -> str | None:
    key = key_of(request)
    return key.id if key is not None else None


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
