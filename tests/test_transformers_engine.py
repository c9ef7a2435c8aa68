"""Safetensors chat models on the transformers engine: tiny random Qwen2, Qwen3, Qwen3-MoE and
DeepSeek-V3 checkpoints, with a tokenizer, built in code, imported into a store and served end to
end."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from kaiyuan.store.store import Store
from tests.harness import KaiyuanServer
from tests.tinymodels import byte_bpe

pytestmark = pytest.mark.slow

KINDS = ("qwen2", "qwen3", "qwen3-moe", "deepseek-v3")
MODELS = [f"tiny-{kind}" for kind in KINDS]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France. Hello world, how are you today?",
    "Tiny models write random text, which is fine for testing the serving path.",
] * 20


def tiny_checkpoint(folder: Path, kind: str) -> Path:
    import torch
    from transformers import (
        DeepseekV3Config,
        DeepseekV3ForCausalLM,
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
        Qwen3MoeConfig,
        Qwen3MoeForCausalLM,
    )

    tok = byte_bpe(CORPUS, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], 400)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        bos_token=None, chat_template=CHATML,
    )  # fmt: skip
    common = dict(
        vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=1024, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    experts = dict(moe_intermediate_size=16, num_experts_per_tok=2)
    model: Any
    if kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    elif kind == "qwen3":
        model = Qwen3ForCausalLM(Qwen3Config(head_dim=8, **common))
    elif kind == "qwen3-moe":
        moe = dict(head_dim=8, num_experts=4, decoder_sparse_step=1)
        config = Qwen3MoeConfig(**moe, **experts, **common)
        model = Qwen3MoeForCausalLM(config)
    else:  # deepseek-v3: multi-head latent attention, shared + routed experts, first layer dense
        mla = dict(q_lora_rank=16, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8,
                   v_head_dim=8, num_key_value_heads=4)  # fmt: skip
        routing = dict(n_routed_experts=4, n_shared_experts=1, n_group=1, topk_group=1,
                       first_k_dense_replace=1)  # fmt: skip
        config = DeepseekV3Config(**{**common, **mla, **routing, **experts})
        model = DeepseekV3ForCausalLM(config)
    model.generation_config.eos_token_id = tok.token_to_id("<|im_end|>")
    model.save_pretrained(folder, safe_serialization=True)
    fast.save_pretrained(folder)
    return folder


CUSTOM_CODE = '''"""A model that ships its own code (auto_map): a renamed Qwen2."""
from transformers import Qwen2Config, Qwen2ForCausalLM


class TinyCustomConfig(Qwen2Config):
    model_type = "tiny-custom"


class TinyCustomForCausalLM(Qwen2ForCausalLM):
    config_class = TinyCustomConfig
'''


def custom_code_checkpoint(folder: Path) -> Path:
    tiny_checkpoint(folder, "qwen2")
    (folder / "modeling_tiny.py").write_text(CUSTOM_CODE)
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="tiny-custom",
        architectures=["TinyCustomForCausalLM"],
        auto_map={"AutoConfig": "modeling_tiny.TinyCustomConfig",
                  "AutoModelForCausalLM": "modeling_tiny.TinyCustomForCausalLM"},
    )  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KaiyuanServer]:
    home = tmp_path_factory.mktemp("hf-home")
    store = Store(home)
    for kind in KINDS:
        folder = tiny_checkpoint(tmp_path_factory.mktemp(kind), kind)
        record = store.install(f"tiny-{kind}", [folder], move=False, source="test")
        assert record.format == "safetensors" and record.backend == "transformers"
        assert {"chat", "completion"} <= set(record.capabilities)
    custom = custom_code_checkpoint(tmp_path_factory.mktemp("custom"))
    store.install("tiny-custom", [custom], move=False, source="test", trust_remote_code=True)
    with KaiyuanServer(home=home, args=["--threads", "1"]) as running:
        yield running


@pytest.mark.parametrize("model", MODELS)
def test_chat_answers_with_exact_usage(server: KaiyuanServer, model: str) -> None:
    reply = server.client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello"}],
        max_tokens=12, temperature=0,
        logit_bias={"2": -100},  # <|im_end|>: make it write all 12 tokens
    )  # fmt: skip
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 12
    assert reply.choices[0].message.content


@pytest.mark.parametrize("model", MODELS)
def test_streaming_matches_non_streaming(server: KaiyuanServer, model: str) -> None:
    client = server.client()
    kwargs = dict(model=model, messages=[{"role": "user", "content": "Paris"}],
                  max_tokens=10, temperature=0, logit_bias={"2": -100})  # fmt: skip
    whole = client.chat.completions.create(**kwargs).choices[0].message.content  # type: ignore[call-overload]
    parts = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(stream=True, **kwargs)  # type: ignore[call-overload]
        if c.choices
    )
    assert parts == whole


def test_seed_reproduces_sampling(server: KaiyuanServer) -> None:
    client = server.client()

    def ask(seed: int) -> str:
        reply = client.chat.completions.create(
            model="tiny-qwen3", messages=[{"role": "user", "content": "Hi"}],
            max_tokens=16, temperature=1.0, seed=seed, logit_bias={"2": -100},
        )  # fmt: skip
        return reply.choices[0].message.content or ""

    assert ask(3) == ask(3)
    assert ask(3) != ask(4)


def test_models_list_and_bad_requests(server: KaiyuanServer) -> None:
    models = {m["id"]: m for m in httpx.get(server.url + "/v1/models").json()["data"]}
    assert models["tiny-qwen2"]["architecture"] == "Qwen2ForCausalLM"
    assert models["tiny-qwen3-moe"]["architecture"] == "Qwen3MoeForCausalLM"
    assert models["tiny-deepseek-v3"]["architecture"] == "DeepseekV3ForCausalLM"
    assert models["tiny-qwen3"]["format"] == "safetensors"
    client = server.client()
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="tiny-qwen2", messages=[{"role": "user", "content": "x " * 1200}]
        )
    assert isinstance(err.value.body, dict) and "1024" in err.value.body["message"]


SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "rank": {"type": "integer"},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
    },
    "required": ["city", "rank", "tags"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("model", MODELS)
def test_json_schema_is_enforced_on_random_weights(server: KaiyuanServer, model: str) -> None:
    """Random weights write noise; only the grammar (llguidance) can make it valid JSON."""
    client = server.client()
    for seed in range(3):
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "A city?"}],
            temperature=1.0, seed=seed, max_tokens=200,
            response_format={"type": "json_schema",
                             "json_schema": {"name": "city", "schema": SCHEMA}},
        )  # fmt: skip
        choice = reply.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        jsonschema.validate(json.loads(choice.message.content or ""), SCHEMA)


def test_json_object_and_forced_tool_call(server: KaiyuanServer) -> None:
    client = server.client()
    reply = client.chat.completions.create(
        model="tiny-qwen3", messages=[{"role": "user", "content": "JSON please"}],
        temperature=0.7, seed=1, max_tokens=200, response_format={"type": "json_object"},
    )  # fmt: skip
    assert reply.choices[0].finish_reason == "stop", reply.choices[0].message.content
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)
    tool = {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string", "maxLength": 10}},
            "required": ["city"], "additionalProperties": False}},
    }  # fmt: skip
    reply = client.chat.completions.create(
        model="tiny-qwen2", messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[tool], tool_choice="required", temperature=1.0, seed=2, max_tokens=200,  # type: ignore[list-item]
    )  # fmt: skip
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = (choice.message.tool_calls or [])[0]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    args = json.loads(call.function.arguments)  # type: ignore[union-attr]
    assert set(args) == {"city"} and isinstance(args["city"], str)


def test_a_closed_stream_cancels_its_generation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """In process: the tiny model writes ~1000 tokens a second, faster than a server notices a
    disconnect, so the engine's own cancellation is checked directly."""
    from kaiyuan.engines.base import Delta, EngineOptions, Finish, SamplingParams
    from kaiyuan.engines.hf_transformers import TransformersEngine

    engine = TransformersEngine(
        EngineOptions(model_id="t", path=tiny_checkpoint(tmp_path, "qwen3"), threads=1)
    )
    prompt = engine.tokenize("<|im_start|>user\nGo on<|im_end|>\n<|im_start|>assistant\n")
    endless = SamplingParams(max_tokens=900, temperature=0, logit_bias=((2, -100.0),))

    async def scenario() -> int:
        stream = engine.generate(prompt, endless)
        seen = 0
        async for event in stream:
            assert isinstance(event, Delta)
            seen += 1
            if seen == 3:
                break
        await stream.aclose()
        assert engine.in_flight == 0
        events = [e async for e in engine.generate(prompt, replace(endless, max_tokens=4))]
        assert isinstance(events[-1], Finish) and events[-1].completion_tokens == 4
        await engine.aclose()
        return seen

    with caplog.at_level(logging.INFO, logger="kaiyuan.engines.hf_transformers"):
        assert asyncio.run(scenario()) == 3
    found = re.search(r"status=cancelled .*completion_tokens=(\d+)", caplog.text)
    assert found is not None and int(found.group(1)) < 900, caplog.text


def test_custom_code_runs_only_when_imported_with_trust(server: KaiyuanServer) -> None:
    """Imported with --trust-remote-code, the model's own code is what loads (it has no
    built-in class in transformers); without that flag the store refuses it (test_store)."""
    reply = server.client().chat.completions.create(
        model="tiny-custom", messages=[{"role": "user", "content": "Hello"}], max_tokens=3
    )
    assert reply.usage is not None and reply.usage.completion_tokens <= 3
