"""``image_url`` content parts -> decoded RGB images, within limits (security guide T5, T16).

A part is a ``data:image/...;base64,`` URL or an http(s) URL fetched through the SSRF-safe
fetcher (``net/fetch.py``) with size and time caps. Every image is checked before it is
decoded (encoded size, then width x height from the header, so a decompression bomb is refused
unread) and then decoded fully, so a truncated or corrupt file is a 400 here rather than a
failure inside the engine. Resizing is the model's own processor's job (its pixel rules).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kaiyuan.errors import InvalidRequest
from kaiyuan.net.fetch import fetch

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")


@dataclass(slots=True, frozen=True)
class ImageRef:
    url: str
    param: str  # where it was in the request, for errors: messages[i].content[j]


@dataclass(slots=True, frozen=True)
class Limits:
    max_images: int
    max_bytes: int
    max_pixels: int
    timeout: float


Fetch = Callable[..., Any]


async def load(
    refs: list[ImageRef], limits: Limits, *, capabilities: str, fetcher: Fetch = fetch
) -> list[Any]:
    """Decoded PIL images in order; a 400 (naming ``capabilities``) for any bad one."""
    if len(refs) > limits.max_images:
        raise InvalidRequest(
            f"at most {limits.max_images} images are accepted per request, got {len(refs)}",
            param=refs[limits.max_images].param,
        )
    return [await _load_one(ref, limits, capabilities, fetcher) for ref in refs]


async def _load_one(ref: ImageRef, limits: Limits, capabilities: str, fetcher: Fetch) -> Any:
    def bad(reason: str) -> InvalidRequest:
        return InvalidRequest(
            f"{reason} (this model's capabilities: {capabilities})", param=ref.param
        )

    if ref.url.startswith("data:"):
        data = _data_url(ref.url, limits.max_bytes, bad)
    elif ref.url.startswith(("http://", "https://")):
        got = await asyncio.to_thread(
            fetcher, ref.url, max_bytes=limits.max_bytes, timeout=limits.timeout, param=ref.param
        )
        if got.status != 200:
            raise bad(f"fetching the image gave HTTP {got.status}")
        data = got.body
    else:
        raise bad("an image_url must be a data: URL or an http(s) URL")
    return await asyncio.to_thread(_decode, data, limits, bad)


def _data_url(url: str, max_bytes: int, bad: Callable[[str], InvalidRequest]) -> bytes:
    head, sep, payload = url.partition(",")
    if not sep or not head.startswith("data:image/") or not head.endswith(";base64"):
        raise bad("a data URL image must look like data:image/png;base64,...")
    if len(payload) > (max_bytes * 4) // 3 + 4:
        raise bad(f"the image is larger than {max_bytes} bytes")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise bad("the data URL is not valid base64") from None


def _decode(data: bytes, limits: Limits, bad: Callable[[str], InvalidRequest]) -> Any:
    from PIL import Image, UnidentifiedImageError

    if len(data) > limits.max_bytes:
        raise bad(f"the image is larger than {limits.max_bytes} bytes")
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as probe:
            width, height = probe.size  # read from the header, before any pixel is decoded
            if width * height > limits.max_pixels:
                raise bad(
                    f"the image is {width}x{height} pixels, more than the {limits.max_pixels} "
                    "accepted"
                )
            probe.seek(0)  # the first frame of an animation
            image = probe.convert("RGB")  # decodes every pixel: truncation fails here
    except InvalidRequest:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise bad(
            f"the image could not be decoded (accepted formats: {', '.join(FORMATS)})"
        ) from None
    return image
