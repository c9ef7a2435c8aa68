"""Image and video generation through diffusers: tiny random pipelines built in code, imported
into a store and served through the OpenAI image and video APIs."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from kaiyuan.store.store import Store
from tests import diffusion_models
from tests.harness import KaiyuanServer

pytestmark = pytest.mark.slow
SD = "tiny-sd"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KaiyuanServer]:
    home = tmp_path_factory.mktemp("diffusion-home")
    store = Store(home)
    sd = diffusion_models.stable_diffusion(tmp_path_factory.mktemp("sd"))
    record = store.install(SD, [sd], move=False, source="test")
    assert record.format == "diffusers" and record.capabilities == ["image"]
    with KaiyuanServer(home=home, args=["--threads", "1"]) as running:
        yield running


def decode(b64: str | None) -> Image.Image:
    assert b64 is not None
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_image_has_the_requested_size_and_a_seed_repeats_its_pixels(server: KaiyuanServer) -> None:
    client = server.client()

    def make(seed: int) -> np.ndarray:
        result = client.images.generate(
            model=SD, prompt="a red cat", size="64x32", n=1,
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
    assert httpx.get(server.url + "/v1/media/../../etc/passwd").status_code == 404
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
