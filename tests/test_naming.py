"""Names a user types for catalogue models: ids, Ollama-style family:size, a :QUANT suffix."""

from __future__ import annotations

import pytest

from kaiyuan.errors import InvalidRequest
from kaiyuan.store import catalog, naming
from kaiyuan.store.catalog import CatalogModel


@pytest.mark.parametrize(
    ("name", "model_id", "quant"),
    [
        ("qwen2.5-0.5b-instruct", "qwen2.5-0.5b-instruct", None),
        ("qwen2.5:0.5b", "qwen2.5-0.5b-instruct", None),
        ("Qwen2.5:0.5B", "qwen2.5-0.5b-instruct", None),
        ("qwen3:8b", "qwen3-8b", None),
        ("qwen3:30b-a3b", "qwen3-30b-a3b", None),
        ("qwen3:30b", "qwen3-30b-a3b", None),  # Ollama's name for the same model
        ("qwen3:0.6b", "qwen3-0.6b", None),  # not qwen3-embedding-0.6b
        ("deepseek-r1:7b", "deepseek-r1-distill-qwen-7b", None),
        ("deepseek-r1:8b", "deepseek-r1-distill-llama-8b", None),
        ("deepseek-r1:671b", "deepseek-r1", None),
        ("deepseek-r1", "deepseek-r1", None),  # an id, though also a family prefix
        ("llama3.1:8b", "llama-3.1-8b-instruct", None),
        ("gemma3:270m", "gemma-3-270m-it", None),
        ("mistral-nemo:12b", "mistral-nemo-instruct-2407", None),
        ("qwen2.5vl:7b", "qwen2.5-vl-7b-instruct", None),
        ("qwen2.5-coder:7b", "qwen2.5-coder-7b-instruct", None),
        ("wan2.1:1.3b", "wan2.1-t2v-1.3b", None),
        ("qwen3-8b:Q8_0", "qwen3-8b", "Q8_0"),
        ("qwen3:8b:q8_0", "qwen3-8b", "Q8_0"),
        ("qwen2.5:7b-instruct-q4_K_M", "qwen2.5-7b-instruct", "Q4_K_M"),
        ("deepseek-r1:q4_k_m", "deepseek-r1", "Q4_K_M"),
    ],
)
def test_names_resolve(name: str, model_id: str, quant: str | None) -> None:
    named = naming.lookup(name)
    assert named is not None
    assert (named.model.id, named.quant) == (model_id, quant)


def test_every_catalogue_model_answers_to_its_id_and_its_family_size_name() -> None:
    for model in catalog.models():
        assert naming.require(model.id).model is model
        alias = naming.ollama_name(model)
        if alias is not None:
            assert naming.require(alias).model is model, alias


@pytest.mark.parametrize(
    "name", ["llama3:8b", "qwen2.5:7b-base", "nope", "hf", "qwen3:8b-q4-extra"]
)
def test_names_that_are_no_catalogue_model(name: str) -> None:
    assert naming.lookup(name) is None


def test_a_family_without_a_size_lists_its_sizes() -> None:
    with pytest.raises(InvalidRequest) as caught:
        naming.lookup("qwen3")
    message = caught.value.message
    assert message.startswith("'qwen3' is a model family; name one of its sizes:")
    assert "qwen3:0.6b" in message and "qwen3:32b" in message
    assert "qwen3-embedding" not in message


def test_unknown_names_list_close_catalogue_names() -> None:
    message = naming.unknown("qwen2.5-7b").message
    close = message.split("did you mean ")[1].split("?")[0].split(", ")
    assert close[0] == "qwen2.5-7b-instruct"
    assert 1 <= len(close) <= 4
    assert all(catalog.by_id(c) is not None for c in close)
    # A family:size spelling gets family:size suggestions.
    assert "llama3.1:8b" in naming.unknown("llama3:8b").message
    # A known family with a size it does not have lists the sizes it has.
    assert "qwen3:8b" in naming.unknown("qwen3:9b").message
    # Nothing close: no guess, but what a name looks like.
    far = naming.unknown("zzzzzzzz").message
    assert "did you mean" not in far and "hf:ORG/REPO" in far


def test_an_ambiguous_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = catalog.models()
    twin = real[0]
    clone = CatalogModel(
        **{f: getattr(twin, f) for f in CatalogModel.__slots__}  # type: ignore[attr-defined]
        | {"id": twin.id + "-twin"}
    )
    monkeypatch.setattr(catalog, "models", lambda: (*real, clone))
    with pytest.raises(InvalidRequest) as caught:
        naming.lookup(naming.ollama_name(twin) or "")
    assert twin.id in caught.value.message and clone.id in caught.value.message
