"""POST /v1/images/generations and the video jobs of /v1/videos."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from kaiyuan.protocol.openai.common import Request


class ImageRequest(Request):
    model: str
    prompt: str = Field(min_length=1, max_length=10_000)
    n: int = Field(1, ge=1, le=10)
    size: str | None = None
    response_format: Literal["b64_json", "url"] = "b64_json"
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    steps: int | None = Field(None, ge=1)
    guidance_scale: float | None = Field(None, ge=0, le=50)
    negative_prompt: str | None = Field(None, max_length=10_000)
    quality: str | None = None  # accepted for OpenAI clients; not used
    style: str | None = None
    user: str | None = None


class Image(BaseModel):
    """One generated PNG: base64 or a URL, as the request's ``response_format`` asked. The
    route writes it without null fields, so only the one that was asked for is on the wire."""

    b64_json: str | None = None
    url: str | None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[Image]


class VideoRequest(Request):
    model: str
    prompt: str = Field(min_length=1, max_length=10_000)
    size: str | None = None
    seconds: str | None = Field(None, pattern=r"^\d{1,3}(\.\d+)?$")
    frames: int | None = Field(None, ge=1, le=1000)
    fps: int = Field(16, ge=1, le=60)
    steps: int | None = Field(None, ge=1)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    guidance_scale: float | None = Field(None, ge=0, le=50)
    negative_prompt: str | None = Field(None, max_length=10_000)
    user: str | None = None


class VideoError(BaseModel):
    code: str
    message: str


class Video(BaseModel):
    """OpenAI's video job object (every field written, null ones too), plus the frame count
    and rate kaiyuan made it with; ``cancelled`` is a status of kaiyuan's job store."""

    id: str
    object: Literal["video"] = "video"
    model: str
    status: Literal["queued", "in_progress", "completed", "failed", "cancelled"]
    progress: int
    created_at: int
    completed_at: int | None = None
    expires_at: int | None = None
    prompt: str
    seconds: str
    size: str
    error: VideoError | None = None
    remixed_from_video_id: str | None = None
    frames: int
    fps: int


class VideoList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Video]


class VideoDeleteResponse(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool
