"""GGUF embedding models through llama.cpp: the bundled all-MiniLM-L6-v2, converted to GGUF with
llama.cpp's own converter (fetched by `make test` from the pinned llama-cpp-python sdist),
imported with `kaiyuan import` and served beside the sentence-transformers original."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from kaiyuan.store import bundled
from tests.harness import KAIYUAN, KaiyuanServer

pytestmark = pytest.mark.slow
CONVERTER = Path(sys.prefix) / "llama.cpp-convert"
GGUF_ID = "minilm-gguf"
TEXTS = [
    "A cat sits on the mat.",
    "A kitten is resting on a rug.",
    "The stock market fell sharply today.",
]


def convert_minilm(out: Path) -> Path:
    script = CONVERTER / "convert_hf_to_gguf.py"
    assert script.exists(), f"{script} is missing: `make test` fetches llama.cpp's converter"
    _, folder = bundled.resolve("all-minilm-l6-v2")
    target = out / "all-MiniLM-L6-v2-f16.gguf"
    subprocess.run(
        [sys.executable, str(script), str(folder), "--outfile", str(target), "--outtype", "f16"],
        cwd=CONVERTER, env={"PYTHONPATH": str(CONVERTER / "gguf-py"), "HF_HUB_OFFLINE": "1"},
        check=True, capture_output=True,
    )  # fmt: skip
    return target


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KaiyuanServer]:
    home = tmp_path_factory.mktemp("gguf-embed-home")
    gguf = convert_minilm(tmp_path_factory.mktemp("gguf"))
    env = {"KAIYUAN_HOME": str(home), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [KAIYUAN, "import", str(gguf), "--name", GGUF_ID], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    with KaiyuanServer(home=home, args=["--threads", "1"]) as running:
        yield running


def embed(server: KaiyuanServer, model: str, texts: list[str]) -> np.ndarray:
    reply = server.client().embeddings.create(model=model, input=texts)
    return np.array([d.embedding for d in reply.data])


def test_listed_as_a_gguf_embedding_model(server: KaiyuanServer) -> None:
    models = {m["id"]: m for m in httpx.get(server.url + "/v1/models").json()["data"]}
    assert models[GGUF_ID]["capabilities"] == ["embedding"]
    assert models[GGUF_ID]["format"] == "gguf" and models[GGUF_ID]["architecture"] == "bert"


def test_gguf_vectors_match_the_sentence_transformers_original(server: KaiyuanServer) -> None:
    gguf, original = embed(server, GGUF_ID, TEXTS), embed(server, "all-minilm-l6-v2", TEXTS)
    assert gguf.shape == original.shape == (3, 384)
    assert np.allclose(np.linalg.norm(gguf, axis=1), 1.0, atol=1e-4)
    assert np.all(np.sum(gguf * original, axis=1) > 0.999)  # f16 weights, same model
    assert gguf[0] @ gguf[1] > gguf[0] @ gguf[2] + 0.3


def test_usage_base64_and_errors(server: KaiyuanServer) -> None:
    client = server.client()
    floats = client.embeddings.create(model=GGUF_ID, input="hello world")
    original = client.embeddings.create(model="all-minilm-l6-v2", input="hello world")
    assert floats.usage.prompt_tokens == original.usage.prompt_tokens == 4  # [CLS] x x [SEP]
    raw = httpx.post(
        server.url + "/v1/embeddings",
        json={"model": GGUF_ID, "input": "hello world", "encoding_format": "base64"},
    ).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), "<f4")
    assert np.allclose(decoded, floats.data[0].embedding, atol=1e-6)
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model=GGUF_ID, input="x", dimensions=128)
    assert isinstance(err.value.body, dict) and err.value.body["param"] == "dimensions"
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model=GGUF_ID, input="word " * 600)
    assert isinstance(err.value.body, dict) and "at most 512" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=GGUF_ID, messages=[{"role": "user", "content": "hi"}])
    assert isinstance(err.value.body, dict) and "embedding" in err.value.body["message"]
