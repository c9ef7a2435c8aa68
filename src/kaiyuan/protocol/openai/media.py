"""POST /v1/images/generations and the video jobs of /v1/videos."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

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
