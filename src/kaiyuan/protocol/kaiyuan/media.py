"""/v1/kaiyuan/media: the images the server kept (``response_format: "url"``), newest first,
each with the settings it was made with (the web app's media gallery)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class MediaItem(BaseModel):
    object: Literal["media"] = "media"
    id: str  # the file's name: GET /v1/media/{id} serves it
    kind: Literal["image"] = "image"
    created: int  # unix seconds
    model: str
    prompt: str
    negative_prompt: str | None = None
    size: str  # "WIDTHxHEIGHT"
    steps: int
    seed: int  # the server picks one when the request had none, so every image can be remade
    guidance_scale: float | None = None


class MediaList(BaseModel):
    object: Literal["list"] = "list"
    data: list[MediaItem]


class MediaDeleted(BaseModel):
    object: Literal["media.deleted"] = "media.deleted"
    id: str
    deleted: bool = True
