"""Safetensors models through Hugging Face transformers (CPU here, CUDA when present): chat
models (Qwen2/2.5/3, Qwen3-MoE, DeepSeek-V3, ...) and vision-language models (Qwen2.5-VL).

This module imports torch, so the registry imports it only when such a model loads. One worker
thread runs one generation at a time through ``model.generate``, which owns the model-specific
forward pass (KV cache, rotary and multimodal positions, image features); kaiyuan chooses every
token itself (``torch_sampling.Chooser``: the llama.cpp engine's parameters and order, a seeded
generator, grammars through llguidance) and checks stop strings and cancellation at each token.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import threading
from collections.abc import Sequence
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessorList,
    StoppingCriteriaList,
)

from kaiyuan.engines.base import (
    AdmittedStream,
    CandidateLogprob,
    EngineOptions,
    EventStream,
    Finish,
    FinishReason,
    ModelInfo,
    SamplingParams,
    TextEngine,
    TokenLogprob,
    check_fits,
)
from kaiyuan.engines.jobs import Admission, Job, events
from kaiyuan.engines.textstream import TextStream
from kaiyuan.engines.torch_device import place
from kaiyuan.engines.torch_sampling import Chooser, Grammar, StopWhenDone
from kaiyuan.errors import EngineFailure, InvalidRequest

log = logging.getLogger(__name__)
DEFAULT_CONTEXT_CAP = 8192


class TransformersEngine(TextEngine):
    def __init__(self, options: EngineOptions) -> None:
        model_id, path = options.model_id, options.path
        self.device, self.dtype = place(options.threads)
        local: dict[str, Any] = {
            "local_files_only": True,
            "trust_remote_code": options.trust_remote_code,
        }
        config = AutoConfig.from_pretrained(str(path), **local)
        vision = getattr(config, "vision_config", None) is not None
        self._tok: Any = AutoTokenizer.from_pretrained(str(path), **local)
        # transformers applies split_special_tokens by setting a flag on the shared backend
        # tokenizer: calls that differ in it must not interleave (encode runs in many threads).
        self._tok_lock = threading.Lock()
        # The image processor resizes by the model's own rules (Qwen-VL: pixel bounds, sides
        # multiples of patch x merge). transformers' combined processor class is not used: it
        # demands torchvision (for video), which has no CPU wheel on PyPI.
        self._images: Any = (
            AutoImageProcessor.from_pretrained(str(path), **local) if vision else None
        )
        self._image_token = int(getattr(config, "image_token_id", -1) or -1)
        loader: Any = (
            AutoModelForImageTextToText if vision else AutoModelForCausalLM
        ).from_pretrained
        model, loading = loader(
            str(path), use_safetensors=True, dtype=self.dtype, output_loading_info=True, **local
        )
        # transformers fills weights missing from a checkpoint with random values and only
        # warns; a model like that would answer with noise, so it is refused.
        missing = list(loading.get("missing_keys") or [])
        if missing:
            raise ValueError(f"checkpoint {path.name} lacks {len(missing)} weights: {missing[:3]}")
        self._model: Any = model.to(self.device)
        self._model.eval()
        text_config = config.get_text_config()
        self._ends = self._end_tokens()
        # kaiyuan does its own sampling: the checkpoint's sampling defaults must not apply.
        self._model.generation_config = GenerationConfig(
            eos_token_id=sorted(self._ends), pad_token_id=self._pad_token()
        )
        self._vocab = int(text_config.vocab_size)
        forward = inspect.signature(self._model.forward).parameters
        self._takes_token_types = "mm_token_type_ids" in forward  # newer multimodal models
        self._lltok = self._grammar_tokenizer()
        trained = int(getattr(text_config, "max_position_embeddings", 0) or DEFAULT_CONTEXT_CAP)
        template = self._chat_template()
        capabilities = ("chat", "completion") if template else ("completion",)
        self.info = ModelInfo(
            id=model_id,
            backend="transformers",
            context_length=options.context_length or min(trained, DEFAULT_CONTEXT_CAP),
            chat_template=template,
            bos_token=self._tok.bos_token or "",
            eos_token=self._tok.eos_token or "",
            vocab_size=self._vocab,
            capabilities=capabilities + (("vision",) if vision else ()),
            created=options.created,
            owned_by=options.owned_by,
            control_texts=self._control_texts(),
        )
        self._admission = Admission(1 + options.max_queue)  # one generation at a time
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._dead = False
        self._worker = threading.Thread(target=self._run, name=f"hf:{model_id}", daemon=True)
        self._worker.start()

    def _end_tokens(self) -> set[int]:
        ends: set[int] = set()
        for source in (self._model.generation_config.eos_token_id, self._tok.eos_token_id):
            if isinstance(source, int):
                ends.add(source)
            elif isinstance(source, list):
                ends.update(int(t) for t in source)
        return ends

    def _pad_token(self) -> int | None:
        pad = self._tok.pad_token_id
        return int(pad) if pad is not None else min(self._ends, default=None)

    def _control_texts(self) -> tuple[str, ...]:
        """The special tokens' texts: what the tokenizer reads as tokens only when it parses
        special tokens (added tokens that are not special, like <think>, it reads anywhere)."""
        added = getattr(self._tok, "added_tokens_decoder", {}) or {}
        texts = {str(t.content) for t in added.values() if getattr(t, "special", False)}
        texts.update(str(t) for t in getattr(self._tok, "all_special_tokens", []) or [])
        return tuple(sorted(t for t in texts if t))

    def _chat_template(self) -> str | None:
        template = getattr(self._tok, "chat_template", None)
        return template if isinstance(template, str) else None

    def _grammar_tokenizer(self) -> Any:
        """llguidance's view of the vocabulary (grammars, exact token bytes); None when it
        cannot read this tokenizer, and then grammars are refused with a 400."""
        import llguidance.hf

        try:
            return llguidance.hf.from_tokenizer(
                self._tok, n_vocab=self._vocab, eos_token=sorted(self._ends) or None
            )
        except Exception as exc:
            log.warning("no output constraints for this tokenizer: %s", exc)
            return None

    # --- TextEngine contract -------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return self._admission.count

    @property
    def alive(self) -> bool:
        return not self._dead and self._worker.is_alive()

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        with self._tok_lock:
            ids: list[int] = self._tok(text, add_special_tokens=False)["input_ids"]
        bos = self._tok.bos_token_id
        wants_bos = add_special and bos is not None and getattr(self._tok, "add_bos_token", False)
        if wants_bos and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        return ids

    def tokenize_plain(self, text: str) -> list[int]:
        with self._tok_lock:
            ids: list[int] = self._tok(text, add_special_tokens=False, split_special_tokens=True)[
                "input_ids"
            ]
        return ids

    def encode(self, text: str, images: Sequence[Any]) -> tuple[list[int], Any]:
        if not images or self._images is None:
            return super().encode(text, images)  # text, or the 400 naming capabilities
        ids = self.encode_text(text)  # a client's <|image_pad|> is plain text: never an image
        marker = self._image_token
        if ids.count(marker) != len(images):
            raise InvalidRequest(
                f"the chat template of model '{self.info.id}' placed {ids.count(marker)} image "
                f"markers for {len(images)} images",
                param="messages",
            )
        try:
            pixels = self._images(images=list(images), return_tensors="pt")
        except (ValueError, OSError) as exc:
            raise InvalidRequest(
                f"the images could not be prepared: {exc}", param="messages"
            ) from None
        # Each marker becomes one token per merged patch of its image (the grid, t x h x w).
        merge = int(getattr(self._images, "merge_size", 1) or 1)
        counts = iter(int(g.prod()) // merge**2 for g in pixels["image_grid_thw"])
        expanded: list[int] = []
        for token in ids:
            expanded.extend([marker] * next(counts) if token == marker else [token])
        media = dict(pixels)
        if self._takes_token_types:
            media["mm_token_type_ids"] = torch.tensor([[int(t == marker) for t in expanded]])
        return expanded, media

    def generate(self, prompt: list[int], params: SamplingParams, media: Any = None) -> EventStream:
        if not self.alive:
            raise EngineFailure(f"the engine for model '{self.info.id}' is not running")
        check_fits(self.info, len(prompt), params.max_tokens)
        grammar = None
        if params.grammar is not None:
            if self._lltok is None:
                raise InvalidRequest(
                    f"model '{self.info.id}' has a tokenizer kaiyuan cannot constrain, so "
                    "response_format and forced tool calls are not available for it",
                    param="response_format",
                )
            grammar = Grammar(self._lltok, params.grammar, self._vocab)
        self._admission.admit(self.info.id)
        job = Job(list(prompt), params, asyncio.get_running_loop(), media=media, constraint=grammar)
        self._jobs.put(job)
        return AdmittedStream(events(job), on_close=lambda: self._release(job))

    def _release(self, job: Job) -> None:
        job.cancelled.set()
        self._admission.release()

    async def aclose(self) -> None:
        self._jobs.put(None)
        await asyncio.to_thread(self._worker.join, 10)

    # --- worker thread -------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                if job.cancelled.is_set():
                    continue
                try:
                    with torch.inference_mode():
                        self._generate(job)
                except Exception:
                    log.exception("generation failed in model %s", self.info.id)
                    job.send(EngineFailure("the engine failed while generating"))
        finally:
            self._dead = True

    def _generate(self, job: Job) -> None:
        p = job.params
        generator = None
        if p.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(p.seed)
        text = TextStream(stop=p.stop)
        produced = 0
        reason = "cancelled"

        def on_token(token: int, logits: Any) -> bool:
            nonlocal produced, reason
            produced += 1
            if job.cancelled.is_set():
                return False
            if token in self._ends:
                reason = "stop"
                return False
            lp = self._logprob(logits, token, p.logprobs) if p.logprobs is not None else None
            delta = text.push(self._bytes(token), lp)
            if delta is not None:
                job.send(delta)
            if text.stopped:
                reason = "stop string"
                return False
            if produced >= p.max_tokens:
                reason = "length"
                return False
            return True

        chooser = Chooser(
            p, grammar=job.constraint, generator=generator, on_token=on_token, ends=self._ends
        )
        ids = torch.tensor([job.prompt], device=self.device)
        inputs = {k: v.to(self.device) for k, v in (job.media or {}).items()}
        inputs.setdefault("attention_mask", torch.ones_like(ids))
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        self._model.generate(
            input_ids=ids,
            **inputs,
            do_sample=False,
            max_new_tokens=p.max_tokens,
            logits_processor=LogitsProcessorList([chooser]),
            stopping_criteria=StoppingCriteriaList([StopWhenDone(chooser)]),
        )
        if reason == "cancelled":
            log.info(
                "usage model=%s status=cancelled prompt_tokens=%d completion_tokens=%d",
                self.info.id, len(job.prompt), produced,
            )  # fmt: skip
            return
        if reason != "stop string":
            tail = text.flush()
            if tail is not None:
                job.send(tail)
        ended: FinishReason = "length" if reason == "length" else "stop"
        job.send(Finish(ended, len(job.prompt), produced, stop_sequence=text.matched))

    def _bytes(self, token: int) -> bytes:
        """The token's exact bytes (a piece of a multi-byte character stays partial)."""
        if self._lltok is not None and not self._lltok.is_special_token(token):
            return bytes(self._lltok.decode_bytes([token]))
        return self._text(token).encode()

    def _logprob(self, logits: Any, token: int, top_k: int) -> TokenLogprob:
        logp = torch.log_softmax(logits.double(), dim=-1)
        top: tuple[CandidateLogprob, ...] = ()
        if top_k > 0:
            values, ids = torch.topk(logp, top_k)
            top = tuple(
                CandidateLogprob(self._text(int(i)), self._bytes(int(i)), float(v))
                for v, i in zip(values, ids, strict=True)
            )
        return TokenLogprob(self._text(token), self._bytes(token), float(logp[token]), top)

    def _text(self, token: int) -> str:
        return str(self._tok.decode([token], skip_special_tokens=False))
