"""Per-request sampling on llama.cpp: sampler chains, logprobs and token bytes."""

from __future__ import annotations

import ctypes
import secrets
from functools import cached_property
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import _internals as llx

from kaiyuan.engines.base import REPETITION_WINDOW, CandidateLogprob, SamplingParams, TokenLogprob
from kaiyuan.errors import InvalidRequest


class Vocabulary:
    """Token bytes (cached) and end-of-generation checks for one model."""

    def __init__(self, vocab: Any, n_vocab: int) -> None:
        self.vocab = vocab
        self.size = n_vocab
        self._pieces: dict[int, bytes] = {}

    def piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            size = 64
            while True:
                buf = ctypes.create_string_buffer(size)
                n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, size, 0, False)
                if n >= 0:
                    break
                size = -n
            piece = self._pieces[token] = buf.raw[:n]
        return piece

    def is_end(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    @cached_property
    def ends(self) -> tuple[int, ...]:
        """Every end-of-generation token id (EOS, EOT, <|im_end|>, ...), found once."""
        return tuple(t for t in range(self.size) if llama_cpp.llama_vocab_is_eog(self.vocab, t))


def grammar_chain(vocab: Vocabulary, gbnf: str) -> llx.LlamaSampler:
    chain = llx.LlamaSampler()
    grammar = llama_cpp.llama_sampler_init_grammar(vocab.vocab, gbnf.encode(), b"root")
    if not grammar:
        chain.close()
        raise InvalidRequest(
            "the output constraint (grammar) could not be compiled", param="response_format"
        )
    llama_cpp.llama_sampler_chain_add(chain.sampler, grammar)
    return chain


def sampler(vocab: Vocabulary, p: SamplingParams, window: int) -> llx.LlamaSampler:
    """grammar -> logit bias -> penalties -> top-k -> typical -> top-p -> min-p -> temperature
    -> seeded draw (or greedy), llama.cpp's own order."""
    # The grammar goes first: later samplers then only see tokens it allows.
    s = grammar_chain(vocab, p.grammar) if p.grammar is not None else llx.LlamaSampler()
    if p.logit_bias:
        s.add_logit_bias(vocab.size, dict(p.logit_bias))
    if p.presence_penalty or p.frequency_penalty:
        # The window must be explicit: llama.cpp's sampler reads -1 as 0 (= off). Only sampled
        # tokens enter it, so, as in OpenAI's API, the prompt is not penalised.
        s.add_penalties(vocab.size, window, 1.0, p.frequency_penalty, p.presence_penalty)
    if p.repetition_penalty != 1.0:
        # a short window of its own: a multiplicative penalty over the whole answer would
        # punish every common word
        s.add_penalties(vocab.size, REPETITION_WINDOW, p.repetition_penalty, 0.0, 0.0)
    if p.temperature == 0:
        s.add_greedy()
        return s
    if p.top_k > 0:
        s.add_top_k(p.top_k)
    if p.typical_p < 1.0:
        s.add_typical(p.typical_p, 1)
    if p.top_p < 1.0:
        s.add_top_p(p.top_p, 1)
    if p.min_p > 0.0:
        s.add_min_p(p.min_p, 1)
    s.add_temp(p.temperature)
    s.add_dist(secrets.randbits(32) if p.seed is None else p.seed & 0xFFFFFFFF)
    return s


def sample_without_end(
    chain: llx.LlamaSampler, ctx: Any, index: int, vocab: Vocabulary, *, grammar: bool
) -> int:
    """Draw from ``chain`` with every end-of-generation token impossible (ignore_eos,
    min_tokens). The logits row is restored afterwards, so logprobs still report the model's
    own distribution, as they do under logit_bias.

    A grammar that is complete and allows nothing more than an end keeps its end: with every
    token at -inf the draw would pick an arbitrary one, which the grammar rejects by aborting
    the process."""
    if not vocab.ends or (grammar and not _grammar_goes_on(chain, vocab)):
        return int(llama_cpp.llama_sampler_sample(chain.sampler, ctx, index))
    row = llama_cpp.llama_get_logits_ith(ctx, index)
    saved = [(t, row[t]) for t in vocab.ends]
    for t, _ in saved:
        row[t] = -np.inf
    try:
        return int(llama_cpp.llama_sampler_sample(chain.sampler, ctx, index))
    finally:
        for t, value in saved:
            row[t] = value


_TOKEN_DATA = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)


def _grammar_goes_on(chain: llx.LlamaSampler, vocab: Vocabulary) -> bool:
    """Whether the grammar (the chain's first sampler) allows a token other than an end now."""
    grammar = llama_cpp.llama_sampler_chain_get(chain.sampler, 0)
    ends = np.array(vocab.ends, dtype=np.intc)
    if not _allowed(grammar, ends).any():
        return True  # not complete: it forbids the ends itself, and allows something else
    return bool(_allowed(grammar, np.delete(np.arange(vocab.size, dtype=np.intc), ends)).any())


def _allowed(grammar: Any, tokens: Any) -> Any:
    """Which of ``tokens`` the grammar allows next (it sets the others' logits to -inf)."""
    data = np.zeros(len(tokens), dtype=_TOKEN_DATA)
    data["id"] = tokens
    cur = llama_cpp.llama_token_data_array(
        data=data.ctypes.data_as(llama_cpp.llama_token_data_p),
        size=len(data),
        selected=-1,
        sorted=False,
    )
    llama_cpp.llama_sampler_apply(grammar, ctypes.byref(cur))
    return np.isfinite(data["logit"])


def logprob(ctx: Any, index: int, vocab: Vocabulary, token: int, top_k: int) -> TokenLogprob:
    """The chosen token's log-probability (and the top k) from the raw logits at ``index``."""
    ptr = llama_cpp.llama_get_logits_ith(ctx, index)
    logits = np.ctypeslib.as_array(ptr, shape=(vocab.size,)).astype(np.float64)
    peak = logits.max()
    logz = peak + np.log(np.exp(logits - peak).sum())
    top: tuple[CandidateLogprob, ...] = ()
    if top_k > 0:
        ids = np.argpartition(-logits, top_k)[:top_k]
        ids = ids[np.argsort(-logits[ids])]
        top = tuple(_top(vocab, int(i), float(logits[i] - logz)) for i in ids)
    piece = vocab.piece(token)
    return TokenLogprob(piece.decode("utf-8", "replace"), piece, float(logits[token] - logz), top)


def _top(vocab: Vocabulary, token: int, value: float) -> CandidateLogprob:
    piece = vocab.piece(token)
    return CandidateLogprob(piece.decode("utf-8", "replace"), piece, value)
