"""The request fields real clients send, through the official ``openai`` client: vLLM's and
llama.cpp's sampling extensions honoured, OpenAI's unused fields accepted, unknown names
ignored with a warning (or refused under ``strict_params``), bad values still 400s."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import MODEL
from tests.harness import KaiyuanServer, wait_for

pytestmark = pytest.mark.slow

FRESH = {"cache_prompt": False}  # output independent of what earlier tests cached
SHORT = [{"role": "user", "content": "Say only: yes"}]
STORY = [{"role": "user", "content": "Write a long story about a lighthouse."}]


def chat(client: openai.OpenAI, messages: Any = SHORT, **fields: Any) -> Any:
    extra = {**FRESH, **fields.pop("extra_body", {})}
    return client.chat.completions.create(
        model=MODEL, messages=messages, extra_body=extra, **fields
    )


def test_top_k_1_is_greedy(server: KaiyuanServer) -> None:
    client = server.client()
    greedy = chat(client, STORY, max_tokens=24, temperature=0).choices[0].message.content
    for seed in (1, 2):
        sampled = chat(
            client, STORY, max_tokens=24, temperature=1.0, seed=seed, extra_body={"top_k": 1}
        )
        assert sampled.choices[0].message.content == greedy


def test_ignore_eos_runs_to_max_tokens(server: KaiyuanServer) -> None:
    client = server.client()
    plain = chat(client, max_tokens=40, temperature=0)
    assert plain.choices[0].finish_reason == "stop" and plain.usage.completion_tokens < 40
    forced = chat(client, max_tokens=40, temperature=0, extra_body={"ignore_eos": True})
    assert forced.choices[0].finish_reason == "length"
    assert forced.usage.completion_tokens == 40
    legacy = client.completions.create(
        model=MODEL, prompt="Yes.", max_tokens=20, temperature=0,
        extra_body={**FRESH, "ignore_eos": True},
    )  # fmt: skip
    assert legacy.usage.completion_tokens == 20  # type: ignore[union-attr]


def test_min_tokens_holds_the_end_back(server: KaiyuanServer) -> None:
    client = server.client()
    plain = chat(client, max_tokens=60, temperature=0)
    short = plain.usage.completion_tokens
    assert plain.choices[0].finish_reason == "stop" and short < 40
    held = chat(client, max_tokens=60, temperature=0, extra_body={"min_tokens": short + 10})
    assert held.usage.completion_tokens >= short + 10


def test_typical_p_is_accepted_and_bounded(server: KaiyuanServer) -> None:
    client = server.client()
    a = chat(client, STORY, max_tokens=12, temperature=1.0, seed=1,
             extra_body={"typical_p": 0.01})  # fmt: skip
    b = chat(client, STORY, max_tokens=12, temperature=1.0, seed=2,
             extra_body={"typical_p": 0.01})  # fmt: skip
    assert a.choices[0].message.content == b.choices[0].message.content  # one token kept


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"typical_p": 0}, "typical_p"),
        ({"typical_p": 1.5}, "typical_p"),
        ({"top_k": "many"}, "top_k"),
        ({"min_p": 2}, "min_p"),
        ({"min_tokens": -1}, "min_tokens"),
        ({"min_tokens": 50, "max_tokens": 10}, "min_tokens"),
        ({"ignore_eos": "sometimes"}, "ignore_eos"),
        ({"modalities": ["audio"]}, "modalities[0]"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"metadata": {str(i): "v" for i in range(17)}}, "metadata"),
    ],
)
def test_bad_values_of_known_fields_are_400s(
    server: KaiyuanServer, extra: dict[str, Any], param: str
) -> None:
    body = {"model": MODEL, "messages": SHORT, "max_tokens": 4, **extra}
    reply = httpx.post(server.url + "/v1/chat/completions", json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == param


def test_openai_fields_kaiyuan_does_not_use_are_accepted(server: KaiyuanServer) -> None:
    reply = server.client().chat.completions.create(
        model=MODEL,
        messages=SHORT,  # type: ignore[arg-type]
        max_tokens=4,
        metadata={"team": "docs"},
        store=False,
        service_tier="auto",
        prompt_cache_key="conversation-42",
        safety_identifier="user-hash",
        verbosity="low",
        modalities=["text"],
        reasoning_effort="minimal",
        user="someone",
    )
    assert reply.choices[0].message.content is not None
    legacy = server.client().completions.create(
        model=MODEL, prompt="Hi", max_tokens=2, extra_body={"metadata": {"a": "b"}, "store": True}
    )
    assert legacy.choices[0].text is not None


def test_unknown_fields_are_ignored_with_one_warning(server: KaiyuanServer) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hi", "refusal": None, "frob_nested": 1}],
        "max_tokens": 2,
        "frobnicate": True,
        "stream_options": None,
    }
    reply = httpx.post(server.url + "/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    assert wait_for(lambda: "frobnicate" in server.log(), 5)
    line = next(x for x in server.log().splitlines() if "frobnicate" in x)
    assert "WARNING" in line and "/v1/chat/completions" in line
    for name in ("frob_nested", "refusal"):
        assert name in line
    assert server.log().count("frobnicate") == 1


def test_strict_params_refuses_unknown_fields(tmp_path: Path) -> None:
    with KaiyuanServer(home=tmp_path, env={"KAIYUAN_STRICT_PARAMS": "1"}) as server:
        client = server.client()
        with pytest.raises(openai.BadRequestError) as top:
            chat(client, max_tokens=2, extra_body={"frobnicate": True})
        error = top.value.body
        assert error["param"] == "frobnicate"  # type: ignore[index]
        assert error["message"] == "unrecognized request argument supplied: frobnicate"  # type: ignore[index]
        nested = {"model": MODEL, "max_tokens": 2,
                  "messages": [{"role": "user", "content": "Hi", "frob": 1}]}  # fmt: skip
        reply = httpx.post(server.url + "/v1/chat/completions", json=nested)
        assert reply.status_code == 400
        assert reply.json()["error"]["param"] == "messages[0].frob"
        # known extensions are not "unknown"
        assert chat(client, max_tokens=2, extra_body={"top_k": 5, "min_tokens": 1}).choices
        with pytest.raises(openai.BadRequestError) as responses:
            client.responses.create(model=MODEL, input="hi", extra_body={"frobnicate": 1})
        assert responses.value.body["param"] == "frobnicate"  # type: ignore[index]
