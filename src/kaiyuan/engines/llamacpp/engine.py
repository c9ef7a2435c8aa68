"""A GGUF model on llama.cpp (llama-cpp-python's low-level API), serving several requests at
once through :mod:`kaiyuan.engines.llamacpp.scheduler` (continuous batching).

The engine loads the model, tokenizes, and decides admission synchronously in ``generate``:
``parallel`` requests run (one sequence each in one context), ``max_queue`` more wait, and
past that the caller gets :class:`Overloaded`. Context policy: every slot may use the model's
context (``context_length``, at most 8192 by default); the cache holds ``parallel`` of them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any

import llama_cpp
from llama_cpp import _internals as llx
from llama_cpp import _logger as llama_logger

from kaiyuan.engines.base import (
    AdmittedStream,
    EngineOptions,
    EventStream,
    ModelInfo,
    SamplingParams,
    TextEngine,
    check_fits,
)
from kaiyuan.engines.jobs import Admission, Job, events
from kaiyuan.engines.llamacpp import sampling
from kaiyuan.engines.llamacpp.scheduler import Scheduler
from kaiyuan.engines.llamacpp.threads import CoreWatch, usable_cores
from kaiyuan.engines.llamacpp.vision import Projector, find_projector
from kaiyuan.errors import EngineFailure

log = logging.getLogger(__name__)

DEFAULT_CONTEXT_CAP = 8192
_backend_ready = threading.Lock()
_backend_initialised = False


def init_backend() -> None:
    global _backend_initialised
    with _backend_ready:
        if not _backend_initialised:
            llama_logger.set_verbose(False)
            llama_cpp.llama_backend_init()
            _backend_initialised = True


class LlamaCppEngine(TextEngine):
    def __init__(self, options: EngineOptions) -> None:
        model_id, path, parallel = options.model_id, options.path, options.parallel
        init_backend()
        self._model = llx.LlamaModel(
            path_model=str(path), params=llama_cpp.llama_model_default_params(), verbose=False
        )
        slot_context = options.context_length or min(self._model.n_ctx_train(), DEFAULT_CONTEXT_CAP)
        n_threads = options.threads or usable_cores()
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = slot_context * parallel
        cparams.n_batch = cparams.n_ubatch = min(512, slot_context)
        cparams.n_seq_max = parallel
        # One KV stream per slot (llama-server's default): attention cost per sequence stays
        # its own, and its numerics do not depend on what else is in the batch.
        cparams.kv_unified = False
        cparams.n_threads = cparams.n_threads_batch = n_threads
        self._ctx = llx.LlamaContext(model=self._model, params=cparams, verbose=False)
        self._vocab = sampling.Vocabulary(self._model.vocab, self._model.n_vocab())
        meta = self._model.metadata()
        projector = find_projector(path)
        self._projector = Projector(projector, self._model.model, n_threads) if projector else None
        self.info = ModelInfo(
            id=model_id,
            backend="llamacpp",
            context_length=slot_context,
            chat_template=meta.get("tokenizer.chat_template"),
            bos_token=self._token_text(self._model.token_bos()),
            eos_token=self._token_text(self._model.token_eos()),
            vocab_size=self._vocab.size,
            capabilities=("chat", "completion") + (("vision",) if self._projector else ()),
            created=options.created,
            owned_by=options.owned_by,
            image_placeholder=self._projector.marker if self._projector else None,
            control_texts=self._control_texts(),
        )
        self.scheduler = Scheduler(
            ctx=self._ctx.ctx,
            vocab=self._vocab,
            parallel=parallel,
            n_batch=int(cparams.n_batch),
            slot_context=slot_context,
            model_id=model_id,
            projector=self._projector,
            cores=None if options.threads else CoreWatch(n_threads),
        )
        self._parallel = parallel
        self._admission = Admission(parallel + options.max_queue)
        self._dead = False
        self._worker = threading.Thread(target=self._run, name=f"llamacpp:{model_id}", daemon=True)
        self._worker.start()

    # --- TextEngine contract -----------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return self._admission.count

    @property
    def waiting(self) -> int:
        return max(self._admission.count - self._parallel, 0)

    @property
    def alive(self) -> bool:
        return not self._dead and self._worker.is_alive()

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        add_bos = add_special and self._model.add_bos_token()
        tokens: list[int] = self._model.tokenize(text.encode(), add_bos=add_bos, special=True)
        bos = self._model.token_bos()
        if add_special and len(tokens) >= 2 and tokens[0] == tokens[1] == bos:
            tokens = tokens[1:]  # the template already wrote BOS (a prompt's start only)
        return tokens

    def tokenize_plain(self, text: str) -> list[int]:
        tokens: list[int] = self._model.tokenize(text.encode(), add_bos=False, special=False)
        return tokens

    def encode(self, text: str, images: Sequence[Any]) -> tuple[list[int], Any]:
        if not images or self._projector is None:
            return super().encode(text, images)  # text, or the 400 naming capabilities
        prompt = self._projector.tokenize(text, images)  # guarded text as plain text there too
        return prompt.tokens, prompt

    def generate(self, prompt: list[int], params: SamplingParams, media: Any = None) -> EventStream:
        if not self.alive:
            raise EngineFailure(f"the engine for model '{self.info.id}' is not running")
        check_fits(self.info, len(prompt), params.max_tokens)
        if params.grammar is not None:
            sampling.grammar_chain(self._vocab, params.grammar).close()  # does it parse? (400)
        self._admission.admit(self.info.id)
        job = Job(list(prompt), params, asyncio.get_running_loop(), media=media)
        self.scheduler.jobs.put(job)
        return AdmittedStream(events(job), on_close=lambda: self._release(job))

    def _release(self, job: Job) -> None:
        job.cancelled.set()  # the scheduler frees its slot at the next step (or skips it)
        self._admission.release()

    async def aclose(self) -> None:
        self.scheduler.jobs.put(None)
        await asyncio.to_thread(self._worker.join, 10)
        if self._projector is not None:
            self._projector.close()
        self._ctx.close()
        self._model.close()

    def _run(self) -> None:
        try:
            self.scheduler.run()
        except BaseException:
            log.exception("engine worker for %s died", self.info.id)
            raise
        finally:
            self._dead = True

    def _control_texts(self) -> tuple[str, ...]:
        """The texts llama.cpp reads as tokens only when it parses special tokens (control and
        unknown tokens; user-defined ones, like <think>, it reads in any text)."""
        vocab = self._model.vocab
        special = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
        texts = {
            self._model.token_get_text(token)
            for token in range(self._model.n_vocab())
            if llama_cpp.llama_vocab_get_attr(vocab, token) & special
        }
        return tuple(sorted(t for t in texts if t))

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._model.token_get_text(token)
