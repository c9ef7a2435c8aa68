"""Frames -> an MP4 that browsers play: H.264 in yuv420p via imageio-ffmpeg's bundled ffmpeg."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_mp4(frames: list[Any], path: Path, fps: int) -> None:
    import imageio.v2 as imageio
    import numpy as np

    arrays = [np.asarray(frame.convert("RGB")) for frame in frames]
    height, width = arrays[0].shape[:2]
    if width % 2 or height % 2:  # yuv420p halves chroma: sides must be even
        arrays = [a[: height - height % 2, : width - width % 2] for a in arrays]
    writer = imageio.get_writer(
        str(path), format="FFMPEG", mode="I", fps=fps, codec="libx264",
        pixelformat="yuv420p", macro_block_size=1, output_params=["-movflags", "+faststart"],
    )  # fmt: skip
    try:
        for array in arrays:
            writer.append_data(array)
    finally:
        writer.close()
