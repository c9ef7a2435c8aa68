"""Ollama's model management on kaiyuan's store and pool: names, /api/tags, /api/ps,
/api/show, /api/pull, /api/delete and /api/copy.

Names. Ollama writes ``model:tag``; kaiyuan ids have no tag. /api/tags lists every model as
``ID:latest`` (aliases as they are, or with ``:latest``), and a request may name a model as
its id, ``ID:latest``, an alias, a catalogue name (``qwen2.5:0.5b``: the catalogue id it
installs as), or ``hf.co/ORG/REPO[:QUANT]`` (the id a pull of it installs as).

Copies are aliases (``settings.aliases``, which the pool honours on every surface), kept in
memory and written to the user's config.toml, so they outlive the server.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import tomlkit

from kaiyuan.config import Settings, config_file
from kaiyuan.engines.base import Engine
from kaiyuan.engines.pool import EnginePool
from kaiyuan.errors import InvalidRequest, KaiyuanError, ModelNotFound, did_you_mean
from kaiyuan.protocol.ollama import api
from kaiyuan.store import catalog, generation, naming
from kaiyuan.store import pull as store_pull
from kaiyuan.store.names import id_from
from kaiyuan.store.records import ModelRecord

log = logging.getLogger(__name__)

LATEST = ":latest"
_HF_HOSTS = ("hf.co/", "huggingface.co/")
_MS_HOSTS = ("modelscope.cn/", "modelscope.ai/")
_OLLAMA_PREFIXES = ("registry.ollama.ai/", "library/")
# Ollama reports a model kept for ever as expiring ~292 years from now (Go's longest duration).
_FOREVER = datetime.timedelta(days=292 * 365)
# kaiyuan's capabilities -> Ollama's
_CAPABILITIES = {
    "chat": "completion",
    "completion": "completion",
    "tools": "tools",
    "vision": "vision",
    "reasoning": "thinking",
    "embedding": "embedding",
}
# kaiyuan's generation defaults -> Ollama's parameter names
_PARAMETERS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repetition_penalty": "repeat_penalty",
    "max_tokens": "num_predict",
}
# config.toml is one file per user: one writer at a time in this process
_CONFIG_LOCK = threading.Lock()
# One pull at a time in this process: two of one model would write the same partial files.
_PULL_LOCK = threading.Lock()


def rfc3339(moment: datetime.datetime | None = None) -> str:
    moment = moment or datetime.datetime.now(datetime.UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


# --- names ---------------------------------------------------------------------------------------
def _untagged(name: str) -> str:
    name = name.strip()
    for prefix in _OLLAMA_PREFIXES:
        name = name.removeprefix(prefix)
    return name.removesuffix(LATEST)


def _is_model(pool: EnginePool, name: str) -> bool:
    """Whether ``name`` is a model id this server has (loaded or in the store)."""
    if name in pool.loaded():
        return True
    if pool.store is None:
        return False
    try:
        return pool.store.exists(name)
    except KaiyuanError:  # not even a valid id
        return False


def _known(pool: EnginePool, name: str) -> bool:
    return name in pool.settings.aliases or _is_model(pool, name)


def resolve(pool: EnginePool, name: str) -> str:
    """The id or alias an Ollama model name means (the untagged name when none: the pool's
    404 then names what is close)."""
    bare = _untagged(name)
    for candidate in (name.strip(), bare):
        if _known(pool, candidate):
            return candidate
    for candidate in _installed_as(pool, bare):  # only now: it may read the whole store
        if _known(pool, candidate):
            return candidate
    return bare


def _installed_as(pool: EnginePool, name: str) -> list[str]:
    """The ids a pull of ``name`` (a catalogue or hub name) installs under."""
    hub = _hub_ref(name)
    if hub is None:
        try:
            named = naming.lookup(name)
        except KaiyuanError:
            return []
        return [named.model.id] if named is not None else []
    repo, _, quant = hub.partition(":")[2].partition(":")
    entry = catalog.by_repo(repo)
    stem = repo.rpartition("/")[2]
    for suffix in ("-GGUF", "-gguf"):
        stem = stem.removesuffix(suffix)
    try:
        base = entry.id if entry else id_from(stem)
    except KaiyuanError:
        return []
    if quant:
        return [f"{base}-{quant.lower()}", base]
    ids = [r.id for r in pool.store.list()] if pool.store else []
    return [base, *[i for i in ids if i.startswith(f"{base}-")][:1]]


def _hub_ref(name: str) -> str | None:
    """``hf.co/ORG/REPO:QUANT`` -> ``hf:ORG/REPO:QUANT`` (kaiyuan's spelling); None for others."""
    for hosts, scheme in ((_HF_HOSTS, "hf"), (_MS_HOSTS, "ms")):
        for host in hosts:
            if name.lower().startswith(host):
                return f"{scheme}:{name[len(host) :]}"
    if name.startswith(("hf:", "ms:")):
        return name
    return None


def listed_name(name: str) -> str:
    return name if ":" in name else name + LATEST


# --- what a record says, in Ollama's words ------------------------------------------------------
def _parameter_size(count: int | None) -> str:
    if not count:
        return ""
    return f"{count / 1e9:.1f}B" if count >= 1e9 else f"{count / 1e6:.2f}M"


def details(record: ModelRecord) -> api.Details:
    family = record.architecture or record.format
    return api.Details(
        format=record.format,
        family=family,
        families=[family],
        parameter_size=_parameter_size(record.parameters),
        quantization_level=record.quantisation or "",
    )


def _modified(record: ModelRecord) -> str:
    try:
        added = datetime.datetime.fromisoformat(record.added)
    except ValueError:
        added = datetime.datetime.fromtimestamp(0, datetime.UTC)
    if added.tzinfo is None:
        added = added.replace(tzinfo=datetime.UTC)
    return rfc3339(added)


def _records(pool: EnginePool) -> dict[str, ModelRecord]:
    return {r.id: r for r in pool.records()}


def _record(pool: EnginePool, name: str) -> ModelRecord:
    model_id = pool.canonical(resolve(pool, name))
    records = _records(pool)
    if model_id not in records:
        hint = did_you_mean(model_id, records)
        raise ModelNotFound(f"model '{name}' not found{hint}", param="model")
    return records[model_id]


def tags(pool: EnginePool) -> api.ListResponse:
    """Every servable model, then every alias of one (blocking: reads the store)."""
    records = _records(pool)
    entries: list[tuple[str, ModelRecord]] = [(r.id, r) for r in records.values()]
    entries += [(a, records[t]) for a, t in pool.settings.aliases.items() if t in records]
    return api.ListResponse(
        models=[
            api.ListedModel(
                name=listed_name(name),
                model=listed_name(name),
                modified_at=_modified(record),
                size=record.size_bytes,
                digest=record.sha256,
                details=details(record),
            )
            for name, record in entries
        ]
    )


def running(pool: EnginePool) -> api.ProcessResponse:
    """The loaded models and when each will be unloaded (blocking: reads the store)."""
    records = _records(pool)
    now = datetime.datetime.now(datetime.UTC)
    models = []
    for model_id, engine in pool.loaded().items():
        record = records.get(model_id) or _bare_record(engine)
        left = pool.expires_in(model_id)
        expires = now + (_FOREVER if left is None else datetime.timedelta(seconds=left))
        models.append(
            api.RunningModel(
                name=listed_name(model_id),
                model=listed_name(model_id),
                size=record.memory_bytes or record.size_bytes,
                digest=record.sha256,
                details=details(record),
                expires_at=rfc3339(expires),
                context_length=engine.info.context_length or None,
            )
        )
    return api.ProcessResponse(models=models)


def _bare_record(engine: Engine) -> ModelRecord:
    info = engine.info
    return ModelRecord(id=info.id, format="gguf", capabilities=list(info.capabilities))


def show(pool: EnginePool, settings: Settings, name: str) -> api.ShowResponse:
    """/api/show (blocking: reads the store and the model's generation config)."""
    record = _record(pool, name)
    engine = pool.loaded().get(record.id)
    if engine is not None:
        defaults = engine.info.defaults
        capabilities = list(engine.info.capabilities)
        context = engine.info.context_length or record.context_length
        template = engine.info.chat_template or ""
    else:
        weights = pool.store.weights(record) if pool.store else None
        defaults = generation.merge(generation.layers(record, settings, weights))
        capabilities, context, template = record.capabilities, record.context_length, ""
    values = defaults.model_dump(exclude_none=True)
    pairs = [(_PARAMETERS[key], value) for key, value in values.items() if key in _PARAMETERS]
    parameters = "\n".join(f"{key:<30} {value}" for key, value in pairs)
    modelfile = f"# the generation defaults kaiyuan serves {record.id} with\nFROM {record.id}\n"
    modelfile += "".join(f"PARAMETER {key} {value}\n" for key, value in pairs)
    arch = record.architecture or record.format
    info: dict[str, Any] = {"general.architecture": arch}
    if record.parameters:
        info["general.parameter_count"] = record.parameters
    if context:
        info[f"{arch}.context_length"] = context
    return api.ShowResponse(
        license=record.licence or "",
        modelfile=modelfile,
        parameters=parameters,
        template=template,
        details=details(record),
        model_info=info,
        capabilities=list(
            dict.fromkeys(_CAPABILITIES[c] for c in capabilities if c in _CAPABILITIES)
        ),
        modified_at=_modified(record),
    )


# --- pull ----------------------------------------------------------------------------------------
def _pull_text(name: str) -> str:
    """What ``kaiyuan pull`` is given for an Ollama name."""
    bare = _untagged(name)
    return _hub_ref(bare) or bare


def pull(pool: EnginePool, settings: Settings, name: str) -> AsyncIterator[api.ProgressResponse]:
    """Ollama's pull progress from kaiyuan's store pull: "pulling manifest", then per file
    "downloading PATH" with its bytes so far, then "success" (an installed model: at once).
    A name that cannot be pulled is refused here, before any progress is sent."""
    if pool.store is None:
        raise InvalidRequest("this server has no model store to pull into", param="model")
    if pool.store.home != settings.home:
        settings = settings.model_copy(update={"home": pool.store.home})
    text = _pull_text(name)
    store_pull.parse_ref(text)  # offline: a catalogue name or a hub reference, else a 400
    return _pulling(pool, settings, text)


async def _pulling(
    pool: EnginePool, settings: Settings, text: str
) -> AsyncIterator[api.ProgressResponse]:
    """The pull itself, in a worker thread; it completes even if the client leaves."""
    yield api.ProgressResponse(status="pulling manifest")
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, int, int] | None] = asyncio.Queue()

    def progress(path: str, done: int, total: int) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (path, done, total))

    def work() -> ModelRecord | None:
        try:
            with _PULL_LOCK:  # a second pull of the same model finds it installed
                if any(_is_model(pool, c) for c in (text, *_installed_as(pool, text))):
                    return None
                return store_pull.pull(text, settings=settings, on_progress=progress)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    task = asyncio.ensure_future(asyncio.to_thread(work))
    task.add_done_callback(_retrieved)
    finished = False
    while not finished:
        burst = [await queue.get()]
        while not queue.empty():  # a burst of chunks: only the newest count of each file
            burst.append(queue.get_nowait())
        latest: dict[str, tuple[str, int, int]] = {}
        for item in burst:
            if item is None:
                finished = True
            else:
                latest[item[0]] = item
        for path, done, total in latest.values():
            yield api.ProgressResponse(
                status=f"downloading {path}", digest=path, total=total, completed=done
            )
    record = await task
    if record is not None:
        log.info("pulled %s as %s", text, record.id)
    yield api.ProgressResponse(status="success")


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # read, so an abandoned pull's failure is not logged as unretrieved


# --- delete and copy -----------------------------------------------------------------------------
def _aliases(pool: EnginePool, settings: Settings) -> list[dict[str, str]]:
    """The alias tables to change: the pool's, and the app's when that is another one."""
    tables = [pool.settings.aliases]
    if settings.aliases is not pool.settings.aliases:
        tables.append(settings.aliases)
    return tables


async def delete(pool: EnginePool, settings: Settings, name: str) -> None:
    """Remove an alias, or a model from the store (unloading it first)."""
    for alias in dict.fromkeys((name.strip(), _untagged(name))):
        if alias in pool.settings.aliases:
            await asyncio.to_thread(_write_alias, alias, None)
            for table in _aliases(pool, settings):
                table.pop(alias, None)
            return
    model_id = resolve(pool, name)
    if pool.store is None or not _is_model(pool, model_id):
        raise ModelNotFound(f"model '{name}' not found", param="model")
    engine = pool.loaded().get(model_id)
    if engine is not None and engine.in_flight:
        raise InvalidRequest(
            f"model '{model_id}' is answering requests; delete it when they are done",
            param="model",
        )
    await asyncio.to_thread(pool.store.remove, model_id)
    if engine is not None:
        await pool.unload(model_id, reason="deleted")


async def copy(pool: EnginePool, settings: Settings, source: str, destination: str) -> None:
    """``destination`` becomes an alias of the model ``source`` names."""
    found = resolve(pool, source)
    if not _known(pool, found):
        hint = did_you_mean(found, pool.loaded())
        raise ModelNotFound(f"model '{source}' not found{hint}", param="source")
    target = pool.canonical(found)
    alias = _untagged(destination)
    if not alias or not alias.isprintable() or any(c.isspace() for c in alias):
        raise InvalidRequest(
            "destination must be a name without spaces or control characters",
            param="destination",
        )
    if alias == target or _is_model(pool, alias):
        raise InvalidRequest(
            f"a model named '{alias}' exists already; choose another destination",
            param="destination",
        )
    await asyncio.to_thread(_write_alias, alias, target)  # kept first, then served
    for table in _aliases(pool, settings):
        table[alias] = target


def _write_alias(alias: str, target: str | None) -> None:
    """Set (or with None remove) an alias in config.toml, keeping the file's comments."""
    path: Path = config_file()
    with _CONFIG_LOCK:
        try:
            document = tomlkit.parse(path.read_text()) if path.exists() else tomlkit.document()
        except tomlkit.exceptions.ParseError:
            raise InvalidRequest(
                f"the config file {path.name} is not valid TOML; fix it to keep aliases"
            ) from None
        table = document.get("aliases")
        if table is None:
            if target is None:
                return
            table = document["aliases"] = tomlkit.table()
        if target is None:
            table.pop(alias, None)
        else:
            table[alias] = target
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(path.name + ".part")
        part.write_text(tomlkit.dumps(document))
        part.replace(path)
