"""typical_p, ignore_eos and min_tokens (vLLM's and llama.cpp's request fields) in both text
engines: the bundled SmolLM2 on llama.cpp, and a tiny random Qwen2 on transformers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from kaiyuan.chat.template import ChatTemplate
from kaiyuan.engines.base import (
    Delta,
    EngineOptions,
    Finish,
    SamplingParams,
    TextEngine,
    TokenLogprob,
)
from kaiyuan.engines.llamacpp import LlamaCppEngine
from kaiyuan.store import resolve
from tests.conftest import MODEL

SHORT = "Say only: yes"  # the bundled model answers "Yes." and stops, at temperature 0
POEM = "Write a poem about the sea."  # long, open answers: sampling spreads
IM_END = 2  # the tiny checkpoint's <|im_end|>, its end token
FORCE_END = ((IM_END, 100.0),)  # the tiny model then ends at once, unless told not to


class Run:
    def __init__(self, text: str, finish: Finish, logprobs: list[TokenLogprob]) -> None:
        self.text, self.finish, self.logprobs = text, finish, logprobs

    @property
    def tokens(self) -> int:
        return self.finish.completion_tokens


def generate(engine: TextEngine, prompt: list[int], params: SamplingParams) -> Run:
    async def collect() -> Run:
        text, finish, logprobs = "", None, []
        async for event in engine.generate(prompt, params):
            if isinstance(event, Delta):
                text += event.text
                logprobs += event.logprobs
            else:
                finish = event
        assert finish is not None
        return Run(text, finish, logprobs)

    return asyncio.run(collect())


# --- llama.cpp ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llama() -> Iterator[LlamaCppEngine]:
    _, path = resolve(MODEL)
    engine = LlamaCppEngine(
        EngineOptions(model_id=MODEL, path=path, parallel=2, context_length=1024)
    )
    yield engine
    asyncio.run(engine.aclose())


def ask(engine: LlamaCppEngine, question: str, **fields: Any) -> Run:
    template = ChatTemplate(engine.info.chat_template or "")
    prompt = engine.tokenize(template.render([{"role": "user", "content": question}]))
    return generate(engine, prompt, SamplingParams(**fields))


@pytest.mark.slow
def test_ignore_eos_runs_to_max_tokens_on_llama_cpp(llama: LlamaCppEngine) -> None:
    plain = ask(llama, SHORT, max_tokens=16, temperature=0)
    assert plain.finish.reason == "stop" and plain.tokens < 8, plain.text  # it stops early
    forced = ask(llama, SHORT, max_tokens=16, temperature=0, ignore_eos=True)
    assert (forced.finish.reason, forced.tokens) == ("length", 16)
    assert forced.text.startswith(plain.text) and len(forced.text) > len(plain.text)
    hot = ask(llama, SHORT, max_tokens=16, temperature=1.0, seed=3, ignore_eos=True)
    assert (hot.finish.reason, hot.tokens) == ("length", 16)


@pytest.mark.slow
def test_min_tokens_delays_the_end_on_llama_cpp(llama: LlamaCppEngine) -> None:
    plain = ask(llama, SHORT, max_tokens=32, temperature=0)
    assert plain.finish.reason == "stop" and plain.tokens < 6
    held = ask(llama, SHORT, max_tokens=32, temperature=0, min_tokens=6)
    # six tokens that are not an end, then the end may come (vLLM's meaning)
    assert held.tokens > 6 and held.text.startswith(plain.text), held.text
    assert held.finish.reason == "stop"  # not forced to run on: the end came once allowed
    assert ask(llama, SHORT, max_tokens=32, temperature=0, min_tokens=2).text == plain.text


@pytest.mark.slow
def test_ended_answers_keep_the_models_own_logprobs(llama: LlamaCppEngine) -> None:
    """The end tokens are banned for the draw only: the reported logprobs are the model's, so
    where it wanted to end, the end token still leads the list and the chosen token trails."""
    forced = ask(llama, SHORT, max_tokens=8, temperature=0, ignore_eos=True, logprobs=1)
    assert len(forced.logprobs) == 8
    assert any(lp.top[0].logprob > lp.logprob for lp in forced.logprobs)
    plain = ask(llama, SHORT, max_tokens=8, temperature=0, logprobs=1)
    assert all(lp.top[0].logprob == lp.logprob for lp in plain.logprobs)  # greedy: the top one


@pytest.mark.slow
def test_top_k_one_is_greedy_at_temperature_one_on_llama_cpp(llama: LlamaCppEngine) -> None:
    fields: dict[str, Any] = {"max_tokens": 24, "ignore_eos": True}
    greedy = ask(llama, POEM, temperature=0, **fields).text
    for seed in (1, 2, 3):
        assert ask(llama, POEM, temperature=1.0, top_k=1, seed=seed, **fields).text == greedy
    spread = {ask(llama, POEM, temperature=1.0, seed=seed, **fields).text for seed in (1, 2, 3)}
    assert len(spread) > 1  # so top_k=1 is what made them equal


@pytest.mark.slow
def test_a_tiny_typical_mass_is_deterministic_on_llama_cpp(llama: LlamaCppEngine) -> None:
    # typical_p keeps the tokens whose surprisal is nearest the entropy until their mass
    # exceeds p: with p = 0.001 that is one token at every step, whatever the seed
    fields: dict[str, Any] = {"max_tokens": 16, "temperature": 1.0}
    typical = {ask(llama, POEM, typical_p=0.001, seed=s, **fields).text for s in range(4)}
    assert len(typical) == 1
    plain = {ask(llama, POEM, seed=s, **fields).text for s in range(4)}
    assert len(plain) > 1


@pytest.mark.slow
def test_a_complete_grammar_still_ends_under_ignore_eos(llama: LlamaCppEngine) -> None:
    """Once the grammar allows nothing but an end, banning it would leave no token at all (and
    llama.cpp's grammar aborts the process on the arbitrary one drawn): the answer ends."""
    for temperature in (0.0, 1.0):
        run = ask(llama, SHORT, max_tokens=8, temperature=temperature, seed=1, ignore_eos=True,
                  grammar='root ::= "yes"')  # fmt: skip
        assert (run.text, run.finish.reason) == ("yes", "stop")
    grown = ask(llama, SHORT, max_tokens=8, temperature=0, min_tokens=4,
                grammar='root ::= "yes" [a-z ]*')  # fmt: skip
    assert grown.text.startswith("yes") and grown.tokens > 4


# --- transformers -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TextEngine]:
    pytest.importorskip("transformers")
    from kaiyuan.engines.hf_transformers import TransformersEngine
    from tests.test_transformers_engine import tiny_checkpoint

    folder = tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "qwen2", "qwen2")
    engine = TransformersEngine(EngineOptions(model_id="tiny", path=folder, threads=1))
    yield engine
    asyncio.run(engine.aclose())


def tiny_run(engine: TextEngine, **fields: Any) -> Run:
    return generate(engine, engine.tokenize("Hello world, how are you"), SamplingParams(**fields))


@pytest.mark.slow
def test_ignore_eos_and_min_tokens_on_transformers(tiny: TextEngine) -> None:
    ended = tiny_run(tiny, max_tokens=6, temperature=0, logit_bias=FORCE_END)
    assert (ended.finish.reason, ended.tokens, ended.text) == ("stop", 1, "")
    forced = tiny_run(tiny, max_tokens=6, temperature=0, logit_bias=FORCE_END, ignore_eos=True)
    assert (forced.finish.reason, forced.tokens) == ("length", 6) and forced.text
    held = tiny_run(tiny, max_tokens=12, temperature=1.0, seed=0, logit_bias=FORCE_END,
                    min_tokens=4)  # fmt: skip
    assert (held.finish.reason, held.tokens) == ("stop", 5)  # four tokens, then the end


@pytest.mark.slow
def test_a_tiny_typical_mass_is_deterministic_on_transformers(tiny: TextEngine) -> None:
    fields: dict[str, Any] = {"max_tokens": 8, "temperature": 1.0, "ignore_eos": True}
    typical = {tiny_run(tiny, typical_p=0.001, seed=s, **fields).text for s in range(4)}
    assert len(typical) == 1
    assert len({tiny_run(tiny, seed=s, **fields).text for s in range(4)}) > 1


def test_torch_typical_keeps_what_transformers_keeps() -> None:
    torch = pytest.importorskip("torch")
    from transformers import TypicalLogitsWarper

    from kaiyuan.engines.torch_sampling import typical

    gen = torch.Generator().manual_seed(0)
    for case in range(200):
        n = int(torch.randint(2, 300, (1,), generator=gen))
        logits = torch.randn(n, generator=gen) * float(torch.rand(1, generator=gen) * 8)
        if case % 3 == 0:  # tokens already excluded (grammar, top-k) are -inf
            logits[torch.rand(n, generator=gen) < 0.3] = float("-inf")
            logits[0] = 1.0
        mass = float(torch.rand(1, generator=gen)) * 0.98 + 0.01
        ours = torch.isfinite(typical(logits.clone(), mass))
        theirs = torch.isfinite(TypicalLogitsWarper(mass)(None, logits[None].clone())[0])
        assert torch.equal(ours, theirs), (case, mass)
        assert ours.any()


def test_torch_chooser_bans_ends_unless_nothing_else_is_left() -> None:
    torch = pytest.importorskip("torch")
    from kaiyuan.engines.torch_sampling import Chooser

    def chooser(temperature: float = 0.0, seed: int = 0, **fields: Any) -> Any:
        params = SamplingParams(max_tokens=8, temperature=temperature, **fields)
        gen = torch.Generator().manual_seed(seed)
        return Chooser(params, grammar=None, generator=gen, on_token=lambda *_: True, ends={2})

    logits = torch.tensor([1.0, 2.0, 9.0])  # the end token (2) leads
    assert chooser().choose(logits) == 2
    assert chooser(ignore_eos=True).choose(logits) == 1
    assert {chooser(1.0, ignore_eos=True, seed=s).choose(logits) for s in range(20)} == {0, 1}
    held = chooser(min_tokens=2)
    scores = logits[None]
    assert [int(held(None, scores.clone()).argmax()) for _ in range(3)] == [1, 1, 2]
    # a complete grammar leaves only the end: it is chosen, not an arbitrary -inf token
    only_end = torch.tensor([float("-inf"), float("-inf"), 9.0])
    for temperature in (0.0, 1.0):
        assert chooser(temperature, ignore_eos=True).choose(only_end) == 2


def test_defaults_leave_the_extensions_off() -> None:
    params = SamplingParams(max_tokens=1)
    assert (params.typical_p, params.ignore_eos, params.min_tokens) == (1.0, False, 0)
