"""``kaiyuan image`` / ``kaiyuan video`` choosing their model: ``-m`` may be left out when one
suitable model is installed, and a missing model is named with the command that pulls it."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from click.testing import CliRunner, Result
from fastapi import FastAPI

import kaiyuan.machine
from kaiyuan.cli.main import cli
from kaiyuan.cli.media import choose_model
from kaiyuan.config import Settings
from kaiyuan.machine import Machine
from kaiyuan.store.store import Store
from tests.tinymodels import write_tiny_diffusers_pipeline

GIB = 2**30


@pytest.fixture
def home() -> Path:
    return Path(os.environ["KAIYUAN_HOME"])  # conftest's per-test home


@pytest.fixture(autouse=True)
def _machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reported 2-core, 24 GiB machine, so the recommended pipelines are known."""
    machine = Machine(cpus=2, total_memory=24 * GIB, available_memory=20 * GIB, gpus=())
    monkeypatch.setattr(kaiyuan.machine, "this_machine", lambda: machine)


def install(home: Path, tmp_path: Path, model_id: str, class_name: str) -> None:
    folder = write_tiny_diffusers_pipeline(tmp_path / model_id, class_name=class_name)
    Store(home).install(model_id, [folder], move=False, source="test")


def one_line_error(result: Result) -> str:
    assert result.exit_code == 1, (result.output, result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0].removeprefix("error: ")


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_a_catalogue_model_that_is_not_installed_names_its_pull_command(
    tmp_path: Path,
) -> None:
    out = str(tmp_path / "x.mp4")
    line = one_line_error(run_cli("video", "waves", "-m", "wan2.1-t2v-1.3b", "-o", out))
    assert line == "model 'wan2.1-t2v-1.3b' is not installed: run `kaiyuan pull wan2.1-t2v-1.3b`"
    line = one_line_error(run_cli("image", "a fox", "-m", "qwen-image", "-o", "x.png"))
    assert line == "model 'qwen-image' is not installed: run `kaiyuan pull qwen-image`"
    assert not Path(out).exists()


def test_without_m_and_nothing_installed_the_recommended_pipeline_is_named() -> None:
    line = one_line_error(run_cli("video", "waves"))
    # wan2.1-t2v-1.3b is recommend's video pick for this machine.
    assert line == (
        "no video model is installed; pull the catalogue's video model for this machine: "
        "`kaiyuan pull wan2.1-t2v-1.3b`"
    )
    line = one_line_error(run_cli("image", "a fox"))
    assert line.startswith("no image model is installed; the catalogue's smallest image model,")
    assert "`kaiyuan pull qwen-image`" in line and "kaiyuan import" in line  # too big for 24 GiB


def test_m_may_be_left_out_when_one_model_fits(home: Path, tmp_path: Path) -> None:
    settings = Settings(home=home)
    install(home, tmp_path, "my-sd", "StableDiffusionPipeline")
    install(home, tmp_path, "wan2.1-t2v-1.3b", "WanPipeline")

    assert choose_model(settings, "image", None, None) == "my-sd"
    assert choose_model(settings, "video", None, None) == "wan2.1-t2v-1.3b"
    # A catalogue name of an installed model is that model.
    assert choose_model(settings, "video", "wan2.1:1.3b", None) == "wan2.1-t2v-1.3b"
    assert choose_model(settings, "image", "my-sd", None) == "my-sd"


def test_several_models_ask_for_a_choice(home: Path, tmp_path: Path) -> None:
    install(home, tmp_path, "wan-a", "WanPipeline")
    install(home, tmp_path, "wan-b", "WanPipeline")

    line = one_line_error(run_cli("video", "waves"))
    assert line == "several video models are installed (wan-a, wan-b): choose one with -m"


def test_the_wrong_kind_of_model_is_refused_before_any_server_starts(
    home: Path, tmp_path: Path
) -> None:
    install(home, tmp_path, "my-sd", "StableDiffusionPipeline")

    line = one_line_error(run_cli("video", "waves", "-m", "my-sd"))
    assert line.startswith("model 'my-sd' makes no videos (capabilities: image); ")
    assert "`kaiyuan pull wan2.1-t2v-1.3b`" in line
    line = one_line_error(run_cli("image", "a fox", "-m", "qwen3:8b"))
    assert line.startswith("'qwen3:8b' makes no images (a catalogue chat, tools, reasoning")


def test_a_typo_gets_the_installed_model_it_meant(home: Path, tmp_path: Path) -> None:
    install(home, tmp_path, "my-wan", "WanPipeline")

    line = one_line_error(run_cli("video", "waves", "-m", "my-wna"))
    assert line == "model 'my-wna' is not installed; did you mean 'my-wan'?"


# --- a running server (--url): its own list of models decides ------------------------------------
@pytest.fixture
def remote() -> Iterator[tuple[str, list[dict[str, object]]]]:
    """A server listing whatever models the test puts in the returned list."""
    listed: list[dict[str, object]] = []
    app = FastAPI()

    @app.get("/v1/models")
    def models() -> dict[str, object]:
        return {"object": "list", "data": listed}

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", listed
    server.should_exit = True
    thread.join(10)


def _model(model_id: str, *capabilities: str) -> dict[str, object]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "x",
            "capabilities": list(capabilities)}  # fmt: skip


def test_with_url_the_servers_one_model_is_used(
    remote: tuple[str, list[dict[str, object]]], home: Path
) -> None:
    url, listed = remote
    settings = Settings(home=home)
    listed += [_model("chatty", "chat"), _model("remote-sd", "image")]
    assert choose_model(settings, "image", None, url) == "remote-sd"
    assert choose_model(settings, "image", "whatever", url) == "whatever"  # the server judges

    line = one_line_error(run_cli("video", "waves", "--url", url))
    assert line == f"the server at {url} lists no video model: name one with -m"
    listed.append(_model("remote-sd2", "image"))
    line = one_line_error(run_cli("image", "a fox", "--url", url))
    assert line == (
        "the server serves several image models (remote-sd, remote-sd2): choose one with -m"
    )


# --- end to end: a real tiny pipeline, no -m ---------------------------------------------------
@pytest.mark.slow
def test_image_without_m_generates_with_the_one_image_model(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    from tests import diffusion_models
    from tests.harness import KAIYUAN

    home = tmp_path / "home"
    sd = diffusion_models.stable_diffusion(tmp_path / "sd")
    Store(home).install("tiny-sd", [sd], move=False, source="test")
    png = tmp_path / "fox.png"
    env = {"KAIYUAN_HOME": str(home), "PATH": "/usr/bin:/bin", "KAIYUAN_THREADS": "1"}
    done = subprocess.run(
        [KAIYUAN, "image", "a fox", "-o", str(png), "--size", "32x32", "--steps", "1",
         "--seed", "1"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"saved {png}" in done.stdout
