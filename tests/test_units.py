"""Pure unit tests: stop/UTF-8 handling, the sandboxed chat template, validation messages."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kaiyuan.chat.template import ChatTemplate
from kaiyuan.engines.base import Delta, TokenLogprob
from kaiyuan.engines.textstream import TextStream
from kaiyuan.errors import InvalidRequest, TemplateError
from kaiyuan.protocol.openai.chat import ChatCompletionRequest
from kaiyuan.server.errors import validation_message
from tests.fakes import CHATML

SSTI = "{{ cycler.__init__.__globals__.os.popen('id').read() }}"


def lp(token: str) -> TokenLogprob:
    return TokenLogprob(token=token, bytes=token.encode(), logprob=-0.5)


def feed(stream: TextStream, *pieces: bytes | str) -> list[Delta]:
    """Push each piece; returns the non-empty deltas, then the flush (if any)."""
    out = []
    for piece in pieces:
        delta = stream.push(piece.encode() if isinstance(piece, str) else piece)
        if delta is not None:
            out.append(delta)
    tail = stream.flush()
    if tail is not None:
        out.append(tail)
    return out


def text_of(deltas: list[Delta]) -> str:
    return "".join(d.text for d in deltas)


# --- TextStream ---------------------------------------------------------------------------------
def test_textstream_without_stop_passes_text_through() -> None:
    stream = TextStream()
    assert stream.push(b"Hel") == Delta("Hel")
    assert stream.push(b"lo") == Delta("lo")
    assert stream.flush() is None
    assert not stream.stopped


def test_stop_split_across_token_boundaries_is_cut_and_never_emitted() -> None:
    stream = TextStream(stop=("STOP",))
    emitted = [stream.push(p.encode()) for p in ["Hello S", "T", "O", "P and more"]]
    assert stream.stopped
    text = "".join(d.text for d in emitted if d is not None)
    assert text == "Hello "
    assert "S" not in text
    # Nothing further comes out once stopped.
    assert stream.push(b"again") is None
    assert stream.flush() is None


def test_partial_stop_is_held_back_until_it_can_no_longer_match() -> None:
    stream = TextStream(stop=("</s>",))
    first = stream.push(b"abc</")
    assert first is not None and first.text == "abc"  # "</" might still become "</s>"
    second = stream.push(b"p>")
    assert second is not None and second.text == "</p>"  # it did not: released
    assert not stream.stopped


def test_held_back_prefix_is_released_by_flush() -> None:
    stream = TextStream(stop=("###",))
    delta = stream.push(b"answer ##")
    assert delta is not None and delta.text == "answer "
    tail = stream.flush()
    assert tail is not None and tail.text == "##"


def test_overlapping_stop_prefix() -> None:
    # "aaab" with stop "aab": the match starts at index 1, so only "a" is text.
    assert text_of(feed(TextStream(stop=("aab",)), "a", "a", "a", "b", "zzz")) == "a"


def test_multiple_stops_earliest_wins() -> None:
    stream = TextStream(stop=("world", "lo w"))
    delta = stream.push(b"hello world")
    assert stream.stopped
    assert delta is not None and delta.text == "hel"


def test_multiple_stops_earliest_wins_across_tokens() -> None:
    deltas = feed(TextStream(stop=("xyz", "b")), "a", "x", "y", "b", "xyz")
    assert text_of(deltas) == "axy"


def test_stop_at_very_start_emits_nothing() -> None:
    stream = TextStream(stop=("\n",))
    assert stream.push(b"\nrest") is None
    assert stream.stopped


def test_multibyte_character_split_across_tokens() -> None:
    stream = TextStream()
    assert stream.push("é".encode()[:1]) is None
    delta = stream.push("é".encode()[1:] + b"!")
    assert delta is not None and delta.text == "é!"


def test_four_byte_character_split_over_three_tokens() -> None:
    raw = "🙂".encode()
    assert len(raw) == 4
    stream = TextStream()
    assert stream.push(raw[:1]) is None
    assert stream.push(raw[1:3]) is None
    delta = stream.push(raw[3:])
    assert delta is not None and delta.text == "🙂"
    assert "\ufffd" not in delta.text


def test_multibyte_stop_split_across_tokens() -> None:
    raw = "你好。再见".encode()
    pieces = [raw[i : i + 2] for i in range(0, len(raw), 2)]  # splits characters mid-way
    assert text_of(feed(TextStream(stop=("。",)), *pieces)) == "你好"


def test_truncated_utf8_at_end_is_flushed_as_replacement() -> None:
    stream = TextStream()
    assert stream.push("é".encode()[:1]) is None
    tail = stream.flush()
    assert tail is not None and tail.text == "\ufffd"


def test_logprobs_travel_with_their_text() -> None:
    stream = TextStream()
    first = stream.push(b"Hi", lp("Hi"))
    assert first is not None and first.text == "Hi"
    assert [x.token for x in first.logprobs] == ["Hi"]
    second = stream.push(b" there", lp(" there"))
    assert second is not None and [x.token for x in second.logprobs] == [" there"]


def test_logprob_of_incomplete_character_waits_for_its_text() -> None:
    raw = "é".encode()
    stream = TextStream()
    assert stream.push(raw[:1], lp("a")) is None
    delta = stream.push(raw[1:], lp("b"))
    assert delta is not None and delta.text == "é"
    assert [x.token for x in delta.logprobs] == ["a", "b"]


def test_logprobs_of_held_back_text_are_held_too() -> None:
    stream = TextStream(stop=("END",))
    first = stream.push(b"ok ", lp("ok "))
    assert first is not None and [x.token for x in first.logprobs] == ["ok "]
    assert stream.push(b"E", lp("E")) is None  # held: could be the stop
    tail = stream.flush()
    assert tail is not None and tail.text == "E"
    assert [x.token for x in tail.logprobs] == ["E"]


def test_logprobs_of_stop_text_are_dropped() -> None:
    stream = TextStream(stop=("END",))
    stream.push(b"ok", lp("ok"))
    stream.push(b"EN", lp("EN"))
    delta = stream.push(b"D", lp("D"))
    assert stream.stopped
    tokens = [x.token for x in delta.logprobs] if delta else []
    assert "EN" not in tokens and "D" not in tokens


# --- ChatTemplate -------------------------------------------------------------------------------
def test_chat_template_renders_chatml() -> None:
    out = ChatTemplate(CHATML).render(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    assert out == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chat_template_without_generation_prompt() -> None:
    out = ChatTemplate(CHATML).render(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=False
    )
    assert out == "<|im_start|>user\nHi<|im_end|>\n"


def test_chat_template_gets_bos_and_eos() -> None:
    template = ChatTemplate(
        "{{ bos_token }}{{ messages[0]['content'] }}{{ eos_token }}",
        bos_token="<s>",
        eos_token="</s>",
    )
    assert template.render([{"role": "user", "content": "x"}]) == "<s>x</s>"


def test_jinja_in_message_content_is_inert_text() -> None:
    out = ChatTemplate(CHATML).render([{"role": "user", "content": SSTI}])
    assert SSTI in out
    assert "uid=" not in out


def test_raise_exception_becomes_invalid_request() -> None:
    source = (
        "{% if messages[0]['role'] != 'user' %}"
        "{{ raise_exception('Conversation roles must start with user') }}{% endif %}ok"
    )
    template = ChatTemplate(source)
    assert template.render([{"role": "user", "content": "x"}]) == "ok"
    with pytest.raises(InvalidRequest) as caught:
        template.render([{"role": "assistant", "content": "x"}])
    assert "Conversation roles must start with user" in caught.value.message
    assert caught.value.param == "messages"
    assert caught.value.status == 400


@pytest.mark.parametrize(
    "source",
    [
        SSTI,
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages.__class__ }}{{ messages.__class__.__init__.__globals__ }}",
        "{% set _ = messages.append({'role': 'user', 'content': 'x'}) %}done",
        "{% set _ = messages[0].update({'role': 'system'}) %}done",
    ],
)
def test_unsafe_model_template_raises_template_error(source: str) -> None:
    with pytest.raises(TemplateError) as caught:
        ChatTemplate(source).render([{"role": "user", "content": "hi"}])
    assert caught.value.status == 500
    assert caught.value.code == "chat_template_error"
    assert "uid=" not in caught.value.message


def test_template_that_does_not_compile_raises_template_error() -> None:
    with pytest.raises(TemplateError):
        ChatTemplate("{% for m in messages %}unterminated")


def test_strftime_now_is_available() -> None:
    out = ChatTemplate("{{ strftime_now('%Y') }}").render([{"role": "user", "content": "x"}])
    assert out.isdigit() and len(out) == 4


# --- validation_message -------------------------------------------------------------------------
def request_errors(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Pydantic errors for a chat request, located the way FastAPI locates body errors."""
    with pytest.raises(ValidationError) as caught:
        ChatCompletionRequest.model_validate(payload)
    return [{**e, "loc": ("body", *e["loc"])} for e in caught.value.errors()]


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "x"}], **fields}


@pytest.mark.parametrize(
    ("loc", "param"),
    [
        (("body", "temperature"), "temperature"),
        (("body", "messages", 0, "role"), "messages[0].role"),
        (("body", "messages", 2, "content", 1, "text"), "messages[2].content[1].text"),
        (("body", "prompt", "list[int]", 3), "prompt[3]"),
        (("body", "stop", "list[constrained-str]", 0), "stop[0]"),
        (("body", "x", "function-after[_check(), str]"), "x"),
        (("query", "limit"), "limit"),
    ],
)
def test_validation_param_paths(loc: tuple[Any, ...], param: str) -> None:
    message, got = validation_message([{"type": "value_error", "loc": loc, "msg": "bad"}])
    assert got == param
    assert message == f"invalid value for '{param}': bad"


@pytest.mark.parametrize(
    ("loc", "param"),
    [
        (("body", "stop", "str"), "stop"),
        (("body", "prompt", "str"), "prompt"),
        (("body", "messages", 0, "content", "str"), "messages[0].content"),
    ],
)
def test_validation_param_drops_scalar_union_branch_tags(loc: tuple[Any, ...], param: str) -> None:
    # Pydantic tags each union branch in `loc`; "str" is such a tag, not a field.
    _, got = validation_message([{"type": "string_type", "loc": loc, "msg": "bad"}])
    assert got == param


def test_validation_message_strips_value_error_prefix() -> None:
    message, param = validation_message(
        [{"type": "value_error", "loc": ("body", "stop"), "msg": "Value error, stop is empty"}]
    )
    assert (message, param) == ("invalid value for 'stop': stop is empty", "stop")


def test_validation_message_invalid_json() -> None:
    message, param = validation_message([{"type": "json_invalid", "loc": ("body", 3), "msg": "x"}])
    assert param is None
    assert "not valid JSON" in message


def test_validation_message_missing_body() -> None:
    message, param = validation_message([{"type": "missing", "loc": ("body",), "msg": "x"}])
    assert param is None
    assert "request body is required" in message


def test_validation_message_extra_field() -> None:
    """Outside a request (kaiyuan's own translations) an unknown name is refused; the server
    collects them instead unless strict_params (tests/test_request_fields.py)."""
    message, param = validation_message(request_errors(chat(frobnicate=SSTI)))
    assert param == "frobnicate"
    assert message == "unrecognized request argument supplied: frobnicate"
    nested = chat(messages=[{"role": "user", "content": "x", "frob": 1}])
    _, param = validation_message(request_errors(nested))
    assert param == "messages[0].frob"


def test_a_client_chat_template_is_refused() -> None:
    message, param = validation_message(request_errors(chat(chat_template=SSTI)))
    assert param == "chat_template"
    assert "cannot supply a chat template" in message
    assert SSTI not in message


def test_validation_message_from_real_errors() -> None:
    message, param = validation_message(request_errors(chat(temperature=float("nan"))))
    assert param == "temperature"
    assert "temperature" in message
    _, param = validation_message(request_errors(chat(n=0)))
    assert param == "n"
    _, param = validation_message(request_errors(chat(top_logprobs=21, logprobs=True)))
    assert param == "top_logprobs"
