"""Token choice for the transformers engine, in the llama.cpp engine's order: grammar mask ->
end tokens banned (ignore_eos, min_tokens) -> logit bias -> presence/frequency and repetition
penalties -> (greedy at temperature 0) top-k -> typical -> top-p -> min-p -> temperature -> a
seeded draw.

``Chooser`` is handed to ``model.generate`` as its last logits processor: transformers runs the
model (caches, rotary positions, experts, image features) and kaiyuan chooses each token, then
leaves ``generate`` exactly one finite logit so its greedy step takes that token. Grammars are
enforced with llguidance (see docs/architecture.md): kaiyuan's GBNF is converted to its Lark
dialect, and a matcher per request masks every token the grammar forbids.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Collection
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


def typical(logits: Any, mass: float) -> Any:
    """Locally typical sampling (Meister et al., 2022) over one row of logits, as transformers'
    TypicalLogitsWarper and llama.cpp's typical sampler with min_keep 1: the tokens whose
    surprisal is closest to the distribution's entropy are kept, up to ``mass`` of probability
    (at least one); the others become -inf."""
    logp = torch.log_softmax(logits, dim=-1)
    entropy = -(logp * logp.exp()).nansum()  # nansum: 0 * -inf for tokens already excluded
    shifted = (-logp - entropy).abs()
    ordered, order = torch.sort(shifted)
    cumulative = logp[order].exp().cumsum(dim=-1)
    last = min(int((cumulative < mass).sum()), len(ordered) - 1)
    return logits.masked_fill(shifted > ordered[last], float("-inf"))


class Chooser(LogitsProcessor):
    """A transformers logits processor that chooses each token itself and reports it."""

    def __init__(
        self,
        params: SamplingParams,
        *,
        grammar: Grammar | None,
        generator: Any,
        on_token: Callable[[int, Any], bool],
        ends: Collection[int] = (),
    ) -> None:
        self.params = params
        self.grammar = grammar
        self.generator = generator
        self.on_token = on_token  # (token, raw logits) -> False once generation must stop
        self.ends = sorted(ends)  # end-of-generation ids: banned under ignore_eos, min_tokens
        self._end_ids: Any = None  # ... as a tensor on the logits' device, made on first use
        self.counts: Counter[int] = Counter()
        self.recent: deque[int] = deque(maxlen=REPETITION_WINDOW)
        self.produced = 0
        self.done = False

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        raw = scores[0]
        token = self.choose(raw)
        if self.grammar is not None:
            self.grammar.consume(token)
        self.counts[token] += 1
        self.recent.append(token)
        self.produced += 1
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
        if self.ends and (p.ignore_eos or self.produced < p.min_tokens):
            self._ban_ends(logits)
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
        if p.typical_p < 1.0:
            logits = typical(logits, p.typical_p)
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

    def _ban_ends(self, logits: Any) -> None:
        """Make every end token impossible, unless a complete grammar allows nothing else (then
        it ends: there is no other token to choose)."""
        if self._end_ids is None:
            ids = [t for t in self.ends if t < len(logits)]
            self._end_ids = torch.tensor(ids, dtype=torch.long, device=logits.device)
        kept = logits[self._end_ids].clone()
        logits[self._end_ids] = float("-inf")
        if not torch.isfinite(logits).any():
            logits[self._end_ids] = kept


class StopWhenDone(StoppingCriteria):
    """A transformers stopping criterion: stop once the chooser says so (end token, stop string,
    cancellation)."""

    def __init__(self, chooser: Chooser) -> None:
        self.chooser = chooser

    def __call__(self, input_ids: Any, scores: Any, **_: Any) -> Any:
        done = self.chooser.done
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool)
