"""End to end: the official ``openai`` client against ``kaiyuan serve`` and the real model.

Every test here talks to the session ``server`` fixture (a subprocess serving the bundled
SmolLM2-135M through llama.cpp). Greedy (temperature 0) and seeded outputs are deterministic,
so tests compare the server against itself (streamed vs not, alone vs concurrent) and against
token counts computed independently with llama.cpp's tokenizer.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import httpx
import llama_cpp
import openai
import pytest

from kaiyuan.store import resolve
from tests.conftest import MODEL
from tests.harness import KaiyuanServer

pytestmark = pytest.mark.slow

FRANCE = "What is the capital of France? Answer in one sentence."
STORY = "Write a long story about a dragon."
# The model's own template (GGUF tokenizer.chat_template) adds this when no system message leads.
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# <|endoftext|> and <|im_end|>: biased away, the model cannot end a generation early.
NO_EOS = {"0": -100, "2": -100}


def user(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def chatml(messages: list[dict[str, str]]) -> str:
    """ChatML exactly as SmolLM2's template renders it (with the generation prompt)."""
    if messages[0]["role"] != "system":
        messages = [{"role": "system", "content": DEFAULT_SYSTEM}, *messages]
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def vocab() -> Iterator[llama_cpp.Llama]:
    llm = llama_cpp.Llama(str(resolve(MODEL)[1]), vocab_only=True, verbose=False)
    yield llm
    llm.close()


def count_tokens(vocab: llama_cpp.Llama, text: str) -> int:
    # SmolLM2's GGUF sets add_bos_token = false; special tokens (<|im_start|>) are one token each.
    return len(vocab.tokenize(text.encode(), add_bos=False, special=True))


@pytest.fixture(scope="module")
def client(server: KaiyuanServer) -> openai.OpenAI:
    return server.client(timeout=120)


# The server is shared by the session: a prompt's cached prefix may come from any earlier test,
# computed in another batch shape, which can move an answer in its last digits. Reproducible
# output is what cache_prompt=false promises (README), so these tests ask for it.
FRESH = {"cache_prompt": False}


def chat(client: openai.OpenAI, content: str, **options: Any) -> Any:
    return client.chat.completions.create(model=MODEL, messages=user(content), **options)


def greedy(client: openai.OpenAI, content: str, max_tokens: int, **options: Any) -> str:
    reply = chat(client, content, temperature=0, max_tokens=max_tokens, **options)
    return reply.choices[0].message.content or ""


def stream_text(client: openai.OpenAI, content: str, **options: Any) -> tuple[str, list[Any]]:
    chunks = list(chat(client, content, stream=True, **options))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


# --- chat completions ------------------------------------------------------------------------
def test_chat_completion_shape_and_answer(client: openai.OpenAI) -> None:
    before = int(time.time())
    reply = chat(client, FRANCE, temperature=0, max_tokens=30)
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-")
    assert before - 5 <= reply.created <= time.time() + 5
    assert reply.model == MODEL
    assert len(reply.choices) == 1
    choice = reply.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert "Paris" in (choice.message.content or "")
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_template_default_system_prompt_matches_model_file(vocab: llama_cpp.Llama) -> None:
    """Guards the hand-written ChatML used for token counts below."""
    template = vocab.metadata["tokenizer.chat_template"]
    assert DEFAULT_SYSTEM in template
    assert "<|im_start|>" in template and "<|im_end|>" in template


def test_usage_is_exact_with_default_system_prompt(
    client: openai.OpenAI, vocab: llama_cpp.Llama
) -> None:
    reply = chat(client, STORY, temperature=0, max_tokens=12)
    assert reply.choices[0].finish_reason == "length"
    usage = reply.usage
    assert usage.completion_tokens == 12
    assert usage.prompt_tokens == count_tokens(vocab, chatml(user(STORY)))
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_usage_is_exact_with_own_system_prompt(
    client: openai.OpenAI, vocab: llama_cpp.Llama
) -> None:
    messages = [
        {"role": "system", "content": "You are a storyteller who never stops talking."},
        {"role": "user", "content": STORY},
    ]
    reply = client.chat.completions.create(
        model=MODEL,
        messages=messages,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=9,
        logit_bias=NO_EOS,
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 9
    # No default system prompt is added when the conversation starts with one.
    assert reply.usage.prompt_tokens == count_tokens(vocab, chatml(messages))
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 9


def test_max_completion_tokens_is_honoured(client: openai.OpenAI, vocab: llama_cpp.Llama) -> None:
    reply = chat(client, STORY, temperature=0, max_completion_tokens=7)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 7
    assert reply.usage.prompt_tokens == count_tokens(vocab, chatml(user(STORY)))
    # The newer field wins over the deprecated one.
    both = chat(client, STORY, temperature=0, max_tokens=20, max_completion_tokens=5)
    assert both.choices[0].finish_reason == "length"
    assert both.usage.completion_tokens == 5


def test_stream_matches_non_stream(client: openai.OpenAI) -> None:
    expected = chat(client, STORY, temperature=0, max_tokens=16, extra_body=FRESH)
    text, chunks = stream_text(
        client,
        STORY,
        temperature=0,
        max_tokens=16,
        stream_options={"include_usage": True},
        extra_body=FRESH,
    )
    assert text == expected.choices[0].message.content
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert all(c.model == MODEL for c in chunks)
    first = chunks[0].choices[0]
    assert first.delta.role == "assistant"
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[-1].choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in with_choices[:-1])
    # include_usage: one last chunk, no choices, the usage of the whole request.
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 16
    assert last.usage.prompt_tokens == expected.usage.prompt_tokens
    assert last.usage.total_tokens == last.usage.prompt_tokens + 16
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_include_usage_has_no_usage(client: openai.OpenAI) -> None:
    text, chunks = stream_text(client, STORY, temperature=0, max_tokens=4)
    assert text
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


@pytest.fixture(scope="module")
def story30(client: openai.OpenAI) -> str:
    """The greedy answer to STORY (30 tokens), used to pick stop strings it really contains."""
    text = greedy(client, STORY, 30)
    assert len(text.split()) >= 12, text
    return text


def _cut_at(text: str, stop: str) -> str:
    return text[: text.index(stop)]


def test_stop_string(client: openai.OpenAI, story30: str) -> None:
    words = story30.split()
    stop = " " + words[len(words) // 2]
    expected = _cut_at(story30, stop)
    assert expected  # the stop is in the middle, not at the start
    reply = chat(client, STORY, temperature=0, max_tokens=30, stop=stop)
    assert reply.choices[0].message.content == expected
    assert stop not in (reply.choices[0].message.content or "")
    assert reply.choices[0].finish_reason == "stop"


def test_stop_list_cuts_at_earliest_match(client: openai.OpenAI, story30: str) -> None:
    words = story30.split()
    early, late = " " + words[len(words) // 3], " " + words[2 * len(words) // 3]
    expected = _cut_at(story30, early)
    assert len(expected) < story30.index(late)
    reply = chat(
        client, STORY, temperature=0, max_tokens=30, stop=["never-appears-xyz", late, early]
    )
    content = reply.choices[0].message.content or ""
    assert content == expected
    assert early not in content and late not in content
    assert reply.choices[0].finish_reason == "stop"


def test_stop_streaming(client: openai.OpenAI, story30: str) -> None:
    words = story30.split()
    stop = " " + words[len(words) // 2]
    text, chunks = stream_text(client, STORY, temperature=0, max_tokens=30, stop=[stop])
    assert text == _cut_at(story30, stop)
    assert stop not in text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]
    assert finishes == ["stop"]


def test_n_choices(client: openai.OpenAI) -> None:
    reply = chat(client, STORY, temperature=1, seed=7, n=3, max_tokens=8)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert all(c.message.role == "assistant" and c.message.content for c in reply.choices)
    # A long story does not end in 8 tokens: each choice produced exactly 8.
    assert all(c.finish_reason == "length" for c in reply.choices)
    assert reply.usage.completion_tokens == 3 * 8
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 24
    # Independent samples, not one answer copied three times.
    assert len({c.message.content for c in reply.choices}) > 1


def test_n_choices_usage_is_sum_of_choice_tokens(client: openai.OpenAI) -> None:
    reply = chat(client, STORY, temperature=1, seed=11, n=2, max_tokens=6, logprobs=True)
    per_choice = [len(c.logprobs.content) for c in reply.choices]
    assert reply.usage.completion_tokens == sum(per_choice)


def test_n_choices_streaming(client: openai.OpenAI) -> None:
    chunks = list(
        chat(
            client,
            STORY,
            temperature=1,
            seed=3,
            n=2,
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    roles: dict[int, str | None] = {}
    texts: dict[int, str] = defaultdict(str)
    finishes: dict[int, list[str]] = defaultdict(list)
    for c in chunks:
        for choice in c.choices:
            roles.setdefault(choice.index, choice.delta.role)
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index].append(choice.finish_reason)
    assert roles == {0: "assistant", 1: "assistant"}
    assert set(texts) == {0, 1} and all(texts.values())
    assert finishes == {0: ["length"], 1: ["length"]}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16


def test_seed_reproduces_sampling(client: openai.OpenAI) -> None:
    def sample(seed: int) -> Any:
        return chat(client, STORY, temperature=1, seed=seed, max_tokens=40, logit_bias=NO_EOS,
                    extra_body=FRESH)  # fmt: skip

    first, second, other = sample(1234), sample(1234), sample(4321)
    text = first.choices[0].message.content
    assert first.usage.completion_tokens == 40
    assert second.choices[0].message.content == text
    assert other.choices[0].message.content != text


def test_temperature_zero_is_deterministic(client: openai.OpenAI) -> None:
    first = greedy(client, STORY, 24, extra_body=FRESH)
    greedy(client, FRANCE, 8)  # another prompt in between changes the engine's cached prefix
    assert greedy(client, STORY, 24, extra_body=FRESH) == first
    assert greedy(client, STORY, 24, extra_body=FRESH) == first


def test_top_p_is_applied(client: openai.OpenAI) -> None:
    reference = greedy(client, STORY, 24)
    nucleus, free = [], []
    for seed in (0, 1, 2):
        options: dict[str, Any] = {"temperature": 1, "seed": seed, "max_tokens": 24}
        nucleus.append(chat(client, STORY, top_p=0.01, **options).choices[0].message.content)
        free.append(chat(client, STORY, **options).choices[0].message.content)
    # A 1% nucleus leaves only the most likely token: sampling collapses to greedy.
    assert nucleus == [reference] * 3
    # ...which it does not do without top_p (so the assertion above is not vacuous).
    assert any(text != reference for text in free)


REPEAT = "Repeat the word 'apple' 30 times."


@pytest.mark.parametrize("penalty", ["frequency_penalty", "presence_penalty"])
def test_penalties_change_repetitive_output(client: openai.OpenAI, penalty: str) -> None:
    off = {"extra_body": {"repetition_penalty": 1.0}}  # without the model's repetition guard
    plain = greedy(client, REPEAT, 30, **off)
    assert plain.count("apple") >= 10, plain  # the greedy answer really is repetitive
    guarded = greedy(client, REPEAT, 30)  # the bundled model's default guard
    assert guarded.count("apple") < plain.count("apple"), guarded
    penalised = greedy(client, REPEAT, 30, **{penalty: 2.0}, **off)
    assert penalised != plain


def test_logprobs(client: openai.OpenAI) -> None:
    reply = chat(client, STORY, temperature=0, max_tokens=12, logprobs=True, top_logprobs=3)
    content = reply.choices[0].message.content
    entries = reply.choices[0].logprobs.content
    assert len(entries) == reply.usage.completion_tokens == 12
    assert "".join(e.token for e in entries) == content
    for e in entries:
        assert e.logprob <= 0
        assert e.bytes == list(e.token.encode())
        assert len(e.top_logprobs) == 3
        values = [t.logprob for t in e.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert all(v <= 0 for v in values)
        # Greedy picks the most likely token.
        assert e.top_logprobs[0].token == e.token
        assert e.top_logprobs[0].logprob == pytest.approx(e.logprob)


def test_logprobs_without_top(client: openai.OpenAI) -> None:
    reply = chat(client, STORY, temperature=0, max_tokens=5, logprobs=True)
    entries = reply.choices[0].logprobs.content
    assert len(entries) == 5
    assert all(e.top_logprobs == [] and e.logprob <= 0 for e in entries)
    assert chat(client, STORY, temperature=0, max_tokens=5).choices[0].logprobs is None


def test_user_field_accepted(client: openai.OpenAI) -> None:
    reply = chat(client, FRANCE, temperature=0, max_tokens=30, user="user-1234")
    assert "Paris" in (reply.choices[0].message.content or "")


# --- legacy completions ----------------------------------------------------------------------
PROMPT = "The capital of France is"
COUNTING = "One, two, three,"


def test_completion_default_max_tokens(client: openai.OpenAI, vocab: llama_cpp.Llama) -> None:
    reply = client.completions.create(model=MODEL, prompt=PROMPT, temperature=0)
    assert reply.object == "text_completion"
    assert reply.id.startswith("cmpl-") and reply.model == MODEL
    assert len(reply.choices) == 1 and reply.choices[0].index == 0
    assert "Paris" in reply.choices[0].text
    assert 0 < reply.usage.completion_tokens <= 16
    # With no way to end early, the default limit shows: exactly 16 tokens.
    endless = client.completions.create(
        model=MODEL, prompt=PROMPT, temperature=0, logit_bias=NO_EOS
    )
    assert endless.choices[0].finish_reason == "length"
    assert endless.usage.completion_tokens == 16
    assert reply.usage.prompt_tokens == count_tokens(vocab, PROMPT)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_completion_streaming(client: openai.OpenAI) -> None:
    expected = client.completions.create(
        model=MODEL, prompt=PROMPT, temperature=0, max_tokens=8, extra_body=FRESH
    )
    chunks = list(
        client.completions.create(
            model=MODEL,
            prompt=PROMPT,
            extra_body=FRESH,
            temperature=0,
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "text_completion" for c in chunks)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == expected.choices[0].text
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == [expected.choices[0].finish_reason]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == expected.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == expected.usage.prompt_tokens


def test_completion_echo(client: openai.OpenAI) -> None:
    plain = client.completions.create(model=MODEL, prompt=PROMPT, temperature=0, max_tokens=6)
    echoed = client.completions.create(
        model=MODEL, prompt=PROMPT, temperature=0, max_tokens=6, echo=True
    )
    assert echoed.choices[0].text == PROMPT + plain.choices[0].text


def test_completion_logprobs_format(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model=MODEL,
        prompt=PROMPT,
        temperature=0,
        max_tokens=5,
        logprobs=2,
        # logprobs are the model's own; the bundled model's repetition guard would move the
        # greedy choice away from the most likely token
        extra_body={"repetition_penalty": 1.0},
    )
    choice = reply.choices[0]
    lp = choice.logprobs
    assert lp is not None
    n = reply.usage.completion_tokens
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    assert len(lp.tokens) == n == 5
    assert "".join(lp.tokens) == choice.text
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert logprob <= 0
        assert isinstance(top, dict) and 1 <= len(top) <= 2
        # Greedy: the chosen token is the most likely one.
        best = max(top, key=lambda t: top[t])
        assert best == token and top[token] == pytest.approx(logprob)
    # text_offset: where each token starts; consecutive offsets differ by the token's length.
    offsets = lp.text_offset
    assert offsets[0] in (0, len(PROMPT))
    assert all(b - a == len(t) for a, b, t in zip(offsets, offsets[1:], lp.tokens, strict=False))


def test_completion_list_of_prompts(client: openai.OpenAI) -> None:
    alone = [
        client.completions.create(model=MODEL, prompt=p, temperature=0, max_tokens=6)
        for p in (PROMPT, COUNTING)
    ]
    both = client.completions.create(
        model=MODEL, prompt=[PROMPT, COUNTING], temperature=0, max_tokens=6
    )
    assert [c.index for c in both.choices] == [0, 1]
    assert [c.text for c in both.choices] == [a.choices[0].text for a in alone]
    assert both.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone)
    assert both.usage.completion_tokens == sum(a.usage.completion_tokens for a in alone)


def test_completion_token_prompt(client: openai.OpenAI, vocab: llama_cpp.Llama) -> None:
    ids = vocab.tokenize(PROMPT.encode(), add_bos=False, special=True)
    by_text = client.completions.create(model=MODEL, prompt=PROMPT, temperature=0, max_tokens=6)
    by_ids = client.completions.create(model=MODEL, prompt=ids, temperature=0, max_tokens=6)
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_ids.usage.prompt_tokens == len(ids)


# --- models and errors -----------------------------------------------------------------------
def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    listed = client.models.list()
    assert MODEL in [m.id for m in listed.data]
    model = client.models.retrieve(MODEL)
    assert model.id == MODEL and model.object == "model"
    assert isinstance(model.created, int) and model.owned_by


def test_retrieve_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    assert caught.value.body["code"] == "model_not_found"


@pytest.mark.parametrize("stream", [False, True])
def test_chat_unknown_model_is_404(client: openai.OpenAI, stream: bool) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(
            model="no-such-model", messages=user(FRANCE), max_tokens=4, stream=stream
        )
    assert caught.value.status_code == 404
    assert caught.value.body["code"] == "model_not_found"
    assert caught.value.body["param"] == "model"


def test_completion_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.completions.create(model="no-such-model", prompt=PROMPT, max_tokens=4)
    assert caught.value.body["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"temperature": 3}, "temperature"),
        ({"n": 0}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"top_p": 0}, "top_p"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
    ],
)
def test_invalid_parameters_are_400(
    client: openai.OpenAI, options: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client, FRANCE, **{"max_tokens": 4, **options})
    assert caught.value.status_code == 400
    assert caught.value.body["type"] == "invalid_request_error"
    assert caught.value.body["param"] == param


# --- concurrency and disconnects -------------------------------------------------------------
CONCURRENT = [
    "Name a fruit that is red.",
    "Write a haiku about the sea.",
    "What is two plus two?",
    "Describe a cat in one sentence.",
    "Give me a tip for learning to code.",
    "What colour is the sky?",
    "Tell me a fact about the moon.",
    "Write a long story about a dragon.",
]


async def _stream_async(client: openai.AsyncOpenAI, content: str) -> tuple[str, set[str]]:
    stream = await client.chat.completions.create(
        model=MODEL, messages=user(content), temperature=0, max_tokens=16, stream=True,
        extra_body=FRESH,
    )  # fmt: skip
    text, ids, finished = "", set(), False
    async for chunk in stream:
        ids.add(chunk.id)
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finished = finished or choice.finish_reason is not None
    assert finished, content
    return text, ids


def test_concurrent_streams_do_not_interfere(server: KaiyuanServer, client: openai.OpenAI) -> None:
    alone = [stream_text(client, p, temperature=0, max_tokens=16, extra_body=FRESH)[0]
             for p in CONCURRENT]  # fmt: skip
    assert len(set(alone)) == len(alone)  # distinct answers, so cross-talk would show

    async def together() -> list[tuple[str, set[str]]]:
        async with server.async_client(timeout=120) as aclient:
            return await asyncio.gather(*(_stream_async(aclient, p) for p in CONCURRENT))

    results = asyncio.run(together())
    assert [text for text, _ in results] == alone
    ids = [i for _, stream_ids in results for i in stream_ids]
    assert all(len(stream_ids) == 1 for _, stream_ids in results)
    assert len(set(ids)) == len(CONCURRENT)


LONG = "Repeat the word 'apple' forever."
# A 2000-token generation takes 20+ s here; a cancelled one frees the engine at once.
FOLLOW_UP_LIMIT = 10.0


def _timed_follow_up(client: openai.OpenAI) -> float:
    start = time.monotonic()
    reply = chat(client, FRANCE, temperature=0, max_tokens=1)
    assert reply.usage.completion_tokens == 1
    return time.monotonic() - start


def test_closed_stream_stops_generation(client: openai.OpenAI) -> None:
    stream = chat(client, LONG, temperature=0, max_tokens=2000, logit_bias=NO_EOS, stream=True)
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    stream.close()
    elapsed = _timed_follow_up(client)
    assert elapsed < FOLLOW_UP_LIMIT, f"follow-up waited {elapsed:.1f} s behind a closed stream"


def test_client_timeout_stops_generation(server: KaiyuanServer, client: openai.OpenAI) -> None:
    impatient = server.client(timeout=0.5)
    with pytest.raises(openai.APITimeoutError):
        chat(impatient, LONG, temperature=0, max_tokens=2000, logit_bias=NO_EOS)
    elapsed = _timed_follow_up(client)
    assert elapsed < FOLLOW_UP_LIMIT, f"follow-up waited {elapsed:.1f} s behind a dropped request"


# --- service endpoints -----------------------------------------------------------------------
def test_openapi_documents_routes_and_errors(server: KaiyuanServer) -> None:
    spec = httpx.get(server.url + "/openapi.json", timeout=10).json()
    paths = spec["paths"]
    for path in (
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/v1/models/{model_id}",
        "/health",
        "/ready",
    ):
        assert path in paths, path
    responses = paths["/v1/chat/completions"]["post"]["responses"]
    for status in ("400", "404", "503"):
        assert status in responses, status
        schema = responses[status]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith("/ErrorResponse")


@pytest.mark.parametrize("path", ["/health", "/ready"])
def test_health_and_ready(server: KaiyuanServer, path: str) -> None:
    response = httpx.get(server.url + path, timeout=60)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    # the chat model served from the start; others appear once loaded, all "ok"
    assert body["models"][MODEL] == "ok"
    assert set(body["models"].values()) == {"ok"}
