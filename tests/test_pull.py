"""``kaiyuan pull`` end to end against the local hub stand-in (tests/hubserver.py).

Both hubs are exercised through their real SDKs (huggingface_hub for metadata plus kaiyuan's
own resumable downloader; the modelscope SDK for ModelScope). Everything talks to 127.0.0.1
only: an autouse guard fails any other connection.
"""

from __future__ import annotations

import _thread
import datetime
import hashlib
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kaiyuan.config import Settings
from kaiyuan.errors import InvalidRequest, ModelNotFound
from kaiyuan.store import bundled, catalog
from kaiyuan.store.catalog import CatalogModel
from kaiyuan.store.hubs.base import DigestMismatch, HubUnreachable
from kaiyuan.store.inspection import PICKLE_SUFFIXES, InvalidModel, manifest_digest
from kaiyuan.store.pull import NotEnoughSpace, pull
from kaiyuan.store.records import ModelRecord
from kaiyuan.store.store import Store
from tests.hubserver import HubServer, Request
from tests.tinymodels import (
    CUSTOM_CODE,
    PICKLE_MODEL,
    TINY_DIFFUSERS,
    TINY_GGUF,
    TINY_MODEL,
    make_hub_tree,
    write_readme,
    write_tiny_gguf,
    write_tiny_hf_model,
)

pytest.importorskip("huggingface_hub")
pytest.importorskip("modelscope_hub")

HUBS = ["hf", "ms"]
HUB_NAMES = {"hf": "Hugging Face", "ms": "ModelScope"}
PARTIAL_SUFFIX = {"hf": ".part", "ms": ".incomplete"}
Q4 = "tiny-Q4_K_M.gguf"
Q8 = "tiny-Q8_0.gguf"
Q4_PATH = f"{TINY_GGUF}/{Q4}"
Q8_PATH = f"{TINY_GGUF}/{Q8}"
# Extra repos built beside make_hub_tree's standard ones.
MULTI_GGUF = "TheOrg/multi-GGUF"  # Q3_K_M < Q5_K_M < Q8_0, and no Q4_K_M
BOTH_WEIGHTS = "TheOrg/both-weights"  # model.safetensors AND a pytorch_model.bin pickle
OFFLINE = "http://127.0.0.1:1"
# Catalogue repos (src/kaiyuan/store/catalog.toml), served by the stand-in with tiny files.
QWEN05_REPO = "Qwen/Qwen2.5-0.5B-Instruct-GGUF"  # qwen2.5-0.5b-instruct
QWEN3_8B_REPO = "unsloth/Qwen3-8B-GGUF"  # qwen3-8b
R1_7B_REPO = "unsloth/DeepSeek-R1-Distill-Qwen-7B-GGUF"  # deepseek-r1-distill-qwen-7b
WAN_REPO = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"  # wan2.1-t2v-1.3b
GIB = 2**30
TOKEN = "hf_kaiyuanTestToken0123456789"
KAIYUAN = Path(sys.executable).with_name("kaiyuan")


# --------------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    make_hub_tree(root)
    multi = root / MULTI_GGUF
    for label, n_vocab in (("Q3_K_M", 32), ("Q5_K_M", 64), ("Q8_0", 128)):
        write_tiny_gguf(
            multi / f"multi-{label}.gguf", name="multi", file_type=label, n_vocab=n_vocab
        )
    both = root / BOTH_WEIGHTS
    write_tiny_hf_model(both)
    (both / "pytorch_model.bin").write_bytes(pickle.dumps({"w": [0.0] * 8}, protocol=2))
    write_readme(both, {"license": "mit"})
    for repo, stem in (
        (QWEN05_REPO, "qwen2.5-0.5b-instruct-{}.gguf"),
        (QWEN3_8B_REPO, "Qwen3-8B-{}.gguf"),
        (R1_7B_REPO, "DeepSeek-R1-Distill-Qwen-7B-{}.gguf"),
    ):
        for label, n_vocab in (("Q4_K_M", 32), ("Q8_0", 64)):
            name = stem.format(label.lower() if stem.islower() else label)
            write_tiny_gguf(root / repo / name, file_type=label, n_vocab=n_vocab)
    shutil.copytree(root / TINY_DIFFUSERS, root / WAN_REPO)
    return root


@pytest.fixture(scope="module")
def hub_server(hub_root: Path) -> Iterator[HubServer]:
    with HubServer(hub_root) as server:
        yield server


@pytest.fixture
def hub(hub_server: HubServer) -> HubServer:
    """The module's hub stand-in with its knobs reset and an empty request log."""
    hub_server.corrupt = set()
    hub_server.cut_after = {}
    hub_server.delay = 0.0
    hub_server.clear_log()
    return hub_server


@pytest.fixture(scope="module")
def bundled_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store's cache of the bundled model's record, computed once for the module.

    A fresh home hashes the bundled GGUF (seconds) the first time the store is read; every
    test starts from a home that already has this cache, as any home does after first use.
    """
    seed = tmp_path_factory.mktemp("seed-home")
    bundled.records(seed)
    return seed / "cache"


@pytest.fixture
def home(tmp_path: Path, bundled_cache: Path) -> Path:
    """The store's home (the same folder conftest points KAIYUAN_HOME at)."""
    path = tmp_path / "kaiyuan-home"
    path.mkdir()
    if bundled_cache.is_dir():
        shutil.copytree(bundled_cache, path / "cache")
    return path


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any attempt to resolve or connect to anything but 127.0.0.1."""
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> Any:
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "localhost"):
            raise AssertionError(f"test tried to reach {address}")
        return real_connect(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("127.0.0.1", "localhost", None):
            raise AssertionError(f"test tried to resolve {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture(autouse=True)
def _sdk_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep both SDKs off the user's real caches, config and tokens."""
    import modelscope_hub.config

    for name in ("MODELSCOPE_ENDPOINT", "MODELSCOPE_DOMAIN", "MODELSCOPE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    # The user's Hugging Face variables (and the engines', which set HF_HUB_OFFLINE in-process
    # when a test before this one loaded a model) must not steer these pulls.
    for name in ("HF_ENDPOINT", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE",
                 "TRANSFORMERS_OFFLINE", "KAIYUAN_HF_TOKEN", "KAIYUAN_HF_HUB_OFFLINE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("KAIYUAN_MEMORY_BUDGET", raising=False)
    monkeypatch.setenv("MODELSCOPE_HOME", str(tmp_path / "sdk" / "ms-home"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "sdk" / "ms-cache"))
    monkeypatch.setattr(modelscope_hub.config, "_default_config", None)


@pytest.fixture(autouse=True)
def _hub_sdk_online(monkeypatch: pytest.MonkeyPatch) -> None:
    """An embedding engine loaded earlier in this process (other test files) switches the
    Hugging Face SDK offline process-wide; these tests talk to the local hub stand-in."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def settings_for(home: Path, endpoint: str) -> Settings:
    return Settings(home=home, hf_endpoint=endpoint, ms_endpoint=endpoint, hub_timeout=5)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def installed(home: Path) -> set[str]:
    """Ids ``kaiyuan models`` lists from the store (bundled models excluded)."""
    return {r.id for r in Store(home).list() if not Path(r.path).is_absolute()}


def file_gets(hub: HubServer) -> list[Request]:
    """Every request that downloaded a repo file, on either hub's wire format."""
    return [
        r
        for r in hub.requests
        if r.method == "GET" and ("/resolve/" in r.path or "FilePath=" in r.path)
    ]


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def tree(folder: Path) -> list[tuple[str, int]]:
    """Every entry under ``folder`` with its size (0 for folders)."""
    return sorted(
        (p.relative_to(folder).as_posix(), p.stat().st_size if p.is_file() else 0)
        for p in folder.rglob("*")
    )


def small_http_chunks(monkeypatch: pytest.MonkeyPatch, size: int = 1024) -> None:
    """Make resumable_get see (and report) a body in ``size``-byte pieces instead of 1 MiB."""
    original = httpx.Response.iter_bytes

    def iter_bytes(self: httpx.Response, chunk_size: int | None = None) -> Iterator[bytes]:
        return original(self, size)

    monkeypatch.setattr(httpx.Response, "iter_bytes", iter_bytes)


def assert_clean_failure(home: Path) -> None:
    """A failed pull lists nothing and leaves no half-installed model."""
    assert installed(home) == set()
    models = home / "models"
    leftovers = [p.name for p in models.iterdir()] if models.exists() else []
    assert leftovers == [], leftovers


# --------------------------------------------------------------------------------------------
# GGUF: quantisation choice and the installed record
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", HUBS)
def test_gguf_default_pulls_q4_k_m_with_full_record(
    scheme: str, hub: HubServer, hub_root: Path, home: Path
) -> None:
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    record = pull(f"{scheme}:{TINY_GGUF}", settings=settings_for(home, hub.url))

    original = hub_root / TINY_GGUF / Q4
    assert record.id == "tiny-q4_k_m"
    assert record.format == "gguf"
    assert record.quantisation == "Q4_K_M"
    assert record.context_length == 4096
    assert record.architecture == "llama"
    assert record.size_bytes == original.stat().st_size
    assert record.sha256 == sha256(original)
    assert record.licence == "apache-2.0"
    assert record.source == f"{scheme}:{TINY_GGUF}@{hub.commit(TINY_GGUF)}"
    assert record.publisher == "TheOrg"
    assert record.origin is None
    added = datetime.datetime.fromisoformat(record.added)
    assert before <= added <= datetime.datetime.now(datetime.UTC)
    assert "chat" in record.capabilities

    # The store lists it, with the record on disk equal to what pull returned.
    listed = {r.id: r for r in Store(home).list()}
    assert listed["tiny-q4_k_m"] == record
    assert installed(home) == {"tiny-q4_k_m"}
    model_dir = home / "models" / "tiny-q4_k_m"
    assert ModelRecord.load(model_dir / "record.json") == record
    assert files_under(model_dir / "files") == [model_dir / "files" / Q4]
    assert (model_dir / "files" / Q4).read_bytes() == original.read_bytes()
    assert Store(home).weights(record) == model_dir / "files" / Q4

    # Only the chosen file was fetched, and the download area was emptied by the install.
    assert len(hub.file_requests(Q4_PATH)) == 1
    assert hub.file_requests(Q8_PATH) == []
    assert files_under(home / "downloads") == []


@pytest.mark.parametrize("pattern", ["Q8_0", "q8_0", "*Q8*", "tiny-Q8_0.gguf"])
@pytest.mark.parametrize("scheme", HUBS)
def test_gguf_pattern_chooses_quantisation(
    scheme: str, pattern: str, hub: HubServer, hub_root: Path, home: Path
) -> None:
    record = pull(f"{scheme}:{TINY_GGUF}:{pattern}", settings=settings_for(home, hub.url))

    assert record.id == "tiny-q8_0"
    assert record.quantisation == "Q8_0"
    assert record.context_length == 8192
    assert record.sha256 == sha256(hub_root / TINY_GGUF / Q8)
    assert installed(home) == {"tiny-q8_0"}
    assert hub.file_requests(Q4_PATH) == []
    assert len(hub.file_requests(Q8_PATH)) == 1


@pytest.mark.parametrize("pattern", ["Q5_K_M", "*Q2*"])
@pytest.mark.parametrize("scheme", HUBS)
def test_gguf_pattern_matching_nothing_lists_available(
    scheme: str, pattern: str, hub: HubServer, home: Path
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        pull(f"{scheme}:{TINY_GGUF}:{pattern}", settings=settings_for(home, hub.url))

    message = caught.value.message
    assert pattern in message
    assert "available: Q4_K_M, Q8_0" in message
    assert file_gets(hub) == []
    assert_clean_failure(home)


@pytest.mark.parametrize(
    ("repo", "memory", "expected"),
    [
        # the default quantisation wins whenever it fits
        (TINY_GGUF, 10**9, "Q4_K_M"),
        # only the smaller file fits (its size x 1.2 <= memory)
        (TINY_GGUF, 6000, "Q4_K_M"),
        # no Q4_K_M in the repo: the largest that fits
        (MULTI_GGUF, 10**9, "Q8_0"),
        (MULTI_GGUF, "Q5_K_M", "Q5_K_M"),
        (MULTI_GGUF, "Q3_K_M", "Q3_K_M"),
    ],
)
@pytest.mark.parametrize("scheme", HUBS)
def test_memory_budget_chooses_what_fits(
    scheme: str,
    repo: str,
    memory: int | str,
    expected: str,
    hub: HubServer,
    hub_root: Path,
    home: Path,
) -> None:
    if isinstance(memory, str):  # just over 1.2 x that file's size: it fits, the next does not
        size = (hub_root / repo / f"multi-{memory}.gguf").stat().st_size
        memory = size * 12 // 10 + 1
    record = pull(f"{scheme}:{repo}", settings=settings_for(home, hub.url), memory=memory)

    assert record.quantisation == expected
    prefix = "tiny" if repo == TINY_GGUF else "multi"
    assert record.id == f"{prefix}-{expected.lower()}"
    assert len(hub.file_requests(f"{repo}/{prefix}-{expected}.gguf")) == 1
    assert len(file_gets(hub)) == 1  # nothing else was downloaded


def test_memory_budget_fixture_sizes_are_ordered(hub_root: Path) -> None:
    """The memory cases above rely on Q3_K_M < Q5_K_M < Q8_0 with gaps over 20%."""
    sizes = [
        (hub_root / MULTI_GGUF / f"multi-{q}.gguf").stat().st_size
        for q in ("Q3_K_M", "Q5_K_M", "Q8_0")
    ]
    assert sizes[0] * 1.2 < sizes[1] and sizes[1] * 1.2 < sizes[2]
    q4, q8 = ((hub_root / TINY_GGUF / n).stat().st_size for n in (Q4, Q8))
    assert q4 * 1.2 <= 6000 < q8 * 1.2


@pytest.mark.parametrize(
    ("repo", "memory", "smallest"),
    [(TINY_GGUF, 5000, "Q4_K_M"), (MULTI_GGUF, 100, "Q3_K_M")],
)
@pytest.mark.parametrize("scheme", HUBS)
def test_memory_below_every_quantisation_names_the_smallest(
    scheme: str, repo: str, memory: int, smallest: str, hub: HubServer, home: Path
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        pull(f"{scheme}:{repo}", settings=settings_for(home, hub.url), memory=memory)

    message = caught.value.message
    assert "no quantisation" in message and "fits" in message
    assert f"the smallest, {smallest}," in message
    assert ":PATTERN" in message
    assert file_gets(hub) == []
    assert_clean_failure(home)


# --------------------------------------------------------------------------------------------
# safetensors / diffusers snapshots, pickle weights and custom code
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", HUBS)
def test_safetensors_repo_pulls_a_snapshot(
    scheme: str, hub: HubServer, hub_root: Path, home: Path
) -> None:
    record = pull(f"{scheme}:{TINY_MODEL}", settings=settings_for(home, hub.url))

    assert record.id == "tiny-model"
    assert record.format == "safetensors"
    assert record.architecture == "Qwen2ForCausalLM"
    assert record.licence == "mit"
    assert record.source == f"{scheme}:{TINY_MODEL}@{hub.commit(TINY_MODEL)}"
    files = home / "models" / "tiny-model" / "files"
    got = {p.relative_to(files).as_posix() for p in files_under(files)}
    hub_files = {
        p.relative_to(hub_root / TINY_MODEL).as_posix() for p in files_under(hub_root / TINY_MODEL)
    }
    assert got == hub_files
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"} <= got
    assert set(record.files) == got
    for rel, digest in record.files.items():
        assert digest == sha256(hub_root / TINY_MODEL / rel), rel
    assert record.sha256 == manifest_digest(record.files)
    assert record.size_bytes == sum(p.stat().st_size for p in files_under(files))
    assert Store(home).weights(record) == files
    assert installed(home) == {"tiny-model"}


@pytest.mark.parametrize("scheme", HUBS)
def test_safetensors_repo_skips_pickle_weights(scheme: str, hub: HubServer, home: Path) -> None:
    record = pull(f"{scheme}:{BOTH_WEIGHTS}", settings=settings_for(home, hub.url))

    assert record.format == "safetensors"
    files = home / "models" / record.id / "files"
    names = [p.name for p in files_under(files)]
    assert "model.safetensors" in names
    assert not [n for n in names if n.lower().endswith(PICKLE_SUFFIXES)]
    assert hub.file_requests(f"{BOTH_WEIGHTS}/pytorch_model.bin") == []


@pytest.mark.parametrize("scheme", HUBS)
def test_pickle_only_repo_is_refused(scheme: str, hub: HubServer, home: Path) -> None:
    with pytest.raises(InvalidModel) as caught:
        pull(f"{scheme}:{PICKLE_MODEL}", settings=settings_for(home, hub.url))

    assert "pickle" in caught.value.message
    assert "--allow-pickle" in caught.value.message
    assert file_gets(hub) == []
    assert_clean_failure(home)


@pytest.mark.parametrize("scheme", HUBS)
def test_pickle_only_repo_with_allow_pickle_is_still_not_a_model(
    scheme: str, hub: HubServer, home: Path
) -> None:
    # TheOrg/pickle-model holds just pytorch_model.bin: no config.json, so even with the
    # opt-in there is nothing kaiyuan could serve, and it says so before downloading.
    with pytest.raises(InvalidModel) as caught:
        pull(f"{scheme}:{PICKLE_MODEL}", settings=settings_for(home, hub.url), allow_pickle=True)

    assert "config.json" in caught.value.message
    assert "not a model kaiyuan can serve" in caught.value.message
    assert file_gets(hub) == []
    assert_clean_failure(home)


@pytest.mark.parametrize("scheme", HUBS)
def test_custom_code_repo_is_refused(scheme: str, hub: HubServer, home: Path) -> None:
    with pytest.raises(InvalidModel) as caught:
        pull(f"{scheme}:{CUSTOM_CODE}", settings=settings_for(home, hub.url))

    assert "modeling_custom.py" in caught.value.message
    assert "--trust-remote-code" in caught.value.message
    assert file_gets(hub) == []
    assert_clean_failure(home)


@pytest.mark.parametrize("scheme", HUBS)
def test_custom_code_repo_without_weights_fails_install_cleanly(
    scheme: str, hub: HubServer, home: Path
) -> None:
    # With --trust-remote-code the code is fetched, but the repo has no weights: the install's
    # validation refuses it and nothing is left in the store.
    with pytest.raises(InvalidModel) as caught:
        pull(
            f"{scheme}:{CUSTOM_CODE}", settings=settings_for(home, hub.url), trust_remote_code=True
        )

    assert "no weights" in caught.value.message
    assert_clean_failure(home)


@pytest.mark.parametrize("scheme", HUBS)
def test_diffusers_repo_pulls_as_diffusers(
    scheme: str, hub: HubServer, hub_root: Path, home: Path
) -> None:
    record = pull(f"{scheme}:{TINY_DIFFUSERS}", settings=settings_for(home, hub.url))

    assert record.id == "tiny-diffusers"
    assert record.format == "diffusers"
    assert record.architecture == "StableDiffusionPipeline"
    assert record.licence == "openrail"
    assert "image" in record.capabilities
    files = home / "models" / "tiny-diffusers" / "files"
    assert (files / "model_index.json").is_file()
    assert (files / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == (
        hub_root / TINY_DIFFUSERS / "unet" / "diffusion_pytorch_model.safetensors"
    ).read_bytes()
    assert record.sha256 == manifest_digest(record.files)
    assert installed(home) == {"tiny-diffusers"}


# --------------------------------------------------------------------------------------------
# interruptions, dropped connections, bad digests
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["hf", pytest.param("ms", marks=pytest.mark.slow)])
def test_interrupted_pull_keeps_partial_file_and_resumes(
    scheme: str,
    hub: HubServer,
    hub_root: Path,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = hub_root / TINY_GGUF / Q4
    total = original.stat().st_size
    seen: list[int] = []

    if scheme == "hf":
        # resumable_get reports progress after each chunk it writes: make the chunks small so
        # the file arrives in several pieces, and stop (like Ctrl-C) after the first one.
        small_http_chunks(monkeypatch)

        def on_progress(path: str, done: int, size: int) -> None:
            if 0 < done < size:
                seen.append(done)
                raise KeyboardInterrupt

    else:
        # The ModelScope SDK downloads in the main thread while a watcher thread reports the
        # size of <file>.incomplete. Drop the connection after 1000 bytes and slow the hub down
        # so the SDK's ranged retry is in flight when the watcher sees the partial file; then
        # interrupt the main thread as Ctrl-C would.
        hub.cut_after = {Q4_PATH: 1000}
        hub.delay = 2.0  # long enough for the watcher to see it on a busy machine

        def on_progress(path: str, done: int, size: int) -> None:
            if 0 < done < size and not seen:
                seen.append(done)
                _thread.interrupt_main()

    settings = settings_for(home, hub.url)
    # interrupt_main() runs whatever SIGINT handler is installed: make it Python's own, whatever
    # an earlier test in this process left there.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            pull(f"{scheme}:{TINY_GGUF}", settings=settings, on_progress=on_progress)
    finally:
        signal.signal(signal.SIGINT, previous)

    assert seen, "the download was never seen in progress"
    assert_clean_failure(home)
    partials = files_under(home / "downloads")
    assert [p.name for p in partials] == [Q4 + PARTIAL_SUFFIX[scheme]]
    have = partials[0].stat().st_size
    assert 0 < have < total
    assert partials[0].read_bytes() == original.read_bytes()[:have]

    hub.delay = 0
    hub.clear_log()
    record = pull(f"{scheme}:{TINY_GGUF}", settings=settings)

    assert record.sha256 == sha256(original)
    assert installed(home) == {"tiny-q4_k_m"}
    assert [r.range for r in hub.file_requests(Q4_PATH)] == [f"bytes={have}-"]
    assert files_under(home / "downloads") == []


@pytest.mark.parametrize(("scheme", "small_chunks"), [("hf", False), ("hf", True), ("ms", False)])
def test_dropped_connection_is_retried_within_the_call(
    scheme: str,
    small_chunks: bool,
    hub: HubServer,
    hub_root: Path,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if small_chunks:
        small_http_chunks(monkeypatch)
    hub.cut_after = {Q4_PATH: 3000}
    record = pull(f"{scheme}:{TINY_GGUF}", settings=settings_for(home, hub.url))

    assert record.sha256 == sha256(hub_root / TINY_GGUF / Q4)
    assert installed(home) == {"tiny-q4_k_m"}
    gets = hub.file_requests(Q4_PATH)
    assert len(gets) == 2, gets
    assert gets[0].range is None
    if scheme == "ms":
        assert gets[1].range == "bytes=3000-"
    elif small_chunks:
        # the bytes written before the drop are kept and the rest is asked for with Range
        match = re.fullmatch(r"bytes=(\d+)-", gets[1].range or "")
        assert match and 0 < int(match[1]) <= 3000, gets[1]
    # (with resumable_get's 1 MiB chunks a drop inside the first MiB restarts from byte 0)


@pytest.mark.parametrize("scheme", HUBS)
def test_corrupt_download_is_rejected_and_retry_succeeds(
    scheme: str,
    hub: HubServer,
    hub_root: Path,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import modelscope_hub._download

    # The ModelScope SDK retries a bad digest with 1 s, 2 s back-off; don't sleep through it.
    monkeypatch.setattr(modelscope_hub._download, "DOWNLOAD_INTEGRITY_RETRY_BACKOFF", 0.0)
    hub.corrupt = {Q4_PATH}
    settings = settings_for(home, hub.url)

    with pytest.raises(DigestMismatch) as caught:
        pull(f"{scheme}:{TINY_GGUF}", settings=settings)

    assert Q4 in caught.value.message
    assert "run the command again" in caught.value.message
    assert hub.file_requests(Q4_PATH)
    assert_clean_failure(home)
    # the bad bytes are gone: neither a finished nor a partial copy is kept anywhere
    assert [p for p in files_under(home) if p.name.startswith(Q4)] == []

    hub.corrupt = set()
    record = pull(f"{scheme}:{TINY_GGUF}", settings=settings)
    assert record.sha256 == sha256(hub_root / TINY_GGUF / Q4)
    assert installed(home) == {"tiny-q4_k_m"}


# --------------------------------------------------------------------------------------------
# refusals before any download
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "name"),
    [
        ("hf:../x", None),
        ("ms:../x", None),
        ("hf:TheOrg/../../etc", None),
        ("ms:TheOrg/../../etc", None),
        ("hf:TheOrg/..", None),
        ("hf:/etc/passwd", None),
        ("file:TheOrg/tiny-GGUF", None),
        ("TheOrg/tiny-GGUF", None),
        (f"hf:{TINY_GGUF}", "../evil"),
        (f"ms:{TINY_GGUF}", "../evil"),
        (f"hf:{TINY_GGUF}", "/abs"),
        (f"hf:{TINY_GGUF}", "A/B"),
        (f"hf:{TINY_GGUF}", "a/b"),
        (f"hf:{TINY_GGUF}", ".."),
        (f"hf:{TINY_GGUF}", "Upper"),
    ],
)
def test_bad_refs_and_names_are_refused_before_anything_happens(
    ref: str, name: str | None, hub: HubServer, home: Path, tmp_path: Path
) -> None:
    abs_existed = Path("/abs").exists()
    before = tree(tmp_path)

    with pytest.raises(InvalidRequest) as caught:
        pull(ref, settings=settings_for(home, hub.url), name=name)

    assert "invalid" in caught.value.message or "not a hub reference" in caught.value.message
    assert hub.requests == []  # refused before the hub is asked anything
    assert tree(tmp_path) == before  # nothing written in or beside the home
    assert Path("/abs").exists() == abs_existed


@pytest.mark.parametrize("scheme", HUBS)
def test_not_enough_space_is_reported_before_downloading(
    scheme: str, hub: HubServer, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[Path] = []

    def tiny_disk(path: Path) -> int:
        asked.append(path)
        return 1024

    monkeypatch.setattr("kaiyuan.store.pull.free_space", tiny_disk)
    with pytest.raises(NotEnoughSpace) as caught:
        pull(f"{scheme}:{TINY_GGUF}", settings=settings_for(home, hub.url))

    assert "not enough disk space" in caught.value.message
    assert caught.value.code == "not_enough_disk_space"
    assert asked and all(p.is_relative_to(home / "downloads") for p in asked)
    assert hub.requests, "the hub's listing is read first"
    assert file_gets(hub) == []
    assert_clean_failure(home)


@pytest.mark.parametrize("scheme", [pytest.param("hf"), pytest.param("ms", marks=pytest.mark.slow)])
def test_offline_hub_is_unreachable_with_import_hint(scheme: str, home: Path) -> None:
    start = time.monotonic()
    with pytest.raises(HubUnreachable) as caught:
        pull(f"{scheme}:{TINY_GGUF}", settings=settings_for(home, OFFLINE))
    elapsed = time.monotonic() - start

    message = caught.value.message
    assert message.startswith(f"cannot reach {HUB_NAMES[scheme]} at {OFFLINE}")
    assert "offline" in message
    assert "kaiyuan import" in message
    assert elapsed < 60
    assert_clean_failure(home)


@pytest.mark.parametrize("repo", ["TheOrg/no-such-repo", "NoSuchOrg/tiny-GGUF"])
@pytest.mark.parametrize("scheme", HUBS)
def test_unknown_repo_is_model_not_found(
    scheme: str, repo: str, hub: HubServer, home: Path
) -> None:
    with pytest.raises(ModelNotFound) as caught:
        pull(f"{scheme}:{repo}", settings=settings_for(home, hub.url))

    assert repo in caught.value.message
    assert HUB_NAMES[scheme] in caught.value.message
    assert file_gets(hub) == []
    assert_clean_failure(home)


@pytest.mark.parametrize("scheme", HUBS)
def test_pulling_the_same_model_twice_says_it_exists(
    scheme: str, hub: HubServer, home: Path
) -> None:
    settings = settings_for(home, hub.url)
    first = pull(f"{scheme}:{TINY_GGUF}", settings=settings)
    hub.clear_log()

    with pytest.raises(InvalidRequest) as caught:
        pull(f"{scheme}:{TINY_GGUF}", settings=settings)

    assert "'tiny-q4_k_m' already exists" in caught.value.message
    assert "--name" in caught.value.message
    assert file_gets(hub) == []
    assert Store(home).get("tiny-q4_k_m") == first

    # --name is the way out
    copy = pull(f"{scheme}:{TINY_GGUF}", settings=settings, name="tiny-copy")
    assert copy.id == "tiny-copy" and copy.sha256 == first.sha256
    assert installed(home) == {"tiny-q4_k_m", "tiny-copy"}


# --------------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------------


def run_cli(
    home: Path, endpoint: str, tmp_path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    for name in ("KAIYUAN_CONFIG", "KAIYUAN_MEMORY_BUDGET", "MODELSCOPE_ENDPOINT", "HF_ENDPOINT"):
        env.pop(name, None)
    env |= {
        "KAIYUAN_HOME": str(home),
        "KAIYUAN_HF_ENDPOINT": endpoint,
        "KAIYUAN_MS_ENDPOINT": endpoint,
        "KAIYUAN_HUB_TIMEOUT": "30",  # a busy CI machine must not read as offline
        "MODELSCOPE_HOME": str(tmp_path / "sdk" / "ms-home"),
        "MODELSCOPE_CACHE": str(tmp_path / "sdk" / "ms-cache"),
        "HF_HOME": str(tmp_path / "sdk" / "hf-home"),
    }
    return subprocess.run(
        [str(KAIYUAN), "pull", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("scheme", HUBS)
def test_cli_pull_succeeds(scheme: str, hub: HubServer, home: Path, tmp_path: Path) -> None:
    result = run_cli(home, hub.url, tmp_path, f"{scheme}:{TINY_GGUF}:Q8_0")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pulled tiny-q8_0: gguf, Q8_0"), result.stdout
    assert f"from {scheme}:{TINY_GGUF}@{hub.commit(TINY_GGUF)}" in result.stdout
    assert "Traceback" not in result.stderr
    assert installed(home) == {"tiny-q8_0"}


@pytest.mark.slow
@pytest.mark.parametrize("scheme", HUBS)
def test_cli_offline_prints_one_error_line(scheme: str, home: Path, tmp_path: Path) -> None:
    result = run_cli(home, OFFLINE, tmp_path, f"{scheme}:{TINY_GGUF}")

    assert result.returncode == 1
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: cannot reach {HUB_NAMES[scheme]}")
    assert "kaiyuan import" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""
    assert installed(home) == set()


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [[f"hf:{TINY_GGUF}", "--name", "../evil"], [f"ms:{TINY_GGUF}", "--name", "A/B"], ["hf:../x"]],
)
def test_cli_bad_name_prints_one_error_line(
    args: list[str], hub: HubServer, home: Path, tmp_path: Path
) -> None:
    result = run_cli(home, hub.url, tmp_path, *args)

    assert result.returncode == 1
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: invalid ")
    assert "Traceback" not in result.stderr
    assert hub.requests == []
    assert not (tmp_path / "evil").exists() and not (home / "evil").exists()


# --------------------------------------------------------------------------------------------
# pulling by name: catalogue ids and Ollama-style family:size
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "model_id", "repo"),
    [
        ("qwen2.5-0.5b-instruct", "qwen2.5-0.5b-instruct", QWEN05_REPO),
        ("qwen2.5:0.5b", "qwen2.5-0.5b-instruct", QWEN05_REPO),
        ("qwen3:8b", "qwen3-8b", QWEN3_8B_REPO),
        ("deepseek-r1:7b", "deepseek-r1-distill-qwen-7b", R1_7B_REPO),
    ],
)
def test_catalogue_names_pull_the_catalogue_repo(
    name: str, model_id: str, repo: str, hub: HubServer, home: Path
) -> None:
    record = pull(name, settings=settings_for(home, hub.url), memory=16 * GIB)

    assert record.id == model_id  # installed under its catalogue id, ready for `-m model_id`
    assert record.source == f"hf:{repo}@{hub.commit(repo)}"
    # The catalogue's quantisation for 16 GiB is Q8_0 for all three, where pull's own rule
    # for a bare repo would take Q4_K_M.
    assert record.quantisation == "Q8_0"
    fetched = [r.path.rsplit("/", 1)[-1] for r in file_gets(hub)]
    assert len(fetched) == 1 and "q8_0" in fetched[0].lower(), fetched
    assert record.publisher == catalog.by_id(model_id).publisher  # type: ignore[union-attr]
    assert installed(home) == {model_id}


@pytest.mark.parametrize(("gib", "quant"), [(8, "Q4_K_M"), (16, "Q8_0")])
def test_the_quantisation_follows_this_machines_memory(
    gib: int, quant: str, hub: HubServer, home: Path
) -> None:
    entry = catalog.by_id("qwen3-8b")
    assert entry is not None and entry.quant_for(gib * GIB) == quant

    record = pull("qwen3:8b", settings=settings_for(home, hub.url), memory=gib * GIB)

    assert record.quantisation == quant
    assert len(hub.file_requests(f"{QWEN3_8B_REPO}/Qwen3-8B-{quant}.gguf")) == 1


def test_a_quantisation_named_after_the_model_wins(hub: HubServer, home: Path) -> None:
    settings = settings_for(home, hub.url)
    record = pull("qwen3-8b:Q4_K_M", settings=settings, memory=64 * GIB)
    assert (record.id, record.quantisation) == ("qwen3-8b", "Q4_K_M")

    record = pull("qwen2.5:0.5b-instruct-q4_K_M", settings=settings, name="ollama-tag")
    assert record.quantisation == "Q4_K_M"


def test_hub_ms_pulls_a_catalogue_model_from_modelscope(hub: HubServer, home: Path) -> None:
    record = pull("qwen2.5:0.5b", settings=settings_for(home, hub.url), hub_scheme="ms")

    assert record.source == f"ms:{QWEN05_REPO}@{hub.commit(QWEN05_REPO)}"
    assert all("FilePath=" in r.path for r in file_gets(hub))  # ModelScope's wire format


def test_a_model_only_on_modelscope_comes_from_modelscope(
    hub: HubServer, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ms_only = CatalogModel(
        id="tiny-ms-only", family="tiny", title="Tiny", publisher="The Org", origin="CN",
        licence="Apache-2.0", capabilities=("chat",), format="gguf", params_b=0.001,
        ms=TINY_GGUF, gguf_sizes={"Q4_K_M": 0.001, "Q8_0": 0.002},
    )  # fmt: skip
    real = catalog.models()
    monkeypatch.setattr(catalog, "models", lambda: (*real, ms_only))
    settings = settings_for(home, hub.url)

    record = pull("tiny-ms-only", settings=settings)
    assert record.source.startswith(f"ms:{TINY_GGUF}@")
    assert (record.publisher, record.origin) == ("The Org", "CN")

    hub.clear_log()
    with pytest.raises(InvalidRequest) as caught:
        pull("tiny-ms-only", settings=settings, hub_scheme="hf", name="again")
    assert "no Hugging Face repo for 'tiny-ms-only'" in caught.value.message
    assert hub.requests == []


def test_unknown_names_get_close_catalogue_ids(hub: HubServer, home: Path) -> None:
    settings = settings_for(home, hub.url)
    with pytest.raises(InvalidRequest) as caught:
        pull("qwen2.5-0.5b-instruc", settings=settings)
    message = caught.value.message
    assert message.startswith("unknown model 'qwen2.5-0.5b-instruc'; did you mean ")
    assert "qwen2.5-0.5b-instruct" in message.split("?")[0]
    assert "hf:ORG/REPO" in message  # what names look like

    with pytest.raises(InvalidRequest) as caught:
        pull("qwen3:9b", settings=settings)
    assert "qwen3:8b" in caught.value.message and "qwen3:14b" in caught.value.message

    with pytest.raises(InvalidRequest) as caught:
        pull("qwen3", settings=settings)
    assert "model family" in caught.value.message and "qwen3:0.6b" in caught.value.message

    assert hub.requests == []  # a bad name never reaches the hub
    assert_clean_failure(home)


def test_pulling_an_installed_name_again_asks_nothing_of_the_hub(
    hub: HubServer, home: Path
) -> None:
    settings = settings_for(home, hub.url)
    pull("qwen2.5:0.5b", settings=settings)
    hub.clear_log()

    with pytest.raises(InvalidRequest) as caught:
        pull("qwen2.5-0.5b-instruct", settings=settings)

    assert "'qwen2.5-0.5b-instruct' already exists" in caught.value.message
    assert hub.requests == []


def test_a_diffusers_pipeline_by_name_is_installed_under_its_id(hub: HubServer, home: Path) -> None:
    record = pull("wan2.1-t2v-1.3b", settings=settings_for(home, hub.url))
    assert (record.id, record.format) == ("wan2.1-t2v-1.3b", "diffusers")
    assert record.source.startswith(f"hf:{WAN_REPO}@")


def test_an_unreachable_hub_suggests_the_other_hub_for_a_name(home: Path) -> None:
    with pytest.raises(HubUnreachable) as caught:
        pull("qwen2.5:0.5b", settings=settings_for(home, OFFLINE))
    message = caught.value.message
    assert message.startswith(f"cannot reach Hugging Face at {OFFLINE}")
    assert "`kaiyuan pull qwen2.5:0.5b --hub ms`" in message
    assert "HF_ENDPOINT" in message and "kaiyuan import" in message


# --------------------------------------------------------------------------------------------
# the hubs' own environment variables
# --------------------------------------------------------------------------------------------


@pytest.fixture
def hub_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (
        "KAIYUAN_HF_ENDPOINT", "HF_ENDPOINT", "KAIYUAN_MS_ENDPOINT", "KAIYUAN_HF_TOKEN",
        "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "KAIYUAN_HF_HUB_OFFLINE", "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_hf_endpoint_is_read_after_kaiyuans_own_variable(hub_env: pytest.MonkeyPatch) -> None:
    assert Settings().hf_endpoint == "https://huggingface.co"
    hub_env.setenv("HF_ENDPOINT", "https://hf-mirror.example")
    assert Settings().hf_endpoint == "https://hf-mirror.example"
    hub_env.setenv("KAIYUAN_HF_ENDPOINT", "http://127.0.0.1:9")
    assert Settings().hf_endpoint == "http://127.0.0.1:9"
    assert Settings(hf_endpoint="http://flag").hf_endpoint == "http://flag"  # a flag wins


def test_modelscope_endpoint_variables(hub_env: pytest.MonkeyPatch) -> None:
    assert Settings().ms_endpoint == "https://www.modelscope.cn"
    hub_env.setenv("MODELSCOPE_DOMAIN", "www.modelscope.ai")  # deprecated, a bare host
    assert Settings().ms_endpoint == "https://www.modelscope.ai"
    hub_env.setenv("MODELSCOPE_ENDPOINT", "http://ms.example")
    assert Settings().ms_endpoint == "http://ms.example"
    hub_env.setenv("KAIYUAN_MS_ENDPOINT", "http://127.0.0.1:9")
    assert Settings().ms_endpoint == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("value", "offline"),
    [("1", True), ("true", True), ("ON", True), ("0", False), ("", False), ("no", False)],
)
def test_hf_hub_offline_reads_as_huggingface_hub_does(
    value: str, offline: bool, hub_env: pytest.MonkeyPatch
) -> None:
    hub_env.setenv("HF_HUB_OFFLINE", value)
    assert Settings().hf_hub_offline is offline


def test_hf_hub_offline_fails_a_hugging_face_pull_at_once(
    hub: HubServer, home: Path, hub_env: pytest.MonkeyPatch
) -> None:
    hub_env.setenv("HF_HUB_OFFLINE", "1")
    settings = settings_for(home, hub.url)
    for ref in (f"hf:{TINY_GGUF}", "qwen2.5:0.5b"):
        with pytest.raises(HubUnreachable) as caught:
            pull(ref, settings=settings)
        assert caught.value.code == "hub_offline"
        assert "HF_HUB_OFFLINE" in caught.value.message
    assert "--hub ms" in caught.value.message  # the name has a ModelScope repo
    assert hub.requests == []  # not one request
    assert_clean_failure(home)

    # ModelScope is another hub: HF_HUB_OFFLINE does not stop it.
    record = pull("qwen2.5:0.5b", settings=settings, hub_scheme="ms")
    assert record.source.startswith("ms:")


def test_hf_token_is_sent_to_hugging_face_only(
    hub: HubServer, home: Path, hub_env: pytest.MonkeyPatch
) -> None:
    hub_env.setenv("HF_TOKEN", TOKEN)
    settings = settings_for(home, hub.url)
    assert TOKEN not in repr(settings) and TOKEN not in str(settings.model_dump())

    record = pull(f"hf:{TINY_GGUF}", settings=settings)
    sent = {r.authorization for r in hub.requests}
    assert sent == {f"Bearer {TOKEN}"}, sent  # metadata and downloads alike
    assert TOKEN not in record.to_json()

    hub.clear_log()
    pull(f"ms:{TINY_GGUF}", settings=settings, name="from-ms")
    assert all(TOKEN not in (r.authorization or "") for r in hub.requests)


def test_no_token_is_sent_without_hf_token(
    hub: HubServer, home: Path, hub_env: pytest.MonkeyPatch
) -> None:
    pull(f"hf:{TINY_GGUF}", settings=settings_for(home, hub.url))
    assert {r.authorization for r in hub.requests} == {None}


def run_cli_env(
    home: Path, tmp_path: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """`kaiyuan pull ARGS` with only the hub variables given in ``env``."""
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("KAIYUAN_", "HF_", "MODELSCOPE_"))
    }
    base.pop("TRANSFORMERS_OFFLINE", None)
    base |= {
        "KAIYUAN_HOME": str(home),
        "KAIYUAN_HUB_TIMEOUT": "30",
        "MODELSCOPE_HOME": str(tmp_path / "sdk" / "ms-home"),
        "MODELSCOPE_CACHE": str(tmp_path / "sdk" / "ms-cache"),
        "HF_HOME": str(tmp_path / "sdk" / "hf-home"),
    } | env
    return subprocess.run(
        [str(KAIYUAN), "pull", *args], env=base, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_cli_pulls_by_name_through_hf_endpoint(hub: HubServer, home: Path, tmp_path: Path) -> None:
    result = run_cli_env(
        home, tmp_path, {"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN}, "qwen2.5:0.5b"
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pulled qwen2.5-0.5b-instruct: gguf, Q8_0"), result.stdout
    assert f"from hf:{QWEN05_REPO}@" in result.stdout
    assert TOKEN not in result.stdout + result.stderr  # sent, never shown
    # huggingface_hub's telemetry (a daily GET of /api/agent-harnesses) stays off.
    assert not any("agent-harnesses" in r.path for r in hub.requests)
    assert {r.authorization for r in hub.requests} == {f"Bearer {TOKEN}"}, hub.requests
    assert installed(home) == {"qwen2.5-0.5b-instruct"}


@pytest.mark.slow
def test_cli_hf_hub_offline_prints_one_line(hub: HubServer, home: Path, tmp_path: Path) -> None:
    result = run_cli_env(
        home, tmp_path, {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "1"}, "qwen3:8b"
    )

    assert result.returncode == 1
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: Hugging Face is off: HF_HUB_OFFLINE is set")
    assert "`kaiyuan pull qwen3:8b --hub ms`" in lines[0]
    assert hub.requests == []


@pytest.mark.slow
def test_cli_unknown_name_prints_did_you_mean(hub: HubServer, home: Path, tmp_path: Path) -> None:
    result = run_cli_env(home, tmp_path, {"HF_ENDPOINT": hub.url}, "qwen2.5-coder-7b")

    assert result.returncode == 1
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: unknown model 'qwen2.5-coder-7b'; did you mean ")
    assert "qwen2.5-coder-7b-instruct" in lines[0]
    assert hub.requests == []
