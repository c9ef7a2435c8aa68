"""``kaiyuan image`` and ``kaiyuan video``: generate through the OpenAI image and video APIs of
an in-process server (or a running one with ``--url``), with a progress bar."""

from __future__ import annotations

import base64
import contextlib
import time
from pathlib import Path
from typing import Any

import click
import openai

from kaiyuan.config import Settings
from kaiyuan.errors import InvalidRequest, KaiyuanError


class GenerationFailed(KaiyuanError):
    status = 0


def _endpoint(settings: Settings, model: str, url: str | None) -> Any:
    from kaiyuan.cli.chat import _base_url, embedded_server

    if url:
        return contextlib.nullcontext(_base_url(url))
    return embedded_server(settings.model_copy(update={"models": [model]}))


def _extra(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def image(
    settings: Settings, prompt: str, *, model: str, out: Path, url: str | None, **options: Any
) -> None:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    if out.suffix.lower() != ".png":
        raise InvalidRequest("the output file must end in .png", param="output")
    with _endpoint(settings, model, url) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="kaiyuan", max_retries=0, timeout=3600)
        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        with Progress(*columns, transient=True) as progress:
            progress.add_task(f"generating with {model}", total=None)
            result = _call(lambda: client.images.generate(
                model=model, prompt=prompt, size=options.pop("size", None) or "auto",
                extra_body=_extra(**options),
            ))  # fmt: skip
    data = result.data[0].b64_json if result.data else None
    if data is None:
        raise GenerationFailed("the server returned no image")
    out.write_bytes(base64.b64decode(data))
    click.echo(f"saved {out}")


def video(
    settings: Settings,
    prompt: str,
    *,
    model: str,
    out: Path,
    url: str | None,
    image_path: Path | None,
    **options: Any,
) -> None:
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeElapsedColumn

    if out.suffix.lower() != ".mp4":
        raise InvalidRequest("the output file must end in .mp4", param="output")
    extra: dict[str, Any] = {}
    if image_path is not None:
        extra["input_reference"] = (image_path.name, image_path.read_bytes(), "image/png")
    size = options.pop("size", None)
    with _endpoint(settings, model, url) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="kaiyuan", max_retries=0)
        job = _call(lambda: client.videos.create(
            model=model, prompt=prompt, **({"size": size} if size else {}),
            extra_body=_extra(**options), **extra,
        ))  # fmt: skip
        columns = (BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
        with Progress(*columns, transient=True) as progress:
            bar = progress.add_task(f"generating with {model}", total=100)
            while job.status in ("queued", "in_progress"):
                time.sleep(0.5)
                job = _call(lambda job_id=job.id: client.videos.retrieve(job_id))
                progress.update(bar, completed=job.progress)
        if job.status != "completed":
            reason = job.error.message if job.error else job.status
            raise GenerationFailed(f"the video failed: {reason}")
        out.write_bytes(client.videos.download_content(job.id).read())
    click.echo(f"saved {out} ({job.size}, {job.seconds} s)")


def _call(function: Any) -> Any:
    try:
        return function()
    except openai.APIStatusError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        raise GenerationFailed(str(body.get("message") or exc.message)) from None
    except openai.APIConnectionError as exc:
        raise GenerationFailed(f"cannot reach the server: {exc}") from None
