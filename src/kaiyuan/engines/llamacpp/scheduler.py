"""Continuous batching: several sequences (slots) in one llama.cpp context.

Each step puts into ONE ``llama_decode`` the next token of every generating sequence plus
chunks of the prompts still being read, so new requests join between steps and a long prompt
never stalls the others. Each slot has its own sampler chain (temperature, top-p, seed,
penalties, grammar). A slot keeps its tokens' keys/values after its request ends, so a
follow-up turn (or another request sharing a system prompt) starts from the longest matching
prefix instead of re-reading it; a long prefix can come from another slot (``seq_cp``). Each
slot is its own KV stream, so a sequence's cells and arithmetic are the same whether it runs
alone or beside others: a temperature-0 answer does not depend on its neighbours. A cancelled
request frees its slot and its cache cells at the next step.
"""

from __future__ import annotations

import logging
import queue
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
from llama_cpp import _internals as llx

from kaiyuan.engines.base import Finish
from kaiyuan.engines.jobs import Job, Outbox
from kaiyuan.engines.llamacpp import sampling
from kaiyuan.engines.llamacpp.threads import CoreWatch
from kaiyuan.engines.llamacpp.vision import Projector
from kaiyuan.engines.textstream import TextStream
from kaiyuan.errors import EngineFailure

log = logging.getLogger(__name__)
# A prefix worth copying from another slot. Slots are separate KV streams and llama.cpp copies
# a whole stream (then the tail is trimmed): on the bundled model about 3.5 ms, the prefill of
# 1.5 prompt tokens in a batch (docs/benchmarks.md), so any shared system prompt is worth it.
MIN_SHARED = 16
# Waking from idle, jobs arriving this close together (seconds) start in one step.
GATHER_GAP = 0.003
GATHER_MAX = 0.015


@dataclass(slots=True, eq=False)
class Slot:
    seq: int
    tokens: list[int] = field(default_factory=list)  # what the cache holds for this sequence
    job: Job | None = None
    pending: list[int] = field(default_factory=list)  # prompt tokens not yet evaluated
    sampler: llx.LlamaSampler | None = None
    text: TextStream | None = None
    produced: int = 0
    next_token: int | None = None  # sampled, to be decoded in the next step
    logits_at: int = -1  # batch index of this slot's logits in the current step
    idle_since: int = 0
    # Positions past the tokens: a prompt with images (read by mtmd) is not kept as tokens,
    # and its images may take fewer positions than cache cells (M-RoPE).
    shift: int = 0

    @property
    def next_pos(self) -> int:
        return len(self.tokens) + self.shift


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class Scheduler:
    def __init__(
        self,
        *,
        ctx: Any,
        vocab: sampling.Vocabulary,
        parallel: int,
        n_batch: int,
        slot_context: int,
        model_id: str,
        projector: Projector | None = None,
        cores: CoreWatch | None = None,
    ) -> None:
        self.ctx = ctx
        self.cores = cores  # None: the thread count is the user's, fixed
        self.vocab = vocab
        self.memory = llama_cpp.llama_get_memory(ctx)
        self.slots = [Slot(seq) for seq in range(parallel)]
        self.n_batch = n_batch
        self.slot_context = slot_context
        self.model_id = model_id
        self.projector = projector
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.waiting: deque[Job] = deque()
        self.steps = 0
        self.outbox = Outbox()  # every event of a step reaches the event loop in one call
        self._stopping = False

    # --- the loop (worker thread) ---------------------------------------------------------------
    def run(self) -> None:
        try:
            while not self._stopping:
                busy = self._busy()
                if not busy:
                    self.outbox.flush()  # before waiting for work
                self._intake(block=not busy)
                self._drop_cancelled()
                self._assign()
                if any(s.job for s in self.slots):
                    self._adapt_threads()
                    filled = self._fill()
                    # The last step's events go to the event loop just before llama.cpp
                    # decodes (releasing the GIL): the loop writes them while the cores decode,
                    # instead of holding the GIL this thread needs to build the next batch.
                    self.outbox.flush()
                    if filled:
                        self._decode()
        finally:
            self._fail_all(EngineFailure(f"the engine for model '{self.model_id}' stopped"))
            self.outbox.flush()
            llama_cpp.llama_batch_free(self.batch)

    def _adapt_threads(self) -> None:
        threads = self.cores.update() if self.cores is not None else None
        if threads is not None:
            log.info("model %s now decodes with %d threads (free cores)", self.model_id, threads)
            llama_cpp.llama_set_n_threads(self.ctx, threads, threads)

    def _busy(self) -> bool:
        return bool(self.waiting) or any(s.job for s in self.slots)

    def _intake(self, *, block: bool) -> None:
        """Take the queued jobs. Waking from idle, keep taking while more arrive within
        GATHER_GAP of each other (at most GATHER_MAX): requests sent together then share their
        first step, instead of the late ones waiting a whole prefill for the next."""
        wait: float | None = None if block else 0.0
        gather_until = None
        try:
            while True:
                item = self.jobs.get_nowait() if wait == 0.0 else self.jobs.get(timeout=wait)
                if item is None:
                    self._stopping = True
                    return
                self.waiting.append(item)
                if block:
                    now = time.monotonic()
                    gather_until = gather_until or now + GATHER_MAX
                    wait = min(GATHER_GAP, gather_until - now)
                    if wait <= 0:
                        wait = 0.0
        except queue.Empty:
            pass

    def _drop_cancelled(self) -> None:
        self.waiting = deque(j for j in self.waiting if not j.cancelled.is_set())
        for slot in self.slots:
            if slot.job is not None and slot.job.cancelled.is_set():
                log.info(
                    "usage model=%s status=cancelled prompt_tokens=%d completion_tokens=%d",
                    self.model_id, len(slot.job.prompt), slot.produced,
                )  # fmt: skip
                self._release(slot, keep_cache=False)

    def _assign(self) -> None:
        while self.waiting:
            free = [s for s in self.slots if s.job is None]
            if not free:
                return
            job = self.waiting.popleft()
            job.queued = time.monotonic() - job.created
            # The free slot whose cache matches best (ties: the longest idle), so follow-up
            # turns land where their conversation already is.
            slot = max(free, key=lambda s: (common_prefix(s.tokens, job.prompt), -s.idle_since))
            self._start(slot, job)

    def _start(self, slot: Slot, job: Job) -> None:
        if job.media is not None:
            self._start_media(slot, job)
            return
        limit = len(job.prompt) - 1  # at least one token is evaluated, for its logits
        if not job.params.cache_prompt:
            limit = 0  # read it all: nothing of this slot's cache, no other slot's prefix
        keep = min(common_prefix(slot.tokens, job.prompt), limit)
        donor = max(
            (s for s in self.slots if s is not slot),
            key=lambda s: common_prefix(s.tokens, job.prompt),
            default=None,
        )
        shared = min(common_prefix(donor.tokens, job.prompt), limit) if donor else 0
        if donor is not None and shared >= max(keep + MIN_SHARED, MIN_SHARED):
            llama_cpp.llama_memory_seq_rm(self.memory, slot.seq, 0, -1)
            llama_cpp.llama_memory_seq_cp(self.memory, donor.seq, slot.seq, -1, -1)
            llama_cpp.llama_memory_seq_rm(self.memory, slot.seq, shared, -1)
            slot.tokens, keep = donor.tokens[:shared], shared
        elif not llama_cpp.llama_memory_seq_rm(self.memory, slot.seq, keep, -1):
            llama_cpp.llama_memory_seq_rm(self.memory, slot.seq, 0, -1)
            keep = 0
        del slot.tokens[keep:]
        job.reused = keep
        slot.job = job
        slot.pending = job.prompt[keep:]
        slot.sampler = sampling.sampler(self.vocab, job.params, self.slot_context)
        slot.text = TextStream(stop=job.params.stop)
        slot.produced = 0
        slot.next_token = None

    def _start_media(self, slot: Slot, job: Job) -> None:
        """A prompt with images: mtmd reads it into the slot now (alone, not batched; never
        reused by a later request), then the slot generates in the shared batch."""
        assert self.projector is not None
        llama_cpp.llama_memory_seq_rm(self.memory, slot.seq, 0, -1)
        slot.tokens, slot.pending, slot.next_token = [], [], None
        slot.job = job
        slot.sampler = sampling.sampler(self.vocab, job.params, self.slot_context)
        slot.text = TextStream(stop=job.params.stop)
        slot.produced = 0
        try:
            slot.shift = job.media.evaluate(self.projector, self.ctx, slot.seq, self.n_batch)
        except RuntimeError:
            log.exception("reading a prompt with images failed in model %s", self.model_id)
            self.outbox.put(job, EngineFailure("the engine could not read the images"))
            self._release(slot, keep_cache=False)
            return
        self._sample(slot, -1)  # the logits of the prompt's last token

    # --- one step: a single decode for every active sequence ------------------------------
    def _fill(self) -> bool:
        """This step's batch: each generating sequence's last token, then prompt chunks;
        whether it holds any token."""
        self.steps += 1
        batch = self.batch
        batch.n_tokens = 0
        for slot in self.slots:
            if slot.job is not None and slot.next_token is not None:
                slot.logits_at = self._add(slot.next_token, slot.next_pos, slot.seq, True)
                slot.tokens.append(slot.next_token)
                slot.next_token = None
        for slot in self.slots:  # prompt chunks fill the rest of the batch
            room = self.n_batch - batch.n_tokens
            if slot.job is None or not slot.pending or room <= 0:
                continue
            chunk, slot.pending = slot.pending[:room], slot.pending[room:]
            for i, token in enumerate(chunk):
                last = not slot.pending and i == len(chunk) - 1
                index = self._add(token, slot.next_pos, slot.seq, last)
                slot.tokens.append(token)
                if last:
                    slot.logits_at = index
        return batch.n_tokens > 0

    def _decode(self) -> None:
        rc = llama_cpp.llama_decode(self.ctx, self.batch)
        if rc != 0:
            self._decode_failed(rc)
            return
        for slot in self.slots:
            if slot.job is not None and slot.logits_at >= 0:
                index, slot.logits_at = slot.logits_at, -1
                self._sample(slot, index)

    def _add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        b, i = self.batch, self.batch.n_tokens
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = logits
        b.n_tokens = i + 1
        return i

    def _sample(self, slot: Slot, index: int) -> None:
        job, text, sampler = slot.job, slot.text, slot.sampler
        assert job is not None and text is not None and sampler is not None
        p = job.params
        if p.ignore_eos or slot.produced < p.min_tokens:
            token = sampling.sample_without_end(
                sampler, self.ctx, index, self.vocab, grammar=p.grammar is not None
            )
        else:
            token = llama_cpp.llama_sampler_sample(sampler.sampler, self.ctx, index)
        slot.produced += 1
        if self.vocab.is_end(token):
            self._finish(slot, "stop")
            return
        lp = (
            sampling.logprob(self.ctx, index, self.vocab, token, p.logprobs)
            if p.logprobs is not None
            else None
        )
        delta = text.push(self.vocab.piece(token), lp)
        if delta is not None:
            self.outbox.put(job, delta)
        if text.stopped:
            self._finish(slot, "stop", flush=False)
        elif slot.produced >= p.max_tokens:
            self._finish(slot, "length")
        else:
            slot.next_token = token

    def _finish(self, slot: Slot, reason: str, *, flush: bool = True) -> None:
        job, text = slot.job, slot.text
        assert job is not None and text is not None
        if flush and (tail := text.flush()) is not None:
            self.outbox.put(job, tail)
        self.outbox.put(
            job,
            Finish(
                "stop" if reason == "stop" else "length",
                len(job.prompt),
                slot.produced,
                cached_tokens=job.reused,
                stop_sequence=text.matched,
                queued=job.queued,
            ),
        )
        self._release(slot, keep_cache=True)

    def _release(self, slot: Slot, *, keep_cache: bool) -> None:
        if slot.sampler is not None:
            slot.sampler.close()
        if not keep_cache or slot.shift:  # a cache holding images cannot be matched again
            llama_cpp.llama_memory_seq_rm(self.memory, slot.seq, 0, -1)
            slot.tokens, slot.shift = [], 0
        slot.job, slot.sampler, slot.text = None, None, None
        slot.pending, slot.next_token, slot.logits_at = [], None, -1
        slot.idle_since = self.steps

    def _decode_failed(self, rc: int) -> None:
        """rc 1: no room in the cache: drop idle slots' caches and retry; failing that, fail
        the request with the longest prompt (or every active one on a hard error)."""
        self._rollback()
        idle = [s for s in self.slots if s.job is None and s.tokens]
        if rc == 1 and idle:
            for slot in idle:
                llama_cpp.llama_memory_seq_rm(self.memory, slot.seq, 0, -1)
                slot.tokens = []
            return  # the next step submits the same tokens again
        log.error("llama_decode returned %d for model %s", rc, self.model_id)
        active = [s for s in self.slots if s.job is not None]
        if rc == 1 and active:
            active = [max(active, key=lambda s: len(s.tokens) + len(s.pending))]
        for slot in active:
            if slot.job is not None:
                self.outbox.put(
                    slot.job, EngineFailure("the engine could not fit this request in its cache")
                )
            self._release(slot, keep_cache=False)

    def _rollback(self) -> None:
        """Undo this step's bookkeeping so that the same tokens are submitted again."""
        b = self.batch
        for slot in self.slots:
            mine = [b.token[i] for i in range(b.n_tokens) if b.seq_id[i][0] == slot.seq]
            if not mine:
                continue
            del slot.tokens[len(slot.tokens) - len(mine) :]
            llama_cpp.llama_memory_seq_rm(self.memory, slot.seq, slot.next_pos, -1)
            if slot.job is not None:
                if len(mine) == 1 and not slot.pending and slot.produced:
                    slot.next_token = mine[0]  # a generating sequence's last token
                else:
                    slot.pending = mine + slot.pending  # a prompt chunk
            slot.logits_at = -1

    def _fail_all(self, error: BaseException) -> None:
        for slot in self.slots:
            if slot.job is not None:
                self.outbox.put(slot.job, error)
        for job in self.waiting:
            self.outbox.put(job, error)
        while True:
            try:
                item = self.jobs.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self.outbox.put(item, error)
