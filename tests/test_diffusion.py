"""Image and video generation through diffusers: tiny random pipelines built in code, imported
into a store and served through the OpenAI image and video APIs."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from kaiyuan.store.store import Store
from tests import diffusion_models
from tests.harness import KaiyuanServer

pytestmark = pytest.mark.slow
SD, SDXL, FLUX, WAN, COG = "tiny-sd", "tiny-sdxl", "tiny-flux", "tiny-wan", "tiny-cogvideox"
I2V, QWEN, WAN22 = "tiny-wan-i2v", "tiny-qwen-image", "tiny-wan2.2-a14b"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KaiyuanServer]:
    home = tmp_path_factory.mktemp("diffusion-home")
    store = Store(home)
    sd = diffusion_models.stable_diffusion(tmp_path_factory.mktemp("sd"))
    record = store.install(SD, [sd], move=False, source="test")
    assert record.format == "diffusers" and record.capabilities == ["image"]
    sdxl = diffusion_models.stable_diffusion_xl(tmp_path_factory.mktemp("sdxl"))
    assert store.install(SDXL, [sdxl], move=False, source="test").capabilities == ["image"]
    cog = diffusion_models.cogvideox(tmp_path_factory.mktemp("cogvideox"))
    assert store.install(COG, [cog], move=False, source="test").capabilities == ["video"]
    wan22 = diffusion_models.wan(tmp_path_factory.mktemp("wan22"), two_experts=True)
    assert store.install(WAN22, [wan22], move=False, source="test").capabilities == ["video"]
    qwen = diffusion_models.qwen_image(tmp_path_factory.mktemp("qwen-image"))
    assert store.install(QWEN, [qwen], move=False, source="test").capabilities == ["image"]
    i2v = diffusion_models.wan_image_to_video(tmp_path_factory.mktemp("wan-i2v"))
    assert store.install(I2V, [i2v], move=False, source="test").capabilities == ["video"]
    flux = diffusion_models.flux(tmp_path_factory.mktemp("flux"))
    assert store.install(FLUX, [flux], move=False, source="test").capabilities == ["image"]
    wan = diffusion_models.wan(tmp_path_factory.mktemp("wan"))
    assert store.install(WAN, [wan], move=False, source="test").capabilities == ["video"]
    with KaiyuanServer(home=home, args=["--threads", "1"]) as running:
        yield running


def decode(b64: str | None) -> Image.Image:
    assert b64 is not None
    return Image.open(io.BytesIO(base64.b64decode(b64)))


@pytest.mark.parametrize("model", [SD, SDXL, FLUX, QWEN])
def test_image_has_the_requested_size_and_a_seed_repeats_its_pixels(
    server: KaiyuanServer, model: str
) -> None:
    client = server.client()

    def make(seed: int) -> np.ndarray:
        result = client.images.generate(
            model=model, prompt="a red cat", size="64x32", n=1,
            extra_body={"seed": seed, "steps": 2},
        )  # fmt: skip
        image = decode(result.data[0].b64_json)
        assert image.format == "PNG" and image.size == (64, 32)
        return np.array(image)

    first = make(7)
    assert np.array_equal(first, make(7))
    assert not np.array_equal(first, make(8))


def test_n_images_and_url_responses(server: KaiyuanServer) -> None:
    result = server.client().images.generate(
        model=SD, prompt="hills", size="32x32", n=2, response_format="url",
        extra_body={"seed": 1, "steps": 1},
    )  # fmt: skip
    assert len(result.data) == 2
    for item in result.data:
        assert item.url is not None and item.url.startswith(server.url + "/v1/media/")
        fetched = httpx.get(item.url, timeout=10)
        assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(fetched.content)).size == (32, 32)
    # path traversal, sent raw (httpx would drop the ``..``): tests/test_security.py
    assert httpx.get(server.url + "/v1/media/" + "0" * 32 + ".png").status_code == 404


@pytest.mark.parametrize(
    ("options", "param", "words"),
    [
        ({"size": "33x32"}, "size", "divisible by 2"),  # the tiny VAE halves each side
        ({"size": "big"}, "size", "look like"),
        ({"size": "8200x8200"}, "size", "media_max_pixels"),
        ({"extra_body": {"steps": 1000}}, "steps", "between 1 and"),
    ],
)
def test_rules_are_checked_before_any_work(
    server: KaiyuanServer, options: dict, param: str, words: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        server.client().images.generate(model=SD, prompt="x", **options)
    body = err.value.body
    assert isinstance(body, dict) and body["param"] == param and words in body["message"]


def test_wrong_model_kinds_are_400s(server: KaiyuanServer) -> None:
    client = server.client()
    with pytest.raises(openai.BadRequestError) as err:
        client.images.generate(model="smollm2-135m-instruct", prompt="x")
    assert isinstance(err.value.body, dict) and "capabilities" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=SD, messages=[{"role": "user", "content": "hi"}])
    assert isinstance(err.value.body, dict) and "capabilities: image" in err.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        client.images.generate(model="no-such-model", prompt="x")


# --- video jobs -------------------------------------------------------------------------------
def wait(client: openai.OpenAI, video_id: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        video = client.videos.retrieve(video_id)
        if video.status not in ("queued", "in_progress"):
            return video
        time.sleep(0.2)
    raise AssertionError(f"video {video_id} did not finish")


def make_video(client: openai.OpenAI, seed: int, model: str = WAN, **extra: Any) -> bytes:
    created = client.videos.create(
        model=model, prompt="a fox in the snow", size="32x16",  # type: ignore[arg-type]
        extra_body={"frames": 9, "steps": 2, "seed": seed, "fps": 8, **extra},
    )  # fmt: skip
    assert created.status in ("queued", "in_progress") and created.id.startswith("video_")
    done = wait(client, created.id)
    assert done.status == "completed" and done.progress == 100, done
    assert done.size == "32x16"
    return client.videos.download_content(created.id).read()


def test_video_job_makes_an_mp4_with_the_requested_frames(
    server: KaiyuanServer, tmp_path: Path
) -> None:
    import imageio.v2 as imageio

    client = server.client()
    data = make_video(client, seed=3)
    path = tmp_path / "out.mp4"
    path.write_bytes(data)
    reader = imageio.get_reader(str(path), format="FFMPEG")
    try:
        meta = reader.get_meta_data()
        frames = [frame for frame in reader]
    finally:
        reader.close()
    assert meta["codec"] == "h264" and meta["fps"] == 8 and tuple(meta["size"]) == (32, 16)
    assert len(frames) == 9 and frames[0].shape == (16, 32, 3)  # frames of height x width
    assert make_video(client, seed=3) == data  # same seed, same pixels, same bytes
    assert make_video(client, seed=4) != data


def test_video_rules_and_wrong_inputs(server: KaiyuanServer) -> None:
    client = server.client()
    cases = [
        ({"size": "20x16", "extra_body": {"frames": 9}}, "size", "divisible by 16"),
        ({"size": "32x16", "extra_body": {"frames": 10}}, "frames", "4k+1"),
        ({"size": "4096x4096", "extra_body": {"frames": 81}}, "size", "media_max_pixels"),
    ]
    for options, param, words in cases:
        with pytest.raises(openai.BadRequestError) as err:
            client.videos.create(model=WAN, prompt="x", **options)  # type: ignore[arg-type]
        body = err.value.body
        assert isinstance(body, dict) and body["param"] == param and words in body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.videos.create(model=SD, prompt="x")
    assert isinstance(err.value.body, dict) and "capabilities: image" in err.value.body["message"]
    png = io.BytesIO()
    Image.new("RGB", (32, 16), (9, 9, 9)).save(png, format="PNG")
    with pytest.raises(openai.BadRequestError) as err:
        client.videos.create(
            model=WAN, prompt="x", size="32x16",  # type: ignore[arg-type]
            input_reference=("ref.png", png.getvalue(), "image/png"),
            extra_body={"frames": 9},
        )  # fmt: skip
    assert isinstance(err.value.body, dict) and err.value.body["param"] == "input_reference"


def test_list_delete_and_cancel(server: KaiyuanServer) -> None:
    client = server.client()
    make_video(client, seed=1)
    listed = client.videos.list()
    assert listed.data and all(v.model == WAN for v in listed.data)
    finished = listed.data[0].id
    assert client.videos.delete(finished).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(finished)
    with pytest.raises(openai.NotFoundError):
        client.videos.download_content(finished)
    # a long job, deleted while it runs: it stops and leaves no file
    long = client.videos.create(
        model=WAN, prompt="long", size="32x16",  # type: ignore[arg-type]
        extra_body={"frames": 9, "steps": 150, "seed": 2},
    )  # fmt: skip
    assert client.videos.delete(long.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(long.id)
    time.sleep(1.0)
    assert not list((server.home / "media" / "videos").glob(f"{long.id}*"))


def test_a_restart_marks_unfinished_jobs_failed(tmp_path: Path) -> None:
    from kaiyuan.media.jobs import Jobs

    jobs = Jobs(tmp_path)
    params = {"width": 16, "height": 16, "frames": 9, "fps": 8}
    queued = jobs.create("m", "p", params).id
    jobs.update(running := jobs.create("m", "q", params).id, status="in_progress")
    done = jobs.create("m", "r", params).id
    jobs.update(done, status="completed", progress=100)
    jobs.close()
    again = Jobs(tmp_path)  # the server came back
    for job_id in (queued, running):
        job = again.get(job_id)
        assert job.status == "failed" and "restarted" in job.error.message
    assert again.get(done).status == "completed"
    again.close()


def test_cli_image_and_video(server: KaiyuanServer, tmp_path: Path) -> None:
    import subprocess

    from tests.harness import KAIYUAN

    env = {"KAIYUAN_HOME": str(server.home), "PATH": "/usr/bin:/bin"}

    def kaiyuan(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([KAIYUAN, *args, "--url", server.url], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    png = tmp_path / "fox.png"
    done = kaiyuan("image", "a fox", "-m", SD, "-o", str(png), "--size", "48x32",
                   "--steps", "2", "--seed", "5")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert Image.open(png).size == (48, 32) and f"saved {png}" in done.stdout
    mp4 = tmp_path / "waves.mp4"
    done = kaiyuan("video", "waves", "-m", WAN, "-o", str(mp4), "--size", "32x16",
                   "--frames", "9", "--steps", "2", "--seed", "5", "--fps", "8")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert mp4.read_bytes()[4:8] == b"ftyp" and "32x16" in done.stdout
    bad = kaiyuan("video", "waves", "-m", WAN, "-o", str(tmp_path / "bad.mp4"),
                  "--size", "32x16", "--frames", "8")  # fmt: skip
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0
    assert bad.stderr.startswith("error: 8 frames are not allowed") and "4k+1" in bad.stderr


def test_flux_sides_must_fit_its_packed_latents(server: KaiyuanServer) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        server.client().images.generate(model=FLUX, prompt="x", size="31x32")
    assert isinstance(err.value.body, dict) and "divisible by 2" in err.value.body["message"]


def test_cogvideox_makes_its_one_size_and_frame_count(server: KaiyuanServer) -> None:
    client = server.client()
    created = client.videos.create(
        model=COG, prompt="a fox", size="16x16",  # type: ignore[arg-type]
        extra_body={"frames": 9, "steps": 2, "seed": 1, "fps": 8},
    )  # fmt: skip
    done = wait(client, created.id)
    assert done.status == "completed" and done.size == "16x16"
    assert client.videos.download_content(created.id).read()[4:8] == b"ftyp"
    wrong_size = {"size": "32x16", "extra_body": {"frames": 9}}
    wrong_frames = {"size": "16x16", "extra_body": {"frames": 13}}
    for options, words in [(wrong_size, "makes only 16x16"), (wrong_frames, "makes only 9")]:
        with pytest.raises(openai.BadRequestError) as err:
            client.videos.create(model=COG, prompt="x", **options)  # type: ignore[arg-type]
        assert isinstance(err.value.body, dict) and words in err.value.body["message"]


def test_image_to_video_follows_the_reference_image(server: KaiyuanServer) -> None:
    client = server.client()

    def make(color: tuple[int, int, int]) -> bytes:
        png = io.BytesIO()
        Image.new("RGB", (32, 16), color).save(png, format="PNG")
        created = client.videos.create(
            model=I2V, prompt="it moves", size="32x16",  # type: ignore[arg-type]
            input_reference=("first.png", png.getvalue(), "image/png"),
            extra_body={"frames": 9, "steps": 2, "seed": 4, "fps": 8},
        )  # fmt: skip
        done = wait(client, created.id)
        assert done.status == "completed", done
        return client.videos.download_content(created.id).read()

    red = make((220, 20, 20))
    assert red[4:8] == b"ftyp"
    assert make((220, 20, 20)) == red
    assert make((20, 20, 220)) != red  # the first frame steers the video
    with pytest.raises(openai.BadRequestError) as err:
        client.videos.create(
            model=I2V, prompt="x", size="32x16",  # type: ignore[arg-type]
            input_reference=("bad.png", b"not an image", "image/png"), extra_body={"frames": 9},
        )  # fmt: skip
    assert isinstance(err.value.body, dict) and err.value.body["param"] == "input_reference"
    with pytest.raises(openai.BadRequestError) as err:
        client.videos.create(model=I2V, prompt="x", size="32x16", extra_body={"frames": 9})  # type: ignore[arg-type]
    assert isinstance(err.value.body, dict) and "first frame" in err.value.body["message"]


def test_wan_2_2_two_experts(server: KaiyuanServer) -> None:
    client = server.client()
    first = make_video(client, seed=9, model=WAN22)
    assert first[4:8] == b"ftyp" and make_video(client, seed=9, model=WAN22) == first


def test_missing_weights_are_a_clear_error_naming_the_model(tmp_path: Path) -> None:
    import shutil

    home = tmp_path / "home"
    folder = diffusion_models.stable_diffusion(tmp_path / "sd")
    shutil.rmtree(folder / "unet")  # a download that lost a component
    (folder / "unet").mkdir()
    (folder / "unet" / "config.json").write_text("{}")
    Store(home).install("broken-sd", [folder], move=False, source="test")
    with KaiyuanServer(home=home, args=["--threads", "1"]) as running:
        request = {"model": "broken-sd", "prompt": "x", "size": "16x16"}
        response = httpx.post(running.url + "/v1/images/generations", json=request, timeout=60)
    error = response.json()["error"]
    assert response.status_code == 500 and error["code"] == "engine_error"
    assert error["message"].startswith("model 'broken-sd' cannot be loaded")
    assert str(tmp_path) not in error["message"] and "Traceback" not in response.text
