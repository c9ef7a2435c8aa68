"""OpenAI's video API as jobs: POST /v1/videos, GET /v1/videos[/{id}[/content]], DELETE.

The create call takes JSON or multipart form data (the openai SDK sends the latter, with an
optional ``input_reference`` image for image-to-video). Beyond OpenAI's fields kaiyuan reads
``frames``, ``fps``, ``steps``, ``seed``, ``guidance_scale`` and ``negative_prompt``.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import ValidationError

from kaiyuan.engines.base import MediaEngine, MediaRequest
from kaiyuan.errors import InvalidRequest
from kaiyuan.extras import require
from kaiyuan.protocol.openai.media import Video, VideoDeleteResponse, VideoList, VideoRequest
from kaiyuan.server.errors import ERROR_RESPONSES
from kaiyuan.server.routes.images import check_pixels, parse_size
from kaiyuan.server.routing import ApiRoute
from kaiyuan.server.shared import video_jobs

router = APIRouter(tags=["videos"], route_class=ApiRoute)


@router.post("/v1/videos", response_model=Video, responses=ERROR_RESPONSES)
async def create_video(request: Request) -> Video:
    require("diffusion", "video generation")
    from kaiyuan.media.jobs import run

    body, reference = await _body(request)
    state = request.app.state
    engine = await state.pool.acquire(body.model, MediaEngine, "video", route="/v1/videos")
    rules = engine.rules
    width, height = parse_size(body.size, rules.default_size)
    frames = body.frames
    if frames is None:
        frames = round(float(body.seconds) * body.fps) if body.seconds else rules.default_frames
    steps = body.steps if body.steps is not None else 30
    rules.check(width, height, frames, steps)
    check_pixels(width * height * frames, state.settings.media_max_pixels)
    if reference is not None and not engine.takes_image:
        raise InvalidRequest(
            f"model '{body.model}' makes videos from text only; it cannot take an "
            "input_reference image",
            param="input_reference",
        )
    if reference is None and engine.needs_image:
        raise InvalidRequest(
            f"model '{body.model}' makes videos from a first frame: send an input_reference image",
            param="input_reference",
        )
    params = {"width": width, "height": height, "frames": frames, "fps": body.fps,
              "steps": steps, "seed": body.seed, "guidance_scale": body.guidance_scale}  # fmt: skip
    jobs = video_jobs(request)
    created = jobs.create(body.model, body.prompt, params)
    job = MediaRequest(
        prompt=body.prompt, width=width, height=height, steps=steps, seed=body.seed,
        guidance_scale=body.guidance_scale, negative_prompt=body.negative_prompt,
        frames=frames, image=reference,
    )  # fmt: skip
    task = asyncio.create_task(run(jobs, created.id, engine, job, body.fps))
    jobs.tasks.add(task)
    task.add_done_callback(jobs.tasks.discard)
    return created


async def _body(request: Request) -> tuple[VideoRequest, Any]:
    kind = request.headers.get("content-type", "")
    reference = None
    if kind.startswith("multipart/form-data"):
        form = await request.form()
        fields: dict[str, Any] = {}
        for key, value in form.multi_items():
            if key == "input_reference" and hasattr(value, "read"):
                reference = _image(await value.read())
            else:
                fields[key] = value
    else:
        try:
            fields = await request.json()
        except ValueError:
            raise InvalidRequest("the body must be JSON or multipart form data") from None
        if not isinstance(fields, dict):
            raise InvalidRequest("the body must be a JSON object")
    try:
        return VideoRequest.model_validate(fields), reference
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"{where}: {first['msg']}", param=where or None) from None


def _image(data: bytes) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as probe:
            return probe.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError):
        raise InvalidRequest("input_reference is not an image", param="input_reference") from None


@router.get("/v1/videos", response_model=VideoList, responses=ERROR_RESPONSES)
async def list_videos(request: Request) -> VideoList:
    return VideoList(data=video_jobs(request).list())


@router.get("/v1/videos/{video_id}", response_model=Video, responses=ERROR_RESPONSES)
async def get_video(video_id: str, request: Request) -> Video:
    return video_jobs(request).get(video_id)


@router.get("/v1/videos/{video_id}/content", responses=ERROR_RESPONSES)
async def get_video_content(video_id: str, request: Request) -> FileResponse:
    return FileResponse(video_jobs(request).path(video_id), media_type="video/mp4")


@router.delete(
    "/v1/videos/{video_id}", response_model=VideoDeleteResponse, responses=ERROR_RESPONSES
)
async def delete_video(video_id: str, request: Request) -> VideoDeleteResponse:
    return video_jobs(request).delete(video_id)
