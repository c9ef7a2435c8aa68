"""``kaiyuan pull NAME``: a catalogue model (``qwen2.5-0.5b-instruct``, ``qwen3:8b``, optionally
``:QUANT``) or a hub repo, ``hf:ORG/REPO[:PATTERN]`` or ``ms:ORG/REPO[:PATTERN]``.

A catalogue model comes from Hugging Face unless the catalogue lists only a ModelScope repo
or ``hub="ms"`` asks for ModelScope; it is installed under its catalogue id, and a GGUF one
at the catalogue's quantisation for this machine's memory.

ref -> hub listing -> file choice (a GGUF quantisation by pattern, or the best that fits this
machine, default Q4_K_M; or a safetensors/diffusers snapshot without pickle weights or custom
code unless opted in) -> free-space check -> resumable downloads into
``$KAIYUAN_HOME/downloads`` -> digest check of every file -> atomic install into the store.
An interruption leaves the partial files for the next run and nothing in the store.
"""

from __future__ import annotations

import fnmatch
import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from kaiyuan.config import Settings
from kaiyuan.errors import InvalidRequest
from kaiyuan.store import catalog, naming
from kaiyuan.store.catalog import CatalogModel
from kaiyuan.store.hubs import Hub, HubFile, HubUnreachable, RepoInfo, hub_for
from kaiyuan.store.hubs.base import IMPORT_HINT, DigestMismatch
from kaiyuan.store.inspection import PICKLE_SUFFIXES, InvalidModel, is_projector, quant_from_name
from kaiyuan.store.names import check_id, check_repo, id_from
from kaiyuan.store.records import Format, ModelRecord
from kaiyuan.store.store import Store

# (file path, bytes on disk so far, file size)
OnProgress = Callable[[str, int, int], None]
DEFAULT_QUANT = "Q4_K_M"
_KEEP_SUFFIXES = (".json", ".safetensors", ".txt", ".model", ".jinja", ".tiktoken")
_SKIP_DIRS = ("original/", "onnx/", "openvino/", "coreml/", "flax/")


HUB_NAMES = {"hf": "Hugging Face", "ms": "ModelScope"}


class NotEnoughSpace(InvalidRequest):
    code = "not_enough_disk_space"


class HubOffline(HubUnreachable):
    code = "hub_offline"


@dataclass(slots=True, frozen=True)
class PullRef:
    scheme: str
    repo: str
    pattern: str | None = None
    entry: CatalogModel | None = None  # set when the user named a catalogue model

    def __str__(self) -> str:
        return f"{self.scheme}:{self.repo}" + (f":{self.pattern}" if self.pattern else "")


@dataclass(slots=True, frozen=True)
class Plan:
    format: Format
    files: tuple[HubFile, ...]
    quantisation: str | None = None

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def parse_ref(text: str, hub: str | None = None) -> PullRef:
    """A hub reference, or the catalogue model ``text`` names (from ``hub`` when given)."""
    if hub is not None and hub not in HUB_NAMES:
        raise InvalidRequest(f"unknown hub '{hub}': use hf or ms", param="hub")
    scheme, sep, rest = text.partition(":")
    if sep and scheme in HUB_NAMES:
        if hub is not None and hub != scheme:
            raise InvalidRequest(f"'{text}' names its hub already; drop --hub {hub}", param="hub")
        repo, _, pattern = rest.partition(":")
        return PullRef(scheme, check_repo(repo), pattern or None)
    named = naming.lookup(text)
    if named is None:
        if "/" in text:
            raise InvalidRequest(
                f"'{text}' is not a hub reference: use hf:ORG/REPO[:PATTERN] or "
                "ms:ORG/REPO[:PATTERN]",
                param="model",
            )
        raise naming.unknown(text)
    entry = named.model
    scheme = hub or ("hf" if entry.hf else "ms")
    found = entry.hf if scheme == "hf" else entry.ms
    if found is None:
        other = "ms" if scheme == "hf" else "hf"
        flag = " --hub ms" if other == "ms" else ""
        raise InvalidRequest(
            f"the catalogue has no {HUB_NAMES[scheme]} repo for '{entry.id}'; pull it from "
            f"{HUB_NAMES[other]}: `kaiyuan pull {text}{flag}`",
            param="hub",
        )
    return PullRef(scheme, check_repo(found), named.quant, entry)


def plan(
    info: RepoInfo,
    pattern: str | None,
    memory: int,
    *,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
) -> Plan:
    paths = {f.path for f in info.files}
    if any(p.lower().endswith(".gguf") for p in paths):
        return _plan_gguf(info, pattern, memory)
    safe = any(p.endswith(".safetensors") for p in paths)
    pickles = sorted(p for p in paths if p.lower().endswith(PICKLE_SUFFIXES))
    if pickles and not safe and not allow_pickle:
        raise InvalidModel(
            f"'{info.repo}' has only pickle weights ({pickles[0]}), which can run code when "
            "loaded; refused. Pass --allow-pickle only if you trust its publisher"
        )
    if "model_index.json" in paths:
        fmt: Format = "diffusers"
    elif "config.json" in paths:
        fmt = "safetensors"
    else:
        raise InvalidModel(
            f"'{info.repo}' has no GGUF file, config.json or model_index.json: "
            "not a model kaiyuan can serve"
        )
    code = sorted(p for p in paths if p.endswith(".py"))
    if code and not trust_remote_code:
        raise InvalidModel(
            f"'{info.repo}' ships custom code ({code[0]}), which runs arbitrary Python when "
            "loaded; refused. Pass --trust-remote-code only if you trust its publisher"
        )
    files = [
        f
        for f in info.files
        if _wanted(f.path, paths, pickles=not safe and allow_pickle, code=trust_remote_code)
    ]
    if pattern:
        files = [f for f in files if not _is_weight(f.path) or _matches(f.path, pattern)]
        if not any(_is_weight(f.path) for f in files):
            raise InvalidRequest(f"no weights in '{info.repo}' match '{pattern}'", param="model")
    return Plan(fmt, tuple(files))


def _is_weight(path: str) -> bool:
    return path.endswith(".safetensors") or path.lower().endswith(PICKLE_SUFFIXES)


def _wanted(path: str, paths: set[str], *, pickles: bool, code: bool) -> bool:
    lower = path.lower()
    name = PurePosixPath(path).name
    if lower.startswith(_SKIP_DIRS):
        return False
    if name.upper().startswith("LICENSE") or name == "README.md":
        return True
    if lower.endswith(PICKLE_SUFFIXES):
        return pickles
    if path.endswith(".py"):
        return code
    if ".fp16." in name and path.replace(".fp16.", ".") in paths:
        return False  # a diffusers variant beside the full-precision file
    return lower.endswith(_KEEP_SUFFIXES)


def _matches(path: str, pattern: str) -> bool:
    name = PurePosixPath(path).name
    return fnmatch.fnmatch(name.lower(), pattern.lower()) or fnmatch.fnmatch(
        path.lower(), pattern.lower()
    )


def _plan_gguf(info: RepoInfo, pattern: str | None, memory: int) -> Plan:
    groups: dict[str, list[HubFile]] = {}
    for f in info.files:
        if f.path.lower().endswith(".gguf") and not is_projector(f.path):
            label = quant_from_name(f.path) or PurePosixPath(f.path).stem
            groups.setdefault(label, []).append(f)  # shards of one quantisation group together
    sizes = {label: sum(f.size for f in files) for label, files in groups.items()}
    if pattern:
        chosen = [
            label
            for label, files in groups.items()
            if label.upper() == pattern.upper() or any(_matches(f.path, pattern) for f in files)
        ]
        if not chosen:
            raise InvalidRequest(
                f"no GGUF file in '{info.repo}' matches '{pattern}'; available: "
                + ", ".join(sorted(groups)),
                param="model",
            )
        if len(chosen) > 1:
            raise InvalidRequest(
                f"'{pattern}' matches several quantisations in '{info.repo}' "
                f"({', '.join(sorted(chosen))}); be more specific",
                param="model",
            )
        label = chosen[0]
    else:
        fits = {q: s for q, s in sizes.items() if s * 1.2 <= memory}
        if not fits:
            smallest = min(sizes, key=lambda q: sizes[q])
            raise InvalidRequest(
                f"no quantisation of '{info.repo}' fits this machine's memory "
                f"({memory / 2**30:.1f} GiB budget); the smallest, {smallest}, is "
                f"{sizes[smallest] / 2**30:.1f} GiB. Name one with :PATTERN to pull it anyway",
                param="model",
            )
        label = DEFAULT_QUANT if DEFAULT_QUANT in fits else max(fits, key=lambda q: fits[q])
    files = list(groups[label])
    projectors = [
        f for f in info.files if f.path.lower().endswith(".gguf") and is_projector(f.path)
    ]
    if projectors:  # a vision model's image encoder: prefer f16, else the smallest
        f16 = [f for f in projectors if "f16" in f.path.lower()]
        files.append((f16 or sorted(projectors, key=lambda f: f.size))[0])
    files += [f for f in info.files if PurePosixPath(f.path).name.upper().startswith("LICENSE")]
    return Plan("gguf", tuple(files), label)


def default_id(ref: PullRef, chosen: Plan) -> str:
    entry = catalog.by_repo(ref.repo)
    name = ref.repo.split("/")[1]
    for suffix in ("-GGUF", "-gguf"):
        name = name.removesuffix(suffix)
    base = entry.id if entry else id_from(name)
    if chosen.format == "gguf" and chosen.quantisation:
        return check_id(f"{base}-{chosen.quantisation.lower()}")
    return base


def provenance(ref: PullRef, info: RepoInfo) -> tuple[str | None, str | None, str | None]:
    """(publisher, origin, licence): the catalogue's word first, then the hub's."""
    entry = catalog.by_repo(ref.repo)
    if entry is not None:
        return entry.publisher, entry.origin, entry.licence or info.licence
    org = ref.repo.split("/")[0]
    known = catalog.publisher_of(org)
    publisher, origin = known if known else (org, None)
    return publisher, origin, info.licence


def free_space(path: Path) -> int:
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, expected: HubFile) -> str:
    """The file's sha256, after checking it against what the hub said; a bad file is deleted."""
    from kaiyuan.store.inspection import sha256_file

    actual = sha256_file(path)
    wrong = (expected.sha256 and actual != expected.sha256.lower()) or (
        not expected.sha256 and expected.blob_sha1 and git_blob_sha1(path) != expected.blob_sha1
    )
    if wrong or path.stat().st_size != expected.size:
        path.unlink()
        raise DigestMismatch(
            f"'{expected.path}' does not match the digest the hub published (expected "
            f"{expected.sha256 or expected.blob_sha1}); the bad download was discarded, "
            "run the command again"
        )
    return actual


def pull(
    text: str,
    *,
    settings: Settings,
    name: str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    memory: int | None = None,
    on_progress: OnProgress | None = None,
    hub: Hub | None = None,
    hub_scheme: str | None = None,
) -> ModelRecord:
    """Download ``text`` (a catalogue name or a hub reference) into the store.

    ``memory`` stands for this machine's memory (default: what :mod:`kaiyuan.machine`
    finds); ``hub_scheme`` ("hf" or "ms") chooses the hub for a catalogue name."""
    from kaiyuan.machine import model_memory, this_machine, total_memory

    ref = parse_ref(text, hub_scheme)
    store = Store(settings.home)
    if name is not None:
        check_id(name)
    if ref.scheme == "hf" and settings.hf_hub_offline:
        raise HubOffline(
            "Hugging Face is off: HF_HUB_OFFLINE is set, so kaiyuan does not contact it; "
            f"unset it, or pull from ModelScope{_other_hub_hint(text, ref)}"
        )
    known_id = name or (ref.entry.id if ref.entry else None)
    if known_id is not None:
        _check_free(store, known_id)
    hub = hub or hub_for(ref.scheme, settings)
    try:
        info = hub.info(ref.repo)
    except HubUnreachable as exc:
        if ref.entry is None:
            raise
        head = exc.message.removesuffix(IMPORT_HINT).rstrip("; ")
        hint = _mirror_hint(text, ref.scheme, ref.entry)
        raise HubUnreachable(f"{head}; {hint}; {IMPORT_HINT}") from None
    budget = memory or settings.memory_budget or int(total_memory() * 0.75)
    pattern = ref.pattern
    if ref.entry is not None and pattern is None and ref.entry.format == "gguf":
        quant = ref.entry.quant_for(memory or model_memory(this_machine()))
        # The catalogue's choice, if the repo still has it; else the repo's files decide.
        if quant is not None and quant.upper() in _gguf_labels(info):
            pattern = quant
    chosen = plan(
        info, pattern, budget, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code
    )
    model_id = known_id or default_id(ref, chosen)
    _check_free(store, model_id)
    key = hashlib.sha256("\n".join(sorted(f.path for f in chosen.files)).encode()).hexdigest()
    folder = store.downloads / ref.scheme / f"{ref.repo.replace('/', '--')}--{key[:12]}"
    _check_space(folder, chosen)
    digests: dict[str, str] = {}
    for f in chosen.files:
        progress = (lambda n, f=f: on_progress(f.path, n, f.size)) if on_progress else _ignore
        path = hub.download(ref.repo, info.revision, f, folder, progress)
        digests[f.path] = verify(path, f)
    for leftover in folder.glob(".*"):  # SDK bookkeeping (.cache, locks), not model files
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    publisher, origin, licence = provenance(ref, info)
    record = store.install(
        model_id,
        [folder],
        move=True,
        source=f"{ref.scheme}:{ref.repo}@{info.revision}",
        licence=licence,
        publisher=publisher,
        origin=origin,
        digests=digests,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
    )
    return record


def _ignore(_: int) -> None:
    return None


def _check_free(store: Store, model_id: str) -> None:
    if store.exists(model_id):
        raise InvalidRequest(
            f"model '{model_id}' already exists; `kaiyuan rm {model_id}` first or pull with --name",
            param="model",
        )


def _gguf_labels(info: RepoInfo) -> set[str]:
    return {
        (quant_from_name(f.path) or "").upper()
        for f in info.files
        if f.path.lower().endswith(".gguf") and not is_projector(f.path)
    }


def _other_hub_hint(text: str, ref: PullRef) -> str:
    if ref.entry is not None and ref.entry.ms:
        return f": `kaiyuan pull {text} --hub ms`"
    return " (ms:ORG/REPO)"


def _mirror_hint(text: str, scheme: str, entry: CatalogModel) -> str:
    """How else to get a catalogue model when its hub cannot be reached."""
    if scheme == "hf":
        mirror = "through a Hugging Face mirror (set HF_ENDPOINT to its URL)"
        if entry.ms:
            return f"pull it from ModelScope (`kaiyuan pull {text} --hub ms`) or {mirror}"
        return f"pull it {mirror}"
    if entry.hf:
        return f"pull it from Hugging Face (`kaiyuan pull {text}`)"
    return "try again later"


def _check_space(folder: Path, chosen: Plan) -> None:
    have = 0
    for f in chosen.files:
        for candidate in (
            folder / f.path,
            folder / (f.path + ".part"),
            folder / (f.path + ".incomplete"),
        ):
            if candidate.exists():
                have += candidate.stat().st_size
    need = max(chosen.size - have, 0)
    free = free_space(folder)
    if need + 64 * 2**20 > free:
        raise NotEnoughSpace(
            f"not enough disk space: the download needs {need / 1e9:.2f} GB more, "
            f"{free / 1e9:.2f} GB are free under {folder.parent}"
        )
