"""The engines a server serves, by model id.

Models given to the pool (``--model``, or engines passed in by tests) are pinned: loaded at
start and kept. Any other model in the store loads on its first request. Loaded models stay
within ``memory_budget`` (the least recently used idle model is unloaded to make room) and an
idle model is unloaded after ``keep_alive`` seconds, like Ollama's keep-alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from kaiyuan.config import Settings
from kaiyuan.engines.base import Engine, EngineOptions
from kaiyuan.engines.registry import engine_class, load_engine
from kaiyuan.errors import (
    EngineFailure,
    InvalidRequest,
    KaiyuanError,
    ModelNotFound,
    Overloaded,
    did_you_mean,
)
from kaiyuan.machine import total_memory
from kaiyuan.store import generation
from kaiyuan.store.records import ModelRecord
from kaiyuan.store.store import Store

log = logging.getLogger(__name__)
E = TypeVar("E", bound=Engine)
# Capabilities a store record states reliably without loading: a model with only these is
# refused for anything else before it is loaded (so nothing is evicted for it).
NOT_TEXT = frozenset({"image", "video", "embedding"})


@dataclass(slots=True)
class _Entry:
    engine: Engine
    memory: int
    pinned: bool
    last_used: float
    # Seconds it stays loaded once idle, set by a request (Ollama's keep_alive); None: the
    # server's keep_alive; negative: forever.
    keep_alive: float | None = None


class EnginePool:
    def __init__(
        self,
        engines: Iterable[Engine] = (),
        *,
        store: Store | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.store = store
        self.budget = self.settings.memory_budget or int(total_memory() * 0.75)
        self._entries: OrderedDict[str, _Entry] = OrderedDict(
            (e.info.id, _Entry(e, 0, True, time.monotonic())) for e in engines
        )
        self._loading: dict[str, asyncio.Lock] = {}
        self._budget_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> EnginePool:
        """A pool over the store with ``settings.models`` loaded and pinned."""
        pool = cls(store=Store(settings.home), settings=settings)
        for model_id in dict.fromkeys(settings.models):
            record = pool.store.get(model_id)  # type: ignore[union-attr]
            pool._entries[model_id] = _Entry(
                pool._load(record), pool._need(record), True, time.monotonic()
            )
        return pool

    # --- lookup -------------------------------------------------------------------------------
    def canonical(self, model_id: str) -> str:
        """The model an alias names (settings ``aliases``), else ``model_id`` itself."""
        return self.settings.aliases.get(model_id, model_id)

    def get(self, model_id: str) -> Engine:
        """A loaded engine (no loading); ModelNotFound otherwise."""
        model_id = self.canonical(model_id)
        entry = self._entries.get(model_id)
        if entry is None:
            raise ModelNotFound(
                f"model '{model_id}' is not loaded{did_you_mean(model_id, self._entries)}",
                param="model",
            )
        return entry.engine

    async def acquire(
        self,
        model_id: str,
        contract: type[E],
        capability: str | None = None,
        *,
        route: str | None = None,
    ) -> E:
        """The engine for ``model_id`` as ``contract`` (TextEngine, EmbeddingEngine,
        MediaEngine, or Engine for any), loading it (and making room) if needed.

        ``capability`` narrows what is needed within a contract ("chat" or "completion" for
        text). A model that cannot serve it is a 400 naming its capabilities and ``route``
        (what it was asked for); an image, video or embedding model is refused from its
        record, before it is loaded, so nothing is evicted for it."""
        use = f"with {route}" if route else f"for {contract.purpose}"
        model_id = self.canonical(model_id)
        record = self.unloaded_record(model_id)
        known = record.capabilities if record is not None else []
        if capability is not None and known and set(known) <= NOT_TEXT:
            _refuse(model_id, known, capability, use)
        entry = self._entries.get(model_id)
        if entry is None:
            record = record or self._record(model_id)
            lock = self._loading.setdefault(model_id, asyncio.Lock())
            async with lock:
                entry = self._entries.get(model_id) or await self._load_within_budget(record)
        entry.last_used = time.monotonic()
        self._entries.move_to_end(model_id)
        engine = entry.engine
        info = engine.info
        if capability is not None:
            _refuse(info.id, info.capabilities, capability, use)
        if not isinstance(engine, contract):
            raise _refusal(info.id, info.capabilities, use)
        return engine

    def unloaded_record(self, model_id: str) -> ModelRecord | None:
        """The store's record of a model that is not loaded (404 if there is none)."""
        model_id = self.canonical(model_id)
        return None if model_id in self._entries else self._record(model_id)

    def records(self) -> list[ModelRecord]:
        """Every servable model: the store's, plus engines handed in that it doesn't know."""
        records = {r.id: r for r in self.store.list()} if self.store else {}
        for model_id, entry in self._entries.items():
            if model_id not in records:
                info = entry.engine.info
                records[model_id] = ModelRecord(
                    id=info.id,
                    format="gguf",
                    context_length=info.context_length,
                    capabilities=list(info.capabilities),
                    publisher=info.owned_by,
                )
        return sorted(records.values(), key=lambda r: r.id)

    def loaded(self) -> dict[str, Engine]:
        return {model_id: entry.engine for model_id, entry in self._entries.items()}

    def memory_of(self, model_id: str) -> int:
        """The bytes a loaded model is counted at against the memory budget (0 if not loaded)."""
        entry = self._entries.get(model_id)
        return entry.memory if entry is not None else 0

    def __iter__(self) -> Iterator[Engine]:
        return iter([entry.engine for entry in self._entries.values()])

    def __len__(self) -> int:
        return len(self._entries)

    # --- loading and unloading ------------------------------------------------------------------
    def _record(self, model_id: str) -> ModelRecord:
        if self.store is None:
            served = ", ".join(self._entries) or "none"
            hint = did_you_mean(model_id, self._entries) or f" (served: {served})"
            raise ModelNotFound(
                f"model '{model_id}' does not exist or is not served here{hint}", param="model"
            )
        return self.store.get(model_id)

    def _need(self, record: ModelRecord) -> int:
        """Weights plus one full-context KV cache per slot (records hold one slot's)."""
        if record.format != "gguf":
            return record.memory_bytes
        cache = max(record.memory_bytes - record.size_bytes, 0)
        return record.size_bytes + cache * self.settings.parallel

    async def _load_within_budget(self, record: ModelRecord) -> _Entry:
        self._check_servable(record)  # before anything is evicted for it
        need = self._need(record)
        if need > self.budget:
            raise InvalidRequest(
                f"model '{record.id}' needs about {need / 2**30:.1f} GiB, more than the "
                f"memory budget of {self.budget / 2**30:.1f} GiB; raise --memory-budget",
                param="model",
            )
        async with self._budget_lock:
            while self._in_use() + need > self.budget:
                victim = next(
                    (
                        mid
                        for mid, e in self._entries.items()
                        if not e.pinned and e.engine.in_flight == 0
                    ),
                    None,
                )
                if victim is None:
                    raise Overloaded(
                        f"not enough memory budget free to load '{record.id}' while other "
                        "models are busy; retry shortly"
                    )
                await self.unload(victim, reason="to make room")
            engine = await asyncio.to_thread(self._load, record)
            entry = _Entry(engine, need, False, time.monotonic())
            self._entries[record.id] = entry
            log.info("loaded %s (~%.0f MiB)", record.id, need / 2**20)
            return entry

    @staticmethod
    def _check_servable(record: ModelRecord) -> None:
        try:
            engine_class(record.backend)
        except KeyError:
            raise InvalidRequest(
                f"model '{record.id}' is in {record.format} format, which needs the "
                f"{record.backend} engine; this server does not have it",
                param="model",
            ) from None

    def _load(self, record: ModelRecord) -> Engine:
        if self.store is None:
            raise ModelNotFound(f"model '{record.id}' is not in a store", param="model")
        self._check_servable(record)
        weights = self.store.weights(record)
        try:
            options = EngineOptions(
                model_id=record.id,
                path=weights,
                context_length=self.settings.context_length,
                threads=self.settings.threads,
                parallel=self.settings.parallel,
                max_queue=self.settings.max_queue,
                created=_epoch(record.added),
                owned_by=record.publisher or "kaiyuan",
                trust_remote_code=record.trust_remote_code,
            )
            engine = load_engine(record.backend, options)
        except KaiyuanError:  # the engine said what is wrong, for the user
            log.exception("loading %s failed", record.id)
            raise
        except Exception as exc:
            log.exception("loading %s failed", record.id)
            raise EngineFailure(f"model '{record.id}' could not be loaded; see the log") from exc
        defaults = generation.merge(generation.layers(record, self.settings, weights))
        engine.info = replace(engine.info, defaults=defaults)
        return engine

    def _in_use(self) -> int:
        return sum(entry.memory for entry in self._entries.values())

    async def unload(self, model_id: str, *, reason: str) -> None:
        entry = self._entries.pop(model_id, None)
        if entry is not None:
            log.info("unloading %s (%s)", model_id, reason)
            await entry.engine.aclose()

    async def sweep(self) -> None:
        """Unload models idle for longer than keep_alive (the server's, or the one a request
        set for the model)."""
        now = time.monotonic()
        for model_id, entry in list(self._entries.items()):
            keep = self._keep(entry)
            if entry.engine.in_flight:
                entry.last_used = now
            elif keep >= 0 and not entry.pinned and now - entry.last_used > keep:
                await self.unload(model_id, reason=f"idle for {keep:g} s")

    def _keep(self, entry: _Entry) -> float:
        return self.settings.keep_alive if entry.keep_alive is None else entry.keep_alive

    # --- per-request keep-alive (Ollama's keep_alive) --------------------------------------------
    def keep_alive(self, model_id: str, seconds: float | None) -> None:
        """How long ``model_id`` stays loaded once idle, counted from now: ``seconds``, None
        for the server's keep_alive, negative for ever, 0 to unload it as soon as it is idle
        (at the next sweep). Pinned models (``--model``) stay loaded whatever is asked."""
        entry = self._entries.get(self.canonical(model_id))
        if entry is not None:
            entry.keep_alive = seconds
            entry.last_used = time.monotonic()

    def expires_in(self, model_id: str) -> float | None:
        """Seconds until a loaded model is unloaded if no request comes (a busy one: counted
        from now), or None when it stays (pinned, kept forever, or not loaded)."""
        entry = self._entries.get(self.canonical(model_id))
        if entry is None or entry.pinned:
            return None
        keep = self._keep(entry)
        if keep < 0:
            return None
        if entry.engine.in_flight:
            return keep
        return max(entry.last_used + keep - time.monotonic(), 0.0)

    async def unload_idle(self, model_id: str, *, reason: str) -> bool:
        """Unload ``model_id`` now if it is loaded, not pinned and idle; whether it was."""
        model_id = self.canonical(model_id)
        entry = self._entries.get(model_id)
        if entry is None or entry.pinned or entry.engine.in_flight:
            return False
        await self.unload(model_id, reason=reason)
        return True

    async def run_keep_alive(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await self.sweep()

    async def aclose(self) -> None:
        for model_id in list(self._entries):
            await self.unload(model_id, reason="shutdown")


def _refuse(model_id: str, capabilities: Sequence[str], capability: str, use: str) -> None:
    if capability not in capabilities:
        raise _refusal(model_id, capabilities, use)


def _refusal(model_id: str, capabilities: Sequence[str], use: str) -> InvalidRequest:
    return InvalidRequest(
        f"model '{model_id}' cannot be used {use} (its capabilities: {', '.join(capabilities)})",
        param="model",
    )


def _epoch(iso: str) -> int:
    try:
        return int(datetime.datetime.fromisoformat(iso).timestamp())
    except ValueError:
        return 0
