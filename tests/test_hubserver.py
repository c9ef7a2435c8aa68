"""The hub stand-in (tests/hubserver.py) driven by the REAL huggingface_hub and modelscope SDKs.

Only what kaiyuan's pull tests rely on: the tiny models parse, and the stand-in answers both
SDKs as the real hubs do (metadata, listings, error types, ranges, resumes, digests). How the
SDKs themselves give up on an unreachable endpoint is theirs to test, not kaiyuan's.
Everything talks to 127.0.0.1 only (enforced by a socket guard).
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import tinymodels
from tests.hubserver import HubServer, git_blob_sha1, hf_file_url
from tests.tinymodels import (
    CUSTOM_CODE,
    PICKLE_MODEL,
    TINY_DIFFUSERS,
    TINY_GGUF,
    TINY_MODEL,
    make_hub_tree,
)

pytest.importorskip("huggingface_hub")
pytest.importorskip("modelscope_hub")

Q4 = "tiny-Q4_K_M.gguf"
Q8 = "tiny-Q8_0.gguf"
SD_SUBSET = ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors"]


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    make_hub_tree(root)
    return root


@pytest.fixture
def hub(hub_root: Path) -> Iterator[HubServer]:
    with HubServer(hub_root) as server:
        yield server


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any attempt to resolve or connect to anything but 127.0.0.1."""
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
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
    monkeypatch.setenv("MODELSCOPE_HOME", str(tmp_path / "ms-home"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms-cache"))
    monkeypatch.setattr(modelscope_hub.config, "_default_config", None)


# --------------------------------------------------------------------------------------------
# tiny models
# --------------------------------------------------------------------------------------------


def test_tiny_gguf_is_valid(tmp_path: Path) -> None:
    from gguf import GGUFReader, LlamaFileType

    path = tinymodels.write_tiny_gguf(
        tmp_path / "m.gguf", arch="qwen2", name="Tiny", n_ctx=1234, file_type="Q4_K_M"
    )
    reader = GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items()}
    assert path.read_bytes()[:4] == tinymodels.GGUF_MAGIC
    assert fields["general.architecture"] == "qwen2"
    assert fields["general.name"] == "Tiny"
    assert fields["qwen2.context_length"] == 1234
    assert fields["general.file_type"] == LlamaFileType.MOSTLY_Q4_K_M
    assert fields["tokenizer.chat_template"] == tinymodels.CHATML_TEMPLATE
    assert {t.name for t in reader.tensors} >= {"token_embd.weight", "output_norm.weight"}


def test_broken_ggufs_are_rejected(tmp_path: Path) -> None:
    from gguf import GGUFReader

    truncated = tinymodels.write_truncated_gguf(tmp_path / "cut.gguf")
    assert truncated.read_bytes()[:4] == tinymodels.GGUF_MAGIC
    garbage = tinymodels.write_garbage(tmp_path / "junk.gguf")
    for path in (truncated, garbage):
        with pytest.raises((ValueError, IndexError, OSError)):
            GGUFReader(str(path))


def test_tiny_hf_model_and_pipeline(tmp_path: Path) -> None:
    folder = tinymodels.write_tiny_hf_model(tmp_path / "m", max_position_embeddings=777)
    sharded = tinymodels.write_tiny_hf_model(tmp_path / "s", shards=2)
    pipe = tinymodels.write_tiny_diffusers_pipeline(tmp_path / "p")

    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"]
    assert config["model_type"] == "qwen2"
    assert config["max_position_embeddings"] == 777
    assert "chat_template" in json.loads((folder / "tokenizer_config.json").read_text())
    header = tinymodels.read_safetensors_header(folder / "model.safetensors")
    assert header["model.embed_tokens.weight"]["shape"] == [config["vocab_size"], 16]
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    }
    assert json.loads((pipe / "model_index.json").read_text())["_class_name"] == (
        "StableDiffusionPipeline"
    )
    assert (pipe / "unet" / "diffusion_pytorch_model.safetensors").is_file()

    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert tok.encode("<|im_start|>hello world<|im_end|>").tokens[0] == "<|im_start|>"
    st = pytest.importorskip("safetensors.numpy")
    assert "lm_head.weight" in st.load_file(str(folder / "model.safetensors"))


# --------------------------------------------------------------------------------------------
# the stand-in itself
# --------------------------------------------------------------------------------------------


def test_ranges_and_errors_over_plain_http(hub: HubServer) -> None:
    import httpx

    url = hf_file_url(hub.url, TINY_GGUF, Q4)
    whole = (hub.root / TINY_GGUF / Q4).read_bytes()
    head = httpx.head(url)
    assert head.headers["x-repo-commit"] == hub.commit(TINY_GGUF)
    assert head.headers["x-linked-size"] == str(len(whole))
    assert head.headers["etag"] == f'"{hashlib.sha256(whole).hexdigest()}"'
    assert not any(k.lower().startswith("x-xet") for k in head.headers)
    part = httpx.get(url, headers={"Range": "bytes=100-"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-{len(whole) - 1}/{len(whole)}"
    assert part.content == whole[100:]
    assert httpx.get(url, headers={"Range": f"bytes={len(whole)}-"}).status_code == 416
    readme = httpx.head(hf_file_url(hub.url, TINY_GGUF, "README.md"))
    assert readme.headers["etag"].strip('"') == git_blob_sha1(
        (hub.root / TINY_GGUF / "README.md").read_bytes()
    )
    assert "x-linked-etag" not in readme.headers
    missing = httpx.get(hf_file_url(hub.url, "TheOrg/nope", Q4))
    assert (missing.status_code, missing.headers["x-error-code"]) == (404, "RepoNotFound")
    assert hub.requests[0][:3] == ("HEAD", f"/{TINY_GGUF}/resolve/main/{Q4}", None)
    assert hub.requests[1].range == "bytes=100-"
    hub.delay = 0.1
    start = time.perf_counter()
    httpx.head(url)
    assert time.perf_counter() - start >= 0.1


# --------------------------------------------------------------------------------------------
# Hugging Face (huggingface_hub 2.4)
# --------------------------------------------------------------------------------------------


def test_hf_model_info_with_files_metadata(hub: HubServer) -> None:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url, token=False)
    info = api.model_info(TINY_GGUF, files_metadata=True)
    truth = {f.path: f for f in hub.repo_files(TINY_GGUF)}
    assert info.sha == hub.commit(TINY_GGUF)
    assert info.card_data is not None and info.card_data.license == "apache-2.0"
    assert "license:apache-2.0" in (info.tags or [])
    assert info.gguf is not None and info.gguf["context_length"] == 4096
    assert info.gguf["architecture"] == "llama"
    siblings = {s.rfilename: s for s in info.siblings or []}
    assert set(siblings) == {"README.md", Q4, Q8}
    for name, sib in siblings.items():
        assert sib.size == truth[name].size == (hub.root / TINY_GGUF / name).stat().st_size
    assert siblings[Q4].lfs is not None
    assert siblings[Q4].lfs.sha256 == sha256(hub.root / TINY_GGUF / Q4)
    assert siblings["README.md"].lfs is None
    assert siblings["README.md"].blob_id == git_blob_sha1(
        (hub.root / TINY_GGUF / "README.md").read_bytes()
    )
    # without files_metadata the Hub lists names only
    plain = api.model_info(TINY_GGUF)
    assert plain.siblings is not None and plain.siblings[0].size is None

    model = api.model_info(TINY_MODEL, files_metadata=True)
    assert model.card_data is not None and model.card_data.license == "mit"
    assert model.config is not None and model.config["architectures"] == ["Qwen2ForCausalLM"]
    assert "chat_template" in model.config["tokenizer_config"]
    assert model.safetensors is not None and model.safetensors.total > 0
    custom = api.model_info(CUSTOM_CODE)
    assert custom.config is not None and "auto_map" in custom.config
    assert custom.card_data is None


def test_hf_listing_calls(hub: HubServer) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile, RepoFolder

    api = HfApi(endpoint=hub.url, token=False)
    files = api.list_repo_files(TINY_DIFFUSERS)
    assert "unet/diffusion_pytorch_model.safetensors" in files
    assert files == [f.path for f in hub.repo_files(TINY_DIFFUSERS)]
    top = list(api.list_repo_tree(TINY_DIFFUSERS))
    assert {e.path for e in top if isinstance(e, RepoFolder)} >= {"unet", "vae", "tokenizer"}
    assert all("/" not in e.path for e in top)
    infos = api.get_paths_info(TINY_DIFFUSERS, ["unet", "model_index.json", "missing.txt"])
    assert [type(i) for i in infos] == [RepoFolder, RepoFile]
    lfs = [e for e in api.list_repo_tree(TINY_MODEL, recursive=True) if isinstance(e, RepoFile)]
    by_path = {e.path: e for e in lfs}
    assert by_path["model.safetensors"].lfs is not None
    assert by_path["model.safetensors"].lfs.sha256 == sha256(
        hub.root / TINY_MODEL / "model.safetensors"
    )
    assert [b.name for b in api.list_repo_refs(TINY_MODEL).branches] == ["main"]


def test_hf_errors_are_the_sdk_types(hub: HubServer, tmp_path: Path) -> None:
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import (
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    api = HfApi(endpoint=hub.url, token=False)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("TheOrg/does-not-exist")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(TINY_GGUF, revision="v9")
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(
            TINY_GGUF,
            "nope.gguf",
            local_dir=tmp_path / "out",
            cache_dir=tmp_path / "cache",
            endpoint=hub.url,
            token=False,
        )


def test_hf_hub_download_gguf_into_local_dir(hub: HubServer, tmp_path: Path) -> None:
    from huggingface_hub import hf_hub_download

    out = tmp_path / "out"
    kwargs: dict[str, Any] = dict(
        local_dir=out, cache_dir=tmp_path / "cache", endpoint=hub.url, token=False
    )
    path = hf_hub_download(TINY_GGUF, Q4, **kwargs)
    assert Path(path) == out / Q4
    assert sha256(path) == sha256(hub.root / TINY_GGUF / Q4)
    assert (out / ".cache" / "huggingface" / "download" / f"{Q4}.metadata").is_file()
    assert [r.method for r in hub.requests] == ["HEAD", "GET"]
    assert hub.requests[1].range is None

    # Up to date: a second call only asks for the metadata again.
    hub.clear_log()
    assert hf_hub_download(TINY_GGUF, Q4, **kwargs) == path
    assert [r.method for r in hub.requests] == ["HEAD"]


def test_hf_snapshot_download_with_allow_patterns(hub: HubServer, tmp_path: Path) -> None:
    from huggingface_hub import snapshot_download

    out = tmp_path / "sd"
    result = snapshot_download(
        TINY_DIFFUSERS,
        allow_patterns=["model_index.json", "unet/*"],
        local_dir=out,
        cache_dir=tmp_path / "cache",
        endpoint=hub.url,
        token=False,
    )
    assert Path(result) == out.resolve()
    got = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    got = [p for p in got if not p.startswith(".cache/")]
    assert got == SD_SUBSET
    assert hub.requests[0].path == f"/api/models/{TINY_DIFFUSERS}/revision/main"
    assert hub.requests[1].path.startswith(f"/api/models/{TINY_DIFFUSERS}/tree/")
    assert len(hub.file_requests("unet/config.json")) == 1

    # into the HF cache layout instead
    cache = tmp_path / "cache2"
    snap = snapshot_download(
        TINY_GGUF, allow_patterns=["*Q8_0.gguf"], cache_dir=cache, endpoint=hub.url, token=False
    )
    commit = hub.commit(TINY_GGUF)
    assert Path(snap) == cache / "models--TheOrg--tiny-GGUF" / "snapshots" / commit
    assert sorted(p.name for p in Path(snap).iterdir()) == [Q8]
    assert (cache / "models--TheOrg--tiny-GGUF" / "refs" / "main").read_text() == commit


@pytest.mark.slow
def test_hf_resumes_a_cut_download_with_range(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """huggingface_hub resumes inside the same call (after a 1 s pause), with a Range request.

    Its reader hands over data in DOWNLOAD_CHUNK_SIZE (10 MB) blocks, so for a tiny file the
    resume offset is only non-zero with a small chunk size. The partial file is not kept if the
    call fails: there is no resume across calls in huggingface_hub 2.4.
    """
    from huggingface_hub import constants, hf_hub_download

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 256)
    hub.cut_after[f"{TINY_GGUF}/{Q8}"] = 1024
    path = hf_hub_download(
        TINY_GGUF,
        Q8,
        local_dir=tmp_path / "out",
        cache_dir=tmp_path / "cache",
        endpoint=hub.url,
        token=False,
    )
    assert sha256(path) == sha256(hub.root / TINY_GGUF / Q8)
    gets = hub.file_requests(Q8)
    assert [g.range for g in gets] == [None, "bytes=1024-"]
    assert not hub.cut_after
    assert not list((tmp_path / "out").rglob("*.incomplete"))


def test_hf_corrupt_file_is_only_caught_by_comparing_digests(
    hub: HubServer, tmp_path: Path
) -> None:
    from huggingface_hub import HfApi, hf_hub_download

    hub.corrupt.add(f"{TINY_GGUF}/{Q4}")
    api = HfApi(endpoint=hub.url, token=False)
    out = tmp_path / "out"
    path = hf_hub_download(
        TINY_GGUF, Q4, local_dir=out, cache_dir=tmp_path / "c", endpoint=hub.url, token=False
    )
    # huggingface_hub does not check the digest: the bad bytes arrive as a success.
    info = api.model_info(TINY_GGUF, files_metadata=True)
    expected = next(s for s in info.siblings or [] if s.rfilename == Q4)
    assert expected.lfs is not None and expected.size == Path(path).stat().st_size
    assert sha256(path) != expected.lfs.sha256
    assert expected.lfs.sha256 == sha256(hub.root / TINY_GGUF / Q4)
    report = api.verify_repo_checksums(TINY_GGUF, local_dir=out)
    assert [m["path"] for m in report.mismatches] == [Q4]
    assert report.missing_paths == ["README.md", Q8]


# --------------------------------------------------------------------------------------------
# ModelScope (modelscope 1.40.2 over modelscope_hub 0.5.1)
# --------------------------------------------------------------------------------------------


def test_ms_model_info_and_file_listing(hub: HubServer) -> None:
    import modelscope_hub
    from modelscope.hub.api import HubApi

    legacy = HubApi(endpoint=hub.url)
    model = legacy.get_model(TINY_GGUF)
    assert model["License"] == "apache-2.0"
    assert model["Tags"] == ["gguf", "chat"]
    files = legacy.get_model_files(TINY_GGUF, revision="master")
    assert {f["Path"]: f["Size"] for f in files} == {
        f.path: f.size for f in hub.repo_files(TINY_GGUF)
    }

    api = modelscope_hub.HubApi(endpoint=hub.url)
    assert api.get_repo(TINY_MODEL, "model").license == "mit"
    listing = api.list_repo_files(TINY_DIFFUSERS, "model")
    truth = {f.path: f for f in hub.repo_files(TINY_DIFFUSERS)}
    blobs = {f.path: f for f in listing if not f.is_dir}
    assert set(blobs) == set(truth)
    for path, f in blobs.items():
        assert (f.size, f.sha256) == (truth[path].size, truth[path].sha256)
    # The raw listing also carries the commit id and the LFS flag.
    raw = api.legacy.list_repo_files(TINY_GGUF, "model", revision="master")
    q4 = next(e for e in raw if e["Path"] == Q4)
    assert (q4["Revision"], q4["IsLFS"]) == (hub.commit(TINY_GGUF), True)


def test_ms_errors(hub: HubServer, tmp_path: Path) -> None:
    import requests
    from modelscope.hub.file_download import model_file_download
    from modelscope.hub.snapshot_download import snapshot_download
    from modelscope_hub.errors import NotExistError

    with pytest.raises(requests.HTTPError):  # the compat layer turns NotExistError into this
        snapshot_download("TheOrg/nope", local_dir=str(tmp_path / "a"), endpoint=hub.url)
    with pytest.raises(requests.HTTPError) as err:
        model_file_download(
            TINY_GGUF,
            "missing.gguf",
            revision="master",
            local_dir=str(tmp_path / "b"),
            cache_dir=str(tmp_path / "c"),
            endpoint=hub.url,
        )
    assert isinstance(err.value.__cause__, NotExistError)


def test_ms_model_file_download(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import modelscope_hub
    from modelscope.hub.file_download import model_file_download

    out = tmp_path / "out"
    path = model_file_download(
        TINY_GGUF,
        Q4,
        revision="master",
        local_dir=str(out),
        cache_dir=str(tmp_path / "cache"),
        endpoint=hub.url,
    )
    assert Path(path) == out / Q4
    assert sha256(path) == sha256(hub.root / TINY_GGUF / Q4)
    assert [r.range for r in hub.file_requests(Q4)] == [None]
    assert not (out / f"{Q4}.incomplete").exists()

    # revision=None resolves "master" through a bare HubApi(): only MODELSCOPE_ENDPOINT (read
    # when the default config is built) points that one at the stand-in.
    hub.clear_log()
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", hub.url)
    modelscope_hub.set_default_config(None)
    path = model_file_download(TINY_MODEL, "config.json", cache_dir=str(tmp_path / "cache"))
    snapshot = tmp_path / "cache" / "models" / "TheOrg--tiny-model" / "snapshots" / "master"
    assert Path(path) == snapshot / "config.json"
    assert hub.requests[0].path == f"/api/v1/models/{TINY_MODEL}/revisions"


def test_ms_snapshot_download_with_allow_patterns(hub: HubServer, tmp_path: Path) -> None:
    from modelscope.hub.snapshot_download import snapshot_download

    out = tmp_path / "sd"
    result = snapshot_download(
        TINY_DIFFUSERS,
        allow_patterns=["model_index.json", "unet/*"],
        local_dir=str(out),
        cache_dir=str(tmp_path / "cache"),
        endpoint=hub.url,
    )
    assert Path(result) == out
    got = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert got == SD_SUBSET

    cache = tmp_path / "cache2"
    snap = snapshot_download(
        PICKLE_MODEL, allow_patterns="*.bin", cache_dir=str(cache), endpoint=hub.url
    )
    assert Path(snap) == cache / "models" / "TheOrg--pickle-model" / "snapshots" / "master"
    assert sha256(Path(snap) / "pytorch_model.bin") == sha256(
        hub.root / PICKLE_MODEL / "pytorch_model.bin"
    )


def test_ms_resumes_a_cut_download_within_the_call(hub: HubServer, tmp_path: Path) -> None:
    from modelscope.hub.snapshot_download import snapshot_download

    hub.cut_after[Q8] = 1000
    out = tmp_path / "out"
    snapshot_download(
        TINY_GGUF,
        allow_patterns=[Q8],
        local_dir=str(out),
        cache_dir=str(tmp_path / "cache"),
        endpoint=hub.url,
    )
    assert sha256(out / Q8) == sha256(hub.root / TINY_GGUF / Q8)
    assert [r.range for r in hub.file_requests(Q8)] == [None, "bytes=1000-"]


def test_ms_resumes_across_calls_from_the_incomplete_file(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With retries off the cut call fails, keeps <file>.incomplete, and the next call resumes."""
    from modelscope.hub.file_download import model_file_download
    from modelscope_hub import _download
    from modelscope_hub.errors import NetworkError

    monkeypatch.setattr(_download, "DOWNLOAD_RETRY_TIMES", 0)
    hub.cut_after[Q8] = 1000
    out = tmp_path / "out"
    kwargs: dict[str, Any] = dict(
        revision="master", local_dir=str(out), cache_dir=str(tmp_path / "c"), endpoint=hub.url
    )
    with pytest.raises(NetworkError):
        model_file_download(TINY_GGUF, Q8, **kwargs)
    partial = out / f"{Q8}.incomplete"
    assert partial.stat().st_size == 1000
    assert not (out / Q8).exists()

    path = model_file_download(TINY_GGUF, Q8, **kwargs)
    assert sha256(path) == sha256(hub.root / TINY_GGUF / Q8)
    assert [r.range for r in hub.file_requests(Q8)] == [None, "bytes=1000-"]
    assert not partial.exists()


def test_ms_corrupt_file_fails_the_digest_check(
    hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelscope.hub.file_download import model_file_download
    from modelscope.hub.snapshot_download import snapshot_download
    from modelscope_hub import _download
    from modelscope_hub.errors import FileDownloadError, FileIntegrityError

    monkeypatch.setattr(_download, "DOWNLOAD_INTEGRITY_RETRY_BACKOFF", 0.01)  # default 1 s
    hub.corrupt.update({f"{TINY_GGUF}/{Q4}", "config.json"})
    out = tmp_path / "out"
    with pytest.raises(FileDownloadError) as err:
        snapshot_download(
            TINY_GGUF,
            allow_patterns=["*.gguf"],
            local_dir=str(out),
            cache_dir=str(tmp_path / "c"),
            endpoint=hub.url,
        )
    assert set(err.value.failed_files) == {Q4}
    assert isinstance(err.value.failed_files[Q4], FileIntegrityError)
    assert not (out / Q4).exists() and not (out / f"{Q4}.incomplete").exists()
    assert sha256(out / Q8) == sha256(hub.root / TINY_GGUF / Q8)
    assert len(hub.file_requests(Q4)) == 3  # DOWNLOAD_HASH_RETRY_TIMES

    # A single-file download checks the X-Linked-ETag digest (sent for LFS files) ...
    kwargs: dict[str, Any] = dict(revision="master", cache_dir=str(tmp_path / "c"))
    with pytest.raises(FileIntegrityError):
        model_file_download(
            TINY_GGUF, Q4, local_dir=str(tmp_path / "one"), endpoint=hub.url, **kwargs
        )
    # ... and nothing else: a non-LFS file (no X-Linked-ETag) arrives corrupt, as a success.
    path = model_file_download(
        TINY_MODEL, "config.json", local_dir=str(tmp_path / "two"), endpoint=hub.url, **kwargs
    )
    assert sha256(path) != next(
        f.sha256 for f in hub.repo_files(TINY_MODEL) if f.path == "config.json"
    )
