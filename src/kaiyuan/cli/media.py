"""``kaiyuan image`` and ``kaiyuan video``: generate through the OpenAI image and video APIs of
an in-process server (or a running one with ``--url``), with a progress bar.

Without ``-m`` the one installed model that makes images (or videos) is used; a model that is
not installed is named with the command that pulls it before any server starts."""

from __future__ import annotations

import base64
import contextlib
import time
from pathlib import Path
from typing import Any

import click
import openai

from kaiyuan.config import Settings
from kaiyuan.errors import InvalidRequest, KaiyuanError, ModelNotFound, closest


class GenerationFailed(KaiyuanError):
    status = 0


def _endpoint(settings: Settings, model: str, url: str | None) -> Any:
    from kaiyuan.cli.endpoint import api_url, embedded_server

    if url:
        return contextlib.nullcontext(api_url(url))
    return embedded_server(settings.model_copy(update={"models": [model]}))


def _extra(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def choose_model(settings: Settings, kind: str, model: str | None, url: str | None) -> str:
    """The model to generate ``kind`` ("image" or "video") with.

    ``model`` when given (checked against the store when there is no ``url``: a missing one is
    named with the command that pulls it), else the one installed model that makes ``kind``;
    none or several is an error that says which to pull or to choose."""
    if url is not None:
        return model or _only_remote(kind, url)
    from kaiyuan.store.store import Store

    installed = {r.id: r.capabilities for r in Store(settings.home).list()}
    capable = sorted(i for i, caps in installed.items() if kind in caps)
    if model is None:
        return _the_one(
            capable,
            several=f"several {kind} models are installed",
            none=f"no {kind} model is installed; {_suggestion(kind)}",
        )
    if model in installed:
        if kind not in installed[model]:
            caps = ", ".join(installed[model]) or "none"
            raise InvalidRequest(
                f"model '{model}' makes no {kind}s (capabilities: {caps}); {_suggestion(kind)}",
                param="model",
            )
        return model
    entry = _catalogue(model)
    if entry is not None and entry.id in capable:
        return entry.id  # a catalogue name (wan2.1:1.3b) of an installed model
    if entry is not None and kind in entry.capabilities:
        raise ModelNotFound(
            f"model '{model}' is not installed: run `kaiyuan pull {model}`", param="model"
        )
    if entry is not None:
        raise InvalidRequest(
            f"'{model}' makes no {kind}s (a catalogue {', '.join(entry.capabilities)} model); "
            f"{_suggestion(kind)}",
            param="model",
        )
    near = closest(model, capable)
    hint = f"; did you mean '{near}'?" if near else f"; {_suggestion(kind)}"
    raise ModelNotFound(f"model '{model}' is not installed{hint}", param="model")


def _catalogue(name: str) -> Any:
    from kaiyuan.store import naming

    try:
        found = naming.lookup(name)
    except InvalidRequest:
        return None
    return found.model if found else None


def _suggestion(kind: str) -> str:
    """Which catalogue pipeline to pull for ``kind`` on this machine, as a clause."""
    from kaiyuan.machine import model_memory, this_machine
    from kaiyuan.store import recommend

    here = this_machine()
    memory = model_memory(here)
    pick = recommend.pick(kind, memory, None, gpu=bool(here.gpus))
    if pick is not None:
        return f"pull the catalogue's {kind} model for this machine: `{pick.pull}`"
    smallest = recommend.smallest(kind)
    if smallest is None:
        return "import one with `kaiyuan import PATH --name ID`"
    need = recommend.need_gb(smallest)
    return (
        f"the catalogue's smallest {kind} model, {smallest.id}, needs about {need or 0:.0f} GB "
        f"(this machine has {memory / 1e9:.0f} GB): pull it where it fits (`kaiyuan pull "
        f"{smallest.id}`), or add a smaller one with `kaiyuan import PATH --name ID`"
    )


def _only_remote(kind: str, url: str) -> str:
    from kaiyuan.cli.endpoint import api_url

    client = openai.OpenAI(base_url=api_url(url), api_key="kaiyuan", max_retries=0)
    listed = _call(lambda: client.models.list())
    capable = sorted(
        m.id for m in listed.data if kind in ((m.model_extra or {}).get("capabilities") or [])
    )
    return _the_one(
        capable,
        several=f"the server serves several {kind} models",
        none=f"the server at {url} lists no {kind} model: name one with -m",
    )


def _the_one(capable: list[str], *, several: str, none: str) -> str:
    """The only model in ``capable``; none or several is one readable error."""
    if len(capable) == 1:
        return capable[0]
    if capable:
        raise InvalidRequest(f"{several} ({', '.join(capable)}): choose one with -m", param="model")
    raise InvalidRequest(none, param="model")


def image(
    settings: Settings,
    prompt: str,
    *,
    model: str | None,
    out: Path,
    url: str | None,
    **options: Any,
) -> None:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    if out.suffix.lower() != ".png":
        raise InvalidRequest("the output file must end in .png", param="output")
    model = choose_model(settings, "image", model, url)
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
    model: str | None,
    out: Path,
    url: str | None,
    image_path: Path | None,
    **options: Any,
) -> None:
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeElapsedColumn

    if out.suffix.lower() != ".mp4":
        raise InvalidRequest("the output file must end in .mp4", param="output")
    model = choose_model(settings, "video", model, url)
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
