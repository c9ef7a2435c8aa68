"""What a model name typed by a user means in the catalogue.

Two spellings name a catalogue model, each optionally followed by ``:QUANT``:

- its catalogue id: ``qwen2.5-0.5b-instruct``, ``qwen3-8b:Q8_0``;
- an Ollama-style ``family:size``: ``qwen2.5:0.5b``, ``qwen3:30b-a3b``, ``deepseek-r1:7b``,
  ``qwen2.5:7b-instruct-q4_K_M``.

Ollama-style names are derived from the catalogue rather than listed: the size is the id's
size token (``0.5b``, ``270m``, ``30b-a3b``; else the parameter count), and the family part
matches, in this order, a family name exactly (``qwen3`` is the ``qwen3`` family), a family
whose name starts with it and a hyphen (``deepseek-r1:7b`` finds ``deepseek-r1-distill``),
or an id that does (``mistral-nemo:12b``). A family name matches without its punctuation,
so ``qwen2.5vl`` is ``qwen2.5-vl``; ``llama3:8b`` is not ``llama-3.1-8b-instruct``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from kaiyuan.errors import InvalidRequest
from kaiyuan.store import catalog
from kaiyuan.store.catalog import CatalogModel

_SIZE = re.compile(r"^\d+(?:\.\d+)?[bm]$")
_ACTIVE = re.compile(r"^a\d+(?:\.\d+)?b$")
_QUANT = re.compile(r"^(?:i?q\d\w*|f16|bf16|f32)$", re.IGNORECASE)
_FILLER = {"instruct", "it", "chat", "latest"}


@dataclass(slots=True, frozen=True)
class Named:
    """A catalogue model, and the quantisation the name asked for (None: this machine's)."""

    model: CatalogModel
    quant: str | None = None


def size_tag(model: CatalogModel) -> str | None:
    """``0.5b``, ``270m``, ``30b-a3b``: the size an Ollama-style name gives after the colon."""
    tokens = model.id.split("-")
    for i, token in enumerate(tokens):
        if _SIZE.match(token):
            active = tokens[i + 1] if i + 1 < len(tokens) else ""
            return f"{token}-{active}" if _ACTIVE.match(active) else token
    if not model.params_b:
        return None
    if model.params_b >= 1:
        return f"{round(model.params_b)}b"
    return f"{round(model.params_b * 1000)}m"


def ollama_name(model: CatalogModel) -> str | None:
    """The family:size name of a catalogue model (``qwen2.5:0.5b``), if it has a size."""
    size = size_tag(model)
    return f"{model.family}:{size}" if size else None


def lookup(text: str) -> Named | None:
    """The catalogue model ``text`` names, or None when it names none.

    Raises InvalidRequest when the name is ambiguous or names a family without a size."""
    name, _, rest = text.strip().partition(":")
    name = name.lower()
    model = catalog.by_id(name)
    if model is not None and (not rest or _parse_tag(rest.partition(":")[0]) is None):
        return Named(model, _quant(rest))
    if not rest:
        family = _family_members(name)
        if family:
            sizes = ", ".join(n for m in family if (n := ollama_name(m)))
            raise InvalidRequest(
                f"'{text}' is a model family; name one of its sizes: {sizes}", param="model"
            )
        return None
    tag, _, explicit = rest.partition(":")
    parsed = _parse_tag(tag)
    if parsed is None:
        return None
    size, tag_quant = parsed
    quant = explicit or tag_quant
    for tier in _tiers(name):
        found = [m for m in tier if _size_matches(m, size)]
        if len(found) > 1:
            raise InvalidRequest(
                f"'{text}' could be any of {', '.join(m.id for m in found)}: name one of them",
                param="model",
            )
        if found:
            return Named(found[0], _quant(quant))
    return None


def require(text: str) -> Named:
    """The catalogue model ``text`` names, or InvalidRequest listing close names."""
    named = lookup(text)
    if named is None:
        raise unknown(text)
    return named


def unknown(text: str) -> InvalidRequest:
    """The error for a name that is no catalogue model: close names, and what names look like."""
    name, _, rest = text.strip().lower().partition(":")
    if rest and (members := _family_members(name)):
        sizes = ", ".join(n for m in members if (n := ollama_name(m)))
        return InvalidRequest(
            f"no '{text}' in the catalogue; its sizes are: {sizes}", param="model"
        )
    close = suggestions(text)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return InvalidRequest(
        f"unknown model '{text}'{hint} Name a catalogue model (`kaiyuan models --catalog`), "
        "e.g. qwen2.5-0.5b-instruct or qwen3:8b, or a hub repo: hf:ORG/REPO or ms:ORG/REPO",
        param="model",
    )


def suggestions(text: str, n: int = 4) -> list[str]:
    """Catalogue ids (or family:size names) close to ``text``, best first."""
    if len(text) > 256:
        return []
    wanted = text.strip().lower()
    names: dict[str, str] = {}
    for m in catalog.models():
        names[m.id] = m.id
        if (alias := ollama_name(m)) is not None:
            names.setdefault(alias, m.id)
    close = difflib.get_close_matches(wanted, list(names), n=n * 2, cutoff=0.6)
    out: list[str] = []
    for match in close:
        # Show what the user would type: the alias when that is what came close.
        shown = match if match != names[match] and ":" in wanted else names[match]
        if shown not in out:
            out.append(shown)
    return out[:n]


def _parse_tag(tag: str) -> tuple[str, str | None] | None:
    """``7b-instruct-q4_K_M`` -> (``7b``, ``q4_K_M``); None when it is no size tag."""
    tokens = tag.lower().split("-") if tag else []
    if not tokens or not _SIZE.match(tokens[0]):
        return None
    size, rest = tokens[0], tokens[1:]
    if rest and _ACTIVE.match(rest[0]):
        size, rest = f"{size}-{rest[0]}", rest[1:]
    quant = None
    original = tag.split("-")
    for i, token in enumerate(rest):
        if token in _FILLER:
            continue
        if _QUANT.match(token) and quant is None:
            quant = original[len(original) - len(rest) + i]
            continue
        return None
    return size, quant


def _quant(text: str | None) -> str | None:
    if not text:
        return None
    return text.upper() if _QUANT.match(text) else text


def _size_matches(model: CatalogModel, size: str) -> bool:
    tag = size_tag(model)
    # Ollama's qwen3:30b is the 30b-a3b model: the total size alone names it too.
    return tag is not None and (tag == size or tag.split("-")[0] == size)


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _family_members(name: str) -> list[CatalogModel]:
    key = _key(name)
    return [m for m in catalog.models() if _key(m.family) == key] if key else []


def _tiers(name: str) -> list[list[CatalogModel]]:
    key = _key(name)
    if not key:
        return []
    models = catalog.models()
    exact = [m for m in models if _key(m.family) == key]
    family = [m for m in models if m.family.startswith(f"{name}-") and m not in exact]
    by_id = [m for m in models if m.id.startswith(f"{name}-") and m not in exact + family]
    return [exact, family, by_id]
