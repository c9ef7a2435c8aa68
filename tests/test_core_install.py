"""`pip install kaiyuan` with no extras: every import is declared, and a core install serves.

The second half runs `kaiyuan serve` from `.venv-core` (`make .venv-core/.installed` builds it,
`make test` does so first): chat answers on the bundled model, and a route that needs an
extra answers 501 naming it.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from kaiyuan.extras import EXTRAS
from tests.harness import KaiyuanServer

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "kaiyuan"
CORE_KAIYUAN = ROOT / ".venv-core" / "bin" / "kaiyuan"


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group()).lower()


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(r) for r in project["dependencies"]}
    extras = {
        extra: {_name(r) for r in requirements}
        for extra, requirements in project["optional-dependencies"].items()
    }
    return core, extras


def _imports() -> dict[str, set[str]]:
    """Top-level third-party module -> the source files importing it (anywhere in a file); an
    extra's sub-package of a shared namespace (opentelemetry.sdk) counts as its own module."""
    parts = [module for modules in EXTRAS.values() for module in modules if "." in module]
    found: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                part = next((p for p in parts if name == p or name.startswith(p + ".")), top)
                if top != "kaiyuan" and top not in sys.stdlib_module_names:
                    found.setdefault(part, set()).add(str(path.relative_to(ROOT)))
    return found


def _distributions(module: str) -> set[str]:
    top, _, rest = module.partition(".")
    dists = importlib.metadata.packages_distributions().get(top)
    assert dists, f"'{module}' is imported but no installed distribution provides it"
    if rest:  # a sub-package of a namespace several distributions share: those that ship it
        folder = module.replace(".", "/") + "/"
        dists = [
            d
            for d in dists
            if any(str(f).startswith(folder) for f in importlib.metadata.files(d) or [])
        ]
        assert dists, f"'{module}' is imported but no installed distribution provides it"
    return {_name(d) for d in dists}


def test_every_imported_package_is_declared() -> None:
    core, extras = _declared()
    optional = {module: extra for extra, modules in EXTRAS.items() for module in modules}
    undeclared = []
    for module, files in sorted(_imports().items()):
        dists = _distributions(module)
        if dists & core:
            continue
        extra = optional.get(module)
        if extra is None or not dists & extras[extra]:
            where = ", ".join(sorted(files))
            undeclared.append(f"{module} ({'/'.join(sorted(dists))}; imported by {where})")
    assert not undeclared, (
        "imported but not declared in pyproject.toml (add the distribution to "
        "[project.dependencies], or to an extra and its modules to kaiyuan.extras.EXTRAS): "
        + "; ".join(undeclared)
    )


def test_extras_table_matches_pyproject() -> None:
    """Each module kaiyuan.extras names for an extra comes from a distribution of that extra
    (else its error would send users to install the wrong one)."""
    core, extras = _declared()
    assert set(EXTRAS) <= set(extras)
    for extra, modules in EXTRAS.items():
        for module in modules:
            dists = _distributions(module)
            assert dists & extras[extra], f"{module} ({dists}) is not in the '{extra}' extra"
            assert not dists & core, f"{module} is a core dependency, not the '{extra}' extra's"


def test_the_server_imports_no_optional_package() -> None:
    """Importing the app and the CLI pulls in no extra's package (a fresh interpreter)."""
    optional = sorted({module for modules in EXTRAS.values() for module in modules})
    code = (
        "import sys, kaiyuan.server.app, kaiyuan.cli.main, kaiyuan.cli.serve\n"
        f"print(sorted(m for m in {optional!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stdout


@pytest.fixture(scope="module")
def core_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KaiyuanServer]:
    if not CORE_KAIYUAN.exists():
        pytest.fail(
            "no core install at .venv-core: run `make .venv-core/.installed` (make test does)"
        )
    home = tmp_path_factory.mktemp("core-home")
    with KaiyuanServer(home=home, executable=str(CORE_KAIYUAN)) as running:
        yield running


def _core_python_lacks(module: str) -> bool:
    python = CORE_KAIYUAN.with_name("python")
    code = f"import importlib.util as u; print(u.find_spec({module!r}) is None)"
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip() == "True"


@pytest.mark.slow
def test_core_install_lacks_every_extra(core_server: KaiyuanServer) -> None:
    """The core venv really is core (else the checks below prove nothing)."""
    for extra in ("transformers", "agent", "diffusion", "eval", "otel"):
        assert _core_python_lacks(EXTRAS[extra][0]), f"{extra} is installed in .venv-core"


@pytest.mark.slow
def test_core_install_chats(core_server: KaiyuanServer) -> None:
    client = core_server.client()
    reply = client.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8,
    )
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def _expect_missing_extra(exc: pytest.ExceptionInfo[openai.APIStatusError], extra: str) -> None:
    assert exc.value.status_code == 501
    assert exc.value.response.headers["x-should-retry"] == "false"
    error = exc.value.body
    assert isinstance(error, dict)
    assert error["code"] == "feature_not_installed"
    assert error["type"] == "not_supported_error"
    assert f"pip install 'kaiyuan[{extra}]'" in error["message"]


@pytest.mark.slow
def test_core_install_names_the_extra_a_route_needs(core_server: KaiyuanServer) -> None:
    # The SDK's default retries are on: x-should-retry: false makes it give up at once.
    client = openai.OpenAI(base_url=core_server.url + "/v1", api_key="test")
    with pytest.raises(openai.APIStatusError) as responses:
        client.responses.create(model="smollm2-135m-instruct", input="hi")
    _expect_missing_extra(responses, "agent")
    with pytest.raises(openai.APIStatusError) as embeddings:
        client.embeddings.create(model="all-minilm-l6-v2", input="hi")
    _expect_missing_extra(embeddings, "transformers")
    with pytest.raises(openai.APIStatusError) as images:
        client.images.generate(model="sd-turbo", prompt="a fox")
    _expect_missing_extra(images, "diffusion")
    videos = httpx.get(core_server.url + "/v1/videos", timeout=30)  # the SDK's is deprecated
    assert videos.status_code == 501
    assert "pip install 'kaiyuan[diffusion]'" in videos.json()["error"]["message"]
    assert "Traceback" not in core_server.log()


@pytest.mark.slow
def test_core_install_cli_names_the_extra(core_server: KaiyuanServer, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(CORE_KAIYUAN), "tool", "search", '{"query": "x"}'],
        capture_output=True,
        text=True,
        timeout=60,
        env={"KAIYUAN_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: `kaiyuan tool` needs kaiyuan's 'agent' extra (ddgs is not installed): "
        "pip install 'kaiyuan[agent]'"
    ]
