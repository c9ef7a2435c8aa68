"""Per-model generation defaults (issue 15): the model card's sampling and answer length, the
model's generation_config.json, the user's config, and the request's own values over all."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from kaiyuan.cli.main import cli
from kaiyuan.config import GenerationDefaults, Settings
from kaiyuan.engines.base import Delta, EngineOptions, ModelInfo, SamplingParams
from kaiyuan.engines.llamacpp import LlamaCppEngine
from kaiyuan.engines.pool import EnginePool
from kaiyuan.server import create_app
from kaiyuan.store import generation
from kaiyuan.store.bundled import resolve
from kaiyuan.store.records import ModelRecord
from kaiyuan.store.store import Store
from tests.fakes import ScriptedEngine
from tests.harness import KaiyuanServer, serve_app

BUNDLED = "smollm2-135m-instruct"
USER = [{"role": "user", "content": "What is the capital of France?"}]
NO_END = {"0": -100, "1": -100, "2": -100}  # SmolLM2's end tokens, banned


# --- where defaults come from --------------------------------------------------------------------
def record(model_id: str = BUNDLED, **fields: Any) -> ModelRecord:
    return ModelRecord(**{"id": model_id, "format": "gguf", **fields})


def test_the_bundled_model_gets_its_card_and_a_guard() -> None:
    merged = generation.merge(generation.layers(record(), Settings()))
    assert (merged.temperature, merged.top_p) == (0.2, 0.9)  # SmolLM2's model card
    assert merged.repetition_penalty is not None and merged.repetition_penalty > 1.0
    assert merged.max_tokens is not None and merged.max_tokens <= 1024


def test_a_model_without_a_card_still_has_a_length_limit() -> None:
    stack = generation.layers(record("my-own-model"), Settings())
    assert generation.merge(stack) == GenerationDefaults(max_tokens=Settings().max_tokens)
    assert generation.layers(record("my-own-model"), Settings(max_tokens=0)) == []


def test_a_pulled_model_is_found_in_the_catalogue_by_its_repo() -> None:
    pulled = record("my-qwen", source="hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF@abc")
    merged = generation.merge(generation.layers(pulled, Settings()))
    assert (merged.temperature, merged.top_k, merged.repetition_penalty) == (0.7, 20, 1.05)


def test_layers_own_file_over_catalogue_and_user_over_both(tmp_path: Path) -> None:
    (tmp_path / "generation_config.json").write_text(
        json.dumps({"temperature": 0.9, "top_k": 5, "max_new_tokens": 99, "top_p": 7})
    )
    settings = Settings(generation={BUNDLED: {"top_k": 3, "max_tokens": 11}})
    stack = generation.layers(record(format="safetensors"), settings, tmp_path)
    assert [source for source, _ in stack] == [
        "kaiyuan", "catalogue", "generation_config.json", "config"
    ]  # fmt: skip
    merged = generation.merge(stack)
    assert merged.temperature == 0.9  # the model's own file over the catalogue's 0.2
    assert merged.top_p == 0.9  # the file's 7 is out of range: dropped, the catalogue's stays
    assert (merged.top_k, merged.max_tokens) == (3, 11)  # the user's over everything
    assert generation.sources(stack)["temperature"] == (0.9, "generation_config.json")


def test_greedy_generation_config_means_temperature_zero(tmp_path: Path) -> None:
    (tmp_path / "generation_config.json").write_text(
        json.dumps({"do_sample": False, "temperature": 0.7, "max_new_tokens": 5})
    )
    own = generation.from_generation_config(tmp_path)
    assert own == GenerationDefaults(temperature=0.0, max_tokens=5)
    (tmp_path / "generation_config.json").write_text("[not json")
    assert generation.from_generation_config(tmp_path) is None


# --- the server applies them, under the request's own values -------------------------------------
@pytest.fixture
def fake() -> Iterator[tuple[ScriptedEngine, httpx.Client]]:
    engine = ScriptedEngine("fake-model", context_length=256)
    engine.info = ModelInfo(
        **{f: getattr(engine.info, f) for f in ("id", "backend", "context_length",
                                                 "chat_template", "vocab_size")},
        defaults=GenerationDefaults(
            temperature=0.3, top_p=0.7, top_k=9, min_p=0.05, repetition_penalty=1.2, max_tokens=40
        ),
    )  # fmt: skip
    app = create_app(Settings(), EnginePool([engine]))
    with serve_app(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield engine, client


def sent(engine: ScriptedEngine) -> SamplingParams:
    return engine.records[-1].params


def test_a_request_without_sampling_gets_the_models_defaults(
    fake: tuple[ScriptedEngine, httpx.Client],
) -> None:
    engine, client = fake
    body = {"model": "fake-model", "messages": USER}
    assert client.post("/v1/chat/completions", json=body).status_code == 200
    p = sent(engine)
    assert (p.temperature, p.top_p, p.top_k, p.min_p) == (0.3, 0.7, 9, 0.05)
    assert (p.repetition_penalty, p.max_tokens) == (1.2, 40)

    assert client.post("/v1/completions", json={"model": "fake-model", "prompt": "x"}).is_success
    p = sent(engine)
    assert (p.temperature, p.top_p, p.max_tokens) == (0.3, 0.7, 16)  # OpenAI's 16 for completions


def test_the_requests_own_values_win(fake: tuple[ScriptedEngine, httpx.Client]) -> None:
    engine, client = fake
    body = {"model": "fake-model", "messages": USER, "temperature": 1.5, "top_p": 1.0}
    assert client.post("/v1/chat/completions", json={**body, "max_tokens": 7}).is_success
    assert (sent(engine).temperature, sent(engine).top_p, sent(engine).max_tokens) == (1.5, 1.0, 7)
    assert client.post("/v1/chat/completions", json={**body, "temperature": 0}).is_success
    assert sent(engine).temperature == 0.0
    # vLLM's sampling extensions, as clients send them through extra_body
    extensions = {"top_k": 2, "min_p": 0.0, "repetition_penalty": 1.0}
    assert client.post("/v1/chat/completions", json={**body, **extensions}).is_success
    p = sent(engine)
    assert (p.top_k, p.min_p, p.repetition_penalty) == (2, 0.0, 1.0)
    assert client.post("/v1/chat/completions", json={**body, "top_k": -1}).is_success
    assert sent(engine).top_k == 0  # vLLM's -1: off
    bad = client.post("/v1/chat/completions", json={**body, "repetition_penalty": 0})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "repetition_penalty"


def test_a_default_length_never_fails_a_long_prompt(
    fake: tuple[ScriptedEngine, httpx.Client],
) -> None:
    engine, client = fake
    long = [{"role": "user", "content": "y" * 200}]  # leaves less room than the default 40
    response = client.post("/v1/chat/completions", json={"model": "fake-model", "messages": long})
    assert response.status_code == 200, response.text
    assert sent(engine).max_tokens == 256 - len(engine.records[-1].prompt)


# --- the samplers honour them --------------------------------------------------------------------
@pytest.fixture(scope="module")
def llama() -> Iterator[LlamaCppEngine]:
    _, path = resolve(BUNDLED)
    engine = LlamaCppEngine(
        EngineOptions(model_id=BUNDLED, path=path, parallel=2, context_length=1024)
    )
    yield engine
    asyncio.run(engine.aclose())


def generate(engine: LlamaCppEngine, params: SamplingParams) -> str:
    from kaiyuan.chat.template import ChatTemplate

    tokens = engine.tokenize(ChatTemplate(engine.info.chat_template or "").render(USER))

    async def run() -> str:
        events = engine.generate(tokens, params)
        return "".join([e.text async for e in events if isinstance(e, Delta)])

    return asyncio.run(run())


def test_top_k_one_is_greedy_on_llama_cpp(llama: LlamaCppEngine) -> None:
    bans = ((0, -100.0), (1, -100.0), (2, -100.0))
    greedy = generate(llama, SamplingParams(max_tokens=40, temperature=0, logit_bias=bans))
    for seed in (1, 2):
        hot = SamplingParams(max_tokens=40, temperature=1.5, top_k=1, seed=seed, logit_bias=bans)
        assert generate(llama, hot) == greedy
    unsure = SamplingParams(max_tokens=40, temperature=1.5, seed=1, logit_bias=bans)
    assert generate(llama, unsure) != greedy  # so top_k=1 is what made them equal


def repeats(text: str) -> int:
    words = text.split()
    grams = Counter(tuple(words[i : i + 3]) for i in range(len(words) - 2))
    return sum(n - 1 for n in grams.values() if n > 1)


def test_the_repetition_guard_breaks_loops_on_llama_cpp(llama: LlamaCppEngine) -> None:
    # Greedy decoding of the bundled model loops ("la femme au roi, la femme au roi, ..."):
    bans = ((0, -100.0), (1, -100.0), (2, -100.0))
    plain = generate(llama, SamplingParams(max_tokens=200, temperature=0, logit_bias=bans))
    guarded = generate(
        llama,
        SamplingParams(max_tokens=200, temperature=0, repetition_penalty=1.15, logit_bias=bans),
    )
    assert repeats(plain) > 10, plain
    assert repeats(guarded) < repeats(plain) / 2, guarded


def test_torch_chooser_honours_top_k_min_p_and_the_guard() -> None:
    torch = pytest.importorskip("torch")
    from kaiyuan.engines.torch_sampling import Chooser

    logits = torch.tensor([2.0, 1.9, 0.5, -1.0, 1.8])

    def choose(**fields: Any) -> list[int]:
        params = SamplingParams(max_tokens=1, temperature=2.0, **fields)
        out = []
        for seed in range(40):
            gen = torch.Generator().manual_seed(seed)
            chooser = Chooser(params, grammar=None, generator=gen, on_token=lambda *_: True)
            out.append(chooser.choose(logits))
        return out

    assert set(choose(top_k=1)) == {0}
    assert set(choose(top_k=2)) == {0, 1}
    assert set(choose(min_p=0.95)) == {0}  # only tokens within 5% of the best one's probability
    assert len(set(choose())) > 2  # plain sampling at temperature 2 spreads
    gen = torch.Generator().manual_seed(0)
    chooser = Chooser(
        SamplingParams(max_tokens=1, temperature=0, repetition_penalty=1.5),
        grammar=None, generator=gen, on_token=lambda *_: True,
    )  # fmt: skip
    assert chooser.choose(logits) == 0
    chooser.recent.append(0)  # token 0 was just written: 2.0 / 1.5 < 1.9
    assert chooser.choose(logits) == 1


# --- end to end: `kaiyuan serve` and `kaiyuan config` --------------------------------------------
def test_served_bundled_model_stops_at_its_default_length(tmp_path: Path) -> None:
    env = {"KAIYUAN_GENERATION": json.dumps({BUNDLED: {"max_tokens": 24}})}
    with KaiyuanServer(home=tmp_path, env=env, args=["--parallel", "1"]) as server:
        client = server.client(timeout=60)
        reply = client.chat.completions.create(
            model=BUNDLED,
            messages=USER,
            logit_bias=NO_END,  # type: ignore[arg-type]
        )
        assert reply.usage is not None and reply.usage.completion_tokens == 24
        assert reply.choices[0].finish_reason == "length"
        own = client.chat.completions.create(
            model=BUNDLED,
            messages=USER,
            logit_bias=NO_END,
            max_tokens=5,  # type: ignore[arg-type]
        )
        assert own.usage is not None and own.usage.completion_tokens == 5


def test_config_set_show_and_unset(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["config", "set", BUNDLED, "temperature=0.5", "repeat_penalty=1.3"])
    assert result.exit_code == 0, result.output
    config = (tmp_path / "kaiyuan-home" / "config.toml").read_text()
    assert "[generation.smollm2-135m-instruct]" in config and "repetition_penalty = 1.3" in config

    shown = runner.invoke(cli, ["show", BUNDLED, "--json"])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.output)["generation"]
    assert data["temperature"] == {"value": 0.5, "source": "config"}
    assert data["top_p"] == {"value": 0.9, "source": "catalogue"}
    assert "temperature=0.5 (config)" in runner.invoke(cli, ["show", BUNDLED]).output

    for bad, words in [
        (["temperature=3"], "temperature=3"),
        (["colour=red"], "is not KEY=VALUE"),
        (["top_k"], "is not KEY=VALUE"),
    ]:
        failed = runner.invoke(cli, ["config", "set", BUNDLED, *bad])
        assert failed.exit_code == 1 and words in failed.output and "Traceback" not in failed.output
    missing = runner.invoke(cli, ["config", "set", "no-such-model", "temperature=1"])
    assert missing.exit_code == 1 and "no-such-model" in missing.output

    assert runner.invoke(cli, ["config", "unset", BUNDLED, "temperature"]).exit_code == 0
    data = json.loads(runner.invoke(cli, ["show", BUNDLED, "--json"]).output)["generation"]
    assert data["temperature"] == {"value": 0.2, "source": "catalogue"}
    assert data["repetition_penalty"]["source"] == "config"
    assert runner.invoke(cli, ["config", "unset", BUNDLED]).exit_code == 0
    assert "generation" not in (tmp_path / "kaiyuan-home" / "config.toml").read_text()


def test_a_safetensors_models_own_generation_config_is_served(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from tests.test_transformers_engine import tiny_checkpoint

    folder = tiny_checkpoint(tmp_path / "tiny", "qwen2")
    saved = json.loads((folder / "generation_config.json").read_text())
    saved |= {"do_sample": False, "max_new_tokens": 6}
    (folder / "generation_config.json").write_text(json.dumps(saved))
    home = tmp_path / "home"
    Store(home).install("tiny-qwen2", [folder], move=False, source="test")
    args = ["--model", "tiny-qwen2", "--threads", "1"]
    with KaiyuanServer(home=home, args=args) as server:
        client = server.client(timeout=60)
        answers = set()
        for _ in range(2):
            reply = client.chat.completions.create(model="tiny-qwen2", messages=USER)
            assert reply.usage is not None and reply.usage.completion_tokens <= 6
            answers.add(reply.choices[0].message.content)
        assert len(answers) == 1  # greedy, from do_sample: false
