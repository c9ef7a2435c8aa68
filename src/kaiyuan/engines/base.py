"""The engine contracts: a small base every loaded model shares, and one per capability.

:class:`Engine` is what the pool manages for any backend (info, in-flight count, health,
close). A backend also implements the contract of what it serves, and only that:
:class:`TextEngine` (tokenize, encode, ``generate``), :class:`EmbeddingEngine` (``embed``) or
:class:`MediaEngine` (``generate_media``). Routes ask the pool for the contract they need
(``pool.acquire(model_id, TextEngine)``) and never downcast. Every backend is built from one
:class:`EngineOptions`.

``TextEngine.generate`` decides admission at once, synchronously: it raises
:class:`kaiyuan.errors.Overloaded` when full and :class:`kaiyuan.errors.ContextLengthExceeded`
when the prompt and ``max_tokens`` do not fit, so the server can still answer with a status
code. Otherwise it returns an :class:`EventStream` of :class:`Delta` events ending with one
:class:`Finish`. ``aclose()`` on the stream (client gone, timeout) cancels the generation and
frees its capacity at once; callers always close what they open.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from kaiyuan.chat.guard import split_guarded
from kaiyuan.chat.model import max_prompt_chars
from kaiyuan.config import GenerationDefaults
from kaiyuan.errors import ContextLengthExceeded, InvalidRequest, KaiyuanError

FinishReason = Literal["stop", "length"]


@dataclass(slots=True, frozen=True)
class EngineOptions:
    """How to load one model; every backend reads the fields that apply to it."""

    model_id: str
    path: Path
    context_length: int | None = None  # None: the model's own, capped by the backend
    threads: int | None = None  # None: every core
    parallel: int = 4  # sequences generated together (llama.cpp slots)
    max_queue: int = 16  # admitted requests waiting beyond those running
    created: int = 0  # when the model was added (Unix time)
    owned_by: str = "kaiyuan"
    # only a model imported or pulled with --trust-remote-code runs its own code
    trust_remote_code: bool = False


@dataclass(slots=True, frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    typical_p: float = 1.0  # locally typical sampling's probability mass, as llama.cpp (1.0: off)
    min_p: float = 0.0
    # over the last REPETITION_WINDOW sampled tokens, as llama.cpp's repeat_penalty (1.0: off)
    repetition_penalty: float = 1.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    logit_bias: tuple[tuple[int, float], ...] = ()
    # None: no logprobs; k >= 0: the chosen token's logprob plus the k most likely.
    logprobs: int | None = None
    # A GBNF grammar (root rule "root") the output must follow: JSON, a schema, a tool call.
    grammar: str | None = None
    # False: read the whole prompt, reusing no cached prefix (computed in another batch
    # shape, a reused prefix can change a temperature-0 answer in its last digits)
    cache_prompt: bool = True
    ignore_eos: bool = False  # end-of-generation tokens are never chosen: run to max_tokens
    min_tokens: int = 0  # end-of-generation tokens are not chosen before this many tokens


REPETITION_WINDOW = 64


@dataclass(slots=True, frozen=True)
class CandidateLogprob:
    token: str
    bytes: bytes
    logprob: float


@dataclass(slots=True, frozen=True)
class TokenLogprob:
    token: str
    bytes: bytes
    logprob: float
    top: tuple[CandidateLogprob, ...] = ()


@dataclass(slots=True)
class Delta:
    """Newly generated text (already cut at stop strings) and its tokens' logprobs."""

    text: str
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class Finish:
    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens whose keys/values were reused, not recomputed
    stop_sequence: str | None = None  # the request's stop string that ended it, if one did
    queued: float = 0.0  # seconds it waited for a free slot


GenerationEvent = Delta | Finish


class EventStream(Protocol):
    def __aiter__(self) -> EventStream: ...

    async def __anext__(self) -> GenerationEvent: ...

    async def aclose(self) -> None: ...


class AdmittedStream:
    """An :class:`EventStream` over ``events`` that calls ``on_close`` exactly once: when the
    events end or fail, when the consumer closes it, or (last resort) when it is collected.
    ``on_close`` is where a backend cancels the work and frees the admission slot."""

    def __init__(
        self, events: AsyncIterator[GenerationEvent], on_close: Callable[[], None]
    ) -> None:
        self._events = events
        self._on_close: Callable[[], None] | None = on_close

    def __aiter__(self) -> AdmittedStream:
        return self

    async def __anext__(self) -> GenerationEvent:
        try:
            return await anext(self._events)
        except BaseException:
            self._release()
            raise

    async def aclose(self) -> None:
        self._release()
        aclose = getattr(self._events, "aclose", None)
        if aclose is not None:
            await aclose()

    def _release(self) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    def __del__(self) -> None:
        self._release()


@dataclass(slots=True, frozen=True)
class ModelInfo:
    id: str
    backend: str
    context_length: int  # tokens; 0 for models that read no token context (media pipelines)
    chat_template: str | None
    bos_token: str = ""
    eos_token: str = ""
    vocab_size: int = 0
    capabilities: tuple[str, ...] = ("chat", "completion")
    created: int = 0
    owned_by: str = "kaiyuan"
    # How an image appears to the chat template: None = an HF-style {"type": "image"} part
    # (the template writes the model's markers); a string = that text in its place.
    image_placeholder: str | None = None
    # The texts the tokenizer turns into control tokens when it parses special tokens
    # (<|im_start|>, <|im_end|>, ...): in a chat prompt only the template may write them (T25).
    control_texts: tuple[str, ...] = ()
    # The model's default sampling and answer length (store/generation.py); requests override.
    defaults: GenerationDefaults = field(default_factory=GenerationDefaults)


@dataclass(slots=True, frozen=True)
class Embeddings:
    vectors: list[list[float]]
    prompt_tokens: int


class Engine(abc.ABC):
    """One loaded model, whatever it serves. Implementations must be safe to call from one
    asyncio loop. A backend subclasses the contract(s) of what it serves, below."""

    info: ModelInfo
    # What the contract serves, for the refusal of a model that does not implement it.
    purpose: ClassVar[str] = "serving"

    @property
    @abc.abstractmethod
    def in_flight(self) -> int:
        """Requests admitted and not yet finished or closed (0 = idle, may be unloaded)."""

    @property
    def waiting(self) -> int:
        """Admitted requests that wait for a free slot (0 where the engine does not queue)."""
        return 0

    @property
    @abc.abstractmethod
    def alive(self) -> bool:
        """False once the engine can no longer serve (its worker died, or it was closed)."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop the engine and free the model."""


class TextEngine(Engine):
    """Text generation from token ids: chat and completions."""

    purpose = "text generation"

    @abc.abstractmethod
    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        """Token ids of ``text``; special-token text (``<|im_start|>``) maps to its id.

        Raw ``/v1/completions`` prompts are tokenized here, markers included: there the client
        writes the whole prompt, template and all. Chat prompts go through :meth:`encode`."""

    def tokenize_plain(self, text: str) -> list[int]:
        """Token ids of ``text`` with special-token text read as ordinary text, no BOS."""
        return self.tokenize(text, add_special=False)

    def encode_text(self, text: str) -> list[int]:
        """A rendered chat prompt's token ids: the template's text with special tokens parsed
        (BOS added where the model wants one), each guarded client text as plain text."""
        ids: list[int] = []
        for i, (piece, plain) in enumerate(split_guarded(text)):
            ids.extend(
                self.tokenize_plain(piece) if plain else self.tokenize(piece, add_special=i == 0)
            )
        return ids

    def encode(self, text: str, images: Sequence[Any]) -> tuple[list[int], Any]:
        """A chat prompt's token ids and the model inputs beside them (``media`` for
        :meth:`generate`): vision engines override this to add the images' pixels."""
        if images:
            raise InvalidRequest(
                f"model '{self.info.id}' does not accept images "
                f"(its capabilities: {', '.join(self.info.capabilities)})",
                param="messages",
            )
        return self.encode_text(text), None

    @abc.abstractmethod
    def generate(self, prompt: list[int], params: SamplingParams, media: Any = None) -> EventStream:
        """Admit a generation (or raise) and stream the continuation of ``prompt``."""


class EmbeddingEngine(Engine):
    """Vectors for texts: /v1/embeddings and the document index."""

    purpose = "embeddings"

    @abc.abstractmethod
    async def embed(self, texts: list[str]) -> Embeddings:
        """One L2-normalised vector per text; an input longer than the model reads is a 400."""


class Cancelled(KaiyuanError):
    status = 499
    code = "cancelled"


@dataclass(slots=True, frozen=True)
class Rules:
    """What a media pipeline can make, checked before any work starts."""

    multiple: int  # width and height must be multiples of this
    default_size: tuple[int, int]  # (width, height)
    video: bool
    temporal: int = 1  # frames must be temporal * k + 1 (video)
    default_frames: int = 1
    max_steps: int = 150
    fixed: tuple[int, int] | None = None  # learned position tables: only this (width, height)
    fixed_frames: int | None = None  # ... and only this many frames

    def check(self, width: int, height: int, frames: int | None, steps: int) -> None:
        if self.fixed is not None and (width, height) != self.fixed:
            raise InvalidRequest(
                f"size {width}x{height} is not allowed: this pipeline makes only "
                f"{self.fixed[0]}x{self.fixed[1]} (its position embeddings are learned for it)",
                param="size",
            )
        if self.fixed_frames is not None and frames is not None and frames != self.fixed_frames:
            raise InvalidRequest(
                f"{frames} frames are not allowed: this pipeline makes only {self.fixed_frames}",
                param="frames",
            )
        if width % self.multiple or height % self.multiple:
            raise InvalidRequest(
                f"size {width}x{height} is not allowed: this pipeline needs width and height "
                f"divisible by {self.multiple}",
                param="size",
            )
        if not 1 <= steps <= self.max_steps:
            raise InvalidRequest(
                f"steps must be between 1 and {self.max_steps}, got {steps}", param="steps"
            )
        if self.video and frames is not None and (frames < 1 or (frames - 1) % self.temporal):
            raise InvalidRequest(
                f"{frames} frames are not allowed: this pipeline needs a frame count of the "
                f"form {self.temporal}k+1 (e.g. {self.temporal * 4 + 1})",
                param="frames",
            )


@dataclass(slots=True)
class MediaRequest:
    prompt: str
    width: int
    height: int
    steps: int
    n: int = 1
    seed: int | None = None
    guidance_scale: float | None = None
    negative_prompt: str | None = None
    frames: int | None = None  # video only
    image: Any = None  # a PIL image for image-to-video
    progress: Callable[[int, int], None] | None = None  # (step, steps)
    cancelled: threading.Event | None = None


class MediaEngine(Engine):
    """Images or videos from a prompt (and, for image-to-video, a first frame)."""

    purpose = "image and video generation"
    rules: Rules  # sizes, frame counts and steps it accepts
    takes_image: bool  # it can start a video from an input image
    needs_image: bool  # ... and cannot start one without

    @abc.abstractmethod
    def generate_media(self, request: MediaRequest) -> list[Any]:
        """PIL images (one per image), or for video one list of PIL frames per video; raises
        :class:`Cancelled` once ``request.cancelled`` is set. Blocks: call it from a worker
        thread."""


def check_text_fits(info: ModelInfo, chars: int, param: str) -> None:
    """A cheap refusal of a text that cannot fit in the context, before tokenizing it."""
    if chars > max_prompt_chars(info):
        raise ContextLengthExceeded(
            f"the prompt is {chars} characters, more than this model's context of "
            f"{info.context_length} tokens can hold; shorten it",
            param=param,
        )


def check_fits(info: ModelInfo, prompt_tokens: int, max_tokens: int) -> None:
    """Raise unless the prompt plus ``max_tokens`` fit the model's context."""
    if prompt_tokens + max_tokens > info.context_length:
        raise ContextLengthExceeded(
            f"this model's maximum context length is {info.context_length} tokens, but "
            f"{prompt_tokens + max_tokens} were requested ({prompt_tokens} in the prompt, "
            f"{max_tokens} for the completion); shorten the prompt or lower max_tokens",
            param="messages",
        )
