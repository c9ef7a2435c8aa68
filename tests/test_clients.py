"""The README's "Use it from…" examples run as written against a real server: the openai,
anthropic and ollama SDKs, LangChain and LiteLLM, each in its own process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import KaiyuanServer

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def examples() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Use it from…", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```python\n(.*?)^```", section, re.M | re.S)


def test_the_section_has_every_client() -> None:
    found = "\n".join(examples())
    for client in ("openai", "anthropic", "ollama", "langchain_openai", "litellm"):
        assert f"import {client}" in found or f"from {client} import" in found, client
    assert all(len(code.strip().splitlines()) == 2 for code in examples())


@pytest.mark.parametrize("code", examples(), ids=lambda c: c.split()[1].split(".")[0])
def test_example_runs(code: str, server: KaiyuanServer) -> None:
    here = server.url.removeprefix("http://")
    code = code.replace("127.0.0.1:8000", here).replace("127.0.0.1:11434", here)
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # no fetch of prices
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()  # the model answered something
