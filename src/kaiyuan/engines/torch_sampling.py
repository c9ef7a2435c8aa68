"""Token choice for the transformers engine, in the llama.cpp engine's order: grammar mask ->
logit bias -> presence/frequency and repetition penalties -> (greedy at temperature 0) top-k ->
top-p -> min-p -> temperature -> a seeded draw.

``Chooser`` is handed to ``model.generate`` as its last logits processor: transformers runs the
model (caches, rotary positions, experts, image features) and kaiyuan chooses each token, then
leaves ``generate`` exactly one finite logit so its greedy step takes that token. Grammars are
enforced with llguidance (see docs/architecture.md): kaiyuan's GBNF is converted to its Lark
dialect, and a matcher per request masks every token the grammar forbids.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import llguidance
import llguidance.numpy as llnp
import numpy as np
import torch
from llguidance.gbnf_to_lark import gbnf_to_lark
from transformers import LogitsProcessor, StoppingCriteria

from kaiyuan.engines.base import REPETITION_WINDOW, SamplingParams
from kaiyuan.errors import InvalidRequest

GRAMMAR_CACHE = 256


@lru_cache(maxsize=GRAMMAR_CACHE)
def lark_grammar(gbnf: str) -> str:
    """kaiyuan's GBNF as an llguidance grammar (a 400 if it cannot be converted)."""
    try:
        return str(llguidance.grammar_from("lark", gbnf_to_lark(gbnf)))
    except Exception as exc:
        raise InvalidRequest(
            f"the output constraint (grammar) could not be compiled: {exc}",
            param="response_format",
        ) from None


class Grammar:
    """One request's llguidance matcher over the model's vocabulary."""

    def __init__(self, tokenizer: Any, gbnf: str, vocab_size: int) -> None:
        self.matcher = llguidance.LLMatcher(tokenizer, lark_grammar(gbnf))
        if self.matcher.is_error():
            raise InvalidRequest(
                f"the output constraint (grammar) is invalid: {self.matcher.get_error()}",
                param="response_format",
            )
        self.vocab_size = vocab_size
        self._mask = llnp.allocate_token_bitmask(1, vocab_size)

    def allowed(self) -> Any:
        """A bool numpy array: which tokens the grammar allows next."""
        llnp.fill_next_token_bitmask(self.matcher, self._mask)
        bits = np.unpackbits(self._mask[0].view(np.uint8), bitorder="little")
        return bits[: self.vocab_size].astype(bool)

    def consume(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            raise RuntimeError(f"grammar rejected token {token}: {self.matcher.get_error()}")


class Chooser(LogitsProcessor):
    """A transformers logits processor that chooses each token itself and reports it."""

    def __init__(
        self,
        params: SamplingParams,
        *,
        grammar: Grammar | None,
        generator: Any,
        on_token: Callable[[int, Any], bool],
    ) -> None:
        self.params = params
        self.grammar = grammar
        self.generator = generator
        self.on_token = on_token  # (token, raw logits) -> False once generation must stop
        self.counts: Counter[int] = Counter()
        self.recent: deque[int] = deque(maxlen=REPETITION_WINDOW)
        self.done = False

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        raw = scores[0]
        token = self.choose(raw)
        if self.grammar is not None:
            self.grammar.consume(token)
        self.counts[token] += 1
        self.recent.append(token)
        self.done = not self.on_token(token, raw)
        forced = torch.full_like(scores, float("-inf"))
        forced[0, token] = 0.0
        return forced

    def choose(self, raw: Any) -> int:
        p = self.params
        logits = raw.clone()
        if self.grammar is not None:
            allowed = torch.from_numpy(self.grammar.allowed()).to(logits.device)
            n = min(len(allowed), len(logits))
            logits[:n][~allowed[:n]] = float("-inf")
            logits[n:] = float("-inf")
        for token, bias in p.logit_bias:
            logits[token] += bias
        if self.counts and (p.presence_penalty or p.frequency_penalty):
            seen = torch.tensor(list(self.counts), device=logits.device)
            times = torch.tensor([float(self.counts[t]) for t in self.counts], device=logits.device)
            logits[seen] -= p.frequency_penalty * times + p.presence_penalty
        if self.recent and p.repetition_penalty != 1.0:
            # llama.cpp's repeat penalty: shrink a positive logit, grow a negative one
            recent = torch.tensor(sorted(set(self.recent)), device=logits.device)
            values = logits[recent]
            logits[recent] = torch.where(
                values > 0, values / p.repetition_penalty, values * p.repetition_penalty
            )
        if p.temperature == 0:
            return int(torch.argmax(logits))
        if 0 < p.top_k < len(logits):
            kth = torch.topk(logits, p.top_k).values[-1]
            logits[logits < kth] = float("-inf")
        # top-p and min-p read the distribution before temperature, as llama.cpp's chain does
        # (its temperature sampler comes last)
        probs = torch.softmax(logits, dim=-1)
        if p.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < p.top_p
            keep[0] = True
            filtered = torch.zeros_like(probs)
            filtered[order[keep]] = probs[order[keep]]
            probs = filtered / filtered.sum()
        if p.min_p > 0.0:
            probs = torch.where(probs >= p.min_p * probs.max(), probs, torch.zeros_like(probs))
        kept = probs > 0
        logits = torch.where(kept, logits, torch.full_like(logits, float("-inf")))
        probs = torch.softmax(logits / p.temperature, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))


class StopWhenDone(StoppingCriteria):
    """A transformers stopping criterion: stop once the chooser says so (end token, stop string,
    cancellation)."""

    def __init__(self, chooser: Chooser) -> None:
        self.chooser = chooser

    def __call__(self, input_ids: Any, scores: Any, **_: Any) -> Any:
        done = self.chooser.done
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool)
