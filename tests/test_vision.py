"""Images in chat: a tiny random Qwen2.5-VL checkpoint (vision tower, M-RoPE, image processor,
tokenizer with the vision markers) built in code, served end to end through the openai client;
image limits and errors; http(s) images through the SSRF-safe fetcher."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import functools
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from kaiyuan.chat import images
from kaiyuan.errors import InvalidRequest
from kaiyuan.net.fetch import FetchRefused, fetch
from kaiyuan.store.store import Store
from tests.harness import KAIYUAN, KaiyuanServer, LocalWeb
from tests.tinymodels import byte_bpe

pytestmark = pytest.mark.slow

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>"]  # fmt: skip
# Qwen-VL style: an image part becomes <|vision_start|><|image_pad|><|vision_end|>.
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for p in m['content'] %}"
    "{% if p['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ p['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
HF, GGUF = "tiny-qwen2.5-vl", "tiny-qwen2.5-vl-gguf"
PATCH, MERGE = 14, 2
UNIT = PATCH * MERGE  # image sides are resized to multiples of 28
MIN_PIXELS, MAX_PIXELS = (2 * UNIT) ** 2, (4 * UNIT) ** 2


def tiny_qwen25_vl(folder: Path) -> Path:
    import torch
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
    )
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor

    tok = byte_bpe(["What is in this picture? A red square, a blue sky."] * 20, SPECIALS, 300)
    ids = {t: tok.token_to_id(t) for t in SPECIALS}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        chat_template=TEMPLATE,
    )  # fmt: skip
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=1024, tie_word_embeddings=True, bos_token_id=None,
            eos_token_id=ids["<|im_end|>"],
            rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]},
        ),
        vision_config=dict(
            depth=4, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=32,
            patch_size=PATCH, spatial_merge_size=MERGE, temporal_patch_size=2,
            window_size=2 * UNIT, fullatt_block_indexes=[1, 3],
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=None, eos_token_id=ids["<|im_end|>"], tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.save_pretrained(folder, safe_serialization=True)
    fast.save_pretrained(folder)
    processor = Qwen2VLImageProcessor(
        min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, patch_size=PATCH, merge_size=MERGE,
        temporal_patch_size=2,
    )  # fmt: skip
    processor.save_pretrained(folder)
    return folder


def png(width: int, height: int, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def ask(url: str, text: str = "What is in this picture?") -> list[dict[str, Any]]:
    image = {"type": "image_url", "image_url": {"url": url}}
    return [{"role": "user", "content": [image, {"type": "text", "text": text}]}]


# llama.cpp's converter recognises tokenizers by a hash of known models' outputs; the tiny
# tokenizer is byte-level BPE like Qwen's, so the conversion is told to treat it as one.
CONVERT = """
import runpy, sys
sys.path[:0] = ["gguf-py", "."]
from conversion import base, qwenvl
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "qwen2"
qwenvl.Qwen2VLModel.set_vocab = lambda self: self._set_vocab_gpt2()
sys.argv = ["convert_hf_to_gguf.py", *sys.argv[1:]]
runpy.run_path("convert_hf_to_gguf.py", run_name="__main__")
"""


def to_gguf(folder: Path, out: Path) -> Path:
    """The checkpoint as llama.cpp's converter writes it: a model GGUF and its projector."""
    converter = Path(sys.prefix) / "llama.cpp-convert"
    assert converter.exists(), f"{converter} is missing: `make test` fetches llama.cpp's converter"
    out.mkdir(exist_ok=True)
    for name, extra in (
        ("tiny-qwen2.5-vl-f32.gguf", []),
        ("mmproj-tiny-qwen2.5-vl-f32.gguf", ["--mmproj"]),
    ):
        subprocess.run(
            [sys.executable, "-c", CONVERT, str(folder), "--outfile", str(out / name),
             "--outtype", "f32", *extra],
            cwd=converter, check=True, capture_output=True, env={"HF_HUB_OFFLINE": "1"},
        )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KaiyuanServer]:
    home = tmp_path_factory.mktemp("vl-home")
    folder = tiny_qwen25_vl(tmp_path_factory.mktemp("qwen25vl"))
    record = Store(home).install("tiny-qwen2.5-vl", [folder], move=False, source="test")
    assert record.backend == "transformers" and "vision" in record.capabilities
    gguf = to_gguf(folder, tmp_path_factory.mktemp("qwen25vl-gguf"))
    model, projector = gguf / "tiny-qwen2.5-vl-f32.gguf", gguf / "mmproj-tiny-qwen2.5-vl-f32.gguf"
    done = subprocess.run(
        [KAIYUAN, "import", str(model), "--projector", str(projector), "--name", GGUF],
        env={"KAIYUAN_HOME": str(home)}, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    record = Store(home).get(GGUF)
    assert record.backend == "llamacpp" and "vision" in record.capabilities
    args = ["--threads", "1", "--max-image-pixels", "1000000", "--max-images", "2"]
    with KaiyuanServer(home=home, args=args) as running:
        yield running


def create(
    server: KaiyuanServer, messages: list[dict[str, Any]], model: str = HF, **options: Any
) -> Any:
    options = {"max_tokens": 6, "temperature": 0, **options}
    return server.client().chat.completions.create(model=model, messages=messages, **options)  # type: ignore[call-overload]


def test_image_tokens_follow_the_processors_resizing(server: KaiyuanServer) -> None:
    """Each image costs one token per merged 28x28 patch after resizing into the processor's
    pixel bounds: small images are enlarged, large ones shrunk."""
    text_only = create(server, [{"role": "user", "content": "What is in this picture?"}])
    base = text_only.usage.prompt_tokens + 2  # + <|vision_start|> and <|vision_end|>
    cases = {(56, 56): 4, (112, 112): 16, (900, 900): 16, (10, 10): 4, (112, 56): 8}
    for (width, height), tokens in cases.items():
        reply = create(server, ask(data_url(png(width, height))))
        assert reply.usage.prompt_tokens == base + tokens, (width, height)
        assert reply.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("model", [HF, GGUF])
def test_streaming_with_an_image_matches_non_streaming(server: KaiyuanServer, model: str) -> None:
    messages = ask(data_url(png(80, 60)))
    whole = create(server, messages, model, logit_bias={"2": -100}).choices[0].message.content
    parts = "".join(
        c.choices[0].delta.content or ""
        for c in create(server, messages, model, logit_bias={"2": -100}, stream=True)
        if c.choices
    )
    assert whole and parts == whole


@pytest.mark.parametrize("model", [HF, GGUF])
def test_the_pixels_reach_the_model(server: KaiyuanServer, model: str) -> None:
    def first_logprob(color: tuple[int, int, int]) -> float:
        reply = create(
            server, ask(data_url(png(56, 56, color))), model, logprobs=True, max_tokens=1
        )
        return reply.choices[0].logprobs.content[0].logprob

    assert first_logprob((255, 0, 0)) == first_logprob((255, 0, 0))
    assert first_logprob((255, 0, 0)) != first_logprob((0, 0, 255))


def test_jpeg_and_a_second_turn_image(server: KaiyuanServer) -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (60, 40), (10, 200, 10)).save(buffer, format="JPEG")
    messages = [*ask(data_url(buffer.getvalue(), "image/jpeg")),
                {"role": "assistant", "content": "Green."},
                *ask(data_url(png(56, 56)), "And this one?")]  # fmt: skip
    assert create(server, messages).usage.prompt_tokens > 8


@pytest.mark.parametrize(
    ("url", "words"),
    [
        (data_url(b"not an image at all"), "could not be decoded"),
        (data_url(png(40, 40)[:60]), "could not be decoded"),  # truncated
        ("data:image/png;base64,@@@", "not valid base64"),
        ("data:text/plain;base64,aGk=", "data:image/png;base64"),
        ("ftp://example.com/a.png", "data: URL or an http(s) URL"),
        (data_url(png(1100, 1000)), "more than the 1000000"),  # over --max-image-pixels
    ],
)
def test_bad_images_are_400s_naming_capabilities(
    server: KaiyuanServer, url: str, words: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        create(server, ask(url))
    body = err.value.body
    assert isinstance(body, dict) and body["param"] == "messages[0].content[0]"
    assert words in body["message"] and "vision" in body["message"]
    for leak in ("Traceback", 'File "', " object at 0x", "site-packages"):  # T8
        assert leak not in body["message"]


def test_loopback_image_urls_are_refused(server: KaiyuanServer) -> None:
    """T16: an image URL must not reach this machine (here: kaiyuan's own port)."""
    with pytest.raises(openai.BadRequestError) as err:
        create(server, ask(server.url + "/health"))
    assert isinstance(err.value.body, dict) and err.value.body["param"] == "messages[0].content[0]"


def test_too_many_images_and_text_only_models(server: KaiyuanServer) -> None:
    image = {"type": "image_url", "image_url": {"url": data_url(png(30, 30))}}
    three = [{"role": "user", "content": [image, image, image]}]
    with pytest.raises(openai.BadRequestError) as err:
        create(server, three)
    assert isinstance(err.value.body, dict) and "at most 2 images" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        server.client().chat.completions.create(
            model="smollm2-135m-instruct", messages=ask(data_url(png(30, 30))),  # type: ignore[arg-type]
        )  # fmt: skip
    assert isinstance(err.value.body, dict)
    assert "does not accept images" in err.value.body["message"]
    assert "chat" in err.value.body["message"]


# --- http(s) images: the loader with the fetcher allowed to reach a local server ----------------
@pytest.fixture()
def image_site() -> Iterator[str]:
    site = LocalWeb()
    pages = {"/red.png": png(64, 48), "/big.png": b"\x89PNG" + os.urandom(5000), "/text": b"hello"}
    site.routes = {path: (200, {}, body) for path, body in pages.items()}
    yield site.url
    site.close()


def test_http_images_are_fetched_within_limits(image_site: str) -> None:
    loopback_ok = functools.partial(fetch, allowed=lambda address: True)
    limits = images.Limits(max_images=4, max_bytes=2000, max_pixels=10**6, timeout=5)

    def load(path: str, **fetcher: Any) -> Any:
        ref = images.ImageRef(image_site + path, "messages[0].content[0]")
        return asyncio.run(images.load([ref], limits, capabilities="chat", **fetcher))[0]

    assert load("/red.png", fetcher=loopback_ok).size == (64, 48)
    for path, words in [("/big.png", "limit is 2000"), ("/text", "decoded"), ("/none", "HTTP 404")]:
        with pytest.raises(InvalidRequest) as err:
            load(path, fetcher=loopback_ok)
        assert words in err.value.message
    with pytest.raises(FetchRefused):  # the default fetcher refuses loopback (T16)
        load("/red.png")


def test_gguf_images_cost_mtmds_tokens_and_batch_beside_text(server: KaiyuanServer) -> None:
    """llama.cpp resizes by its own rules (here a 56x56 image becomes 9 tokens); a request with
    an image generates beside text-only ones and answers as it does alone (greedy)."""
    text_only = create(server, [{"role": "user", "content": "What is in this picture?"}], GGUF)
    small = create(server, ask(data_url(png(56, 56))), GGUF).usage.prompt_tokens
    large = create(server, ask(data_url(png(224, 224))), GGUF).usage.prompt_tokens
    assert text_only.usage.prompt_tokens < small < large
    messages = ask(data_url(png(90, 70, (20, 40, 250))))
    alone = create(server, messages, GGUF, max_tokens=12, logit_bias={"2": -100})
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        texts = [pool.submit(create, server, [{"role": "user", "content": f"Say {i}"}], GGUF,
                             max_tokens=12) for i in range(3)]  # fmt: skip
        beside = pool.submit(create, server, messages, GGUF, max_tokens=12, logit_bias={"2": -100})
        assert all(t.result().choices[0].message.content is not None for t in texts)
    assert beside.result().choices[0].message.content == alone.choices[0].message.content
    again = create(server, messages, GGUF, max_tokens=12, logit_bias={"2": -100})
    assert again.usage.prompt_tokens_details.cached_tokens == 0  # images are never reused
