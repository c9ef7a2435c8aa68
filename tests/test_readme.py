"""The README's shell commands run as written from a fresh clone (against a fresh home).

Every command line of the README's ``sh`` blocks is either run here, expecting exit status 0,
or listed in SKIPPED with the reason it cannot run in a test (the network, a long-running
server, a placeholder). A new README line is neither until someone decides which, so the
test fails on it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
KAIYUAN = str(Path(sys.executable).with_name("kaiyuan"))

# Reviewed: what each skipped line needs that a test does not have. Matched as line prefixes.
SKIPPED = {
    "make serve": "installs, then serves until stopped",
    "make test": "the whole suite",
    ".venv/bin/kaiyuan serve": "serves until stopped (tests/test_cli.py starts it)",
    ".venv/bin/kaiyuan chat --url": "needs a server already running on port 8000",
    ".venv/bin/kaiyuan agent": "searches the web",
    ".venv/bin/kaiyuan pull": "downloads from a hub",
    ".venv/bin/kaiyuan import": "placeholder files",
    ".venv/bin/kaiyuan rm": "placeholder model id",
    ".venv/bin/kaiyuan docs add": "placeholder paths",
    ".venv/bin/kaiyuan image": "placeholder model (a diffusers pipeline)",
    ".venv/bin/kaiyuan video": "placeholder model (a diffusers pipeline)",
    ".venv/bin/kaiyuan eval": "placeholder models, and minutes of generation",
    ".venv/bin/kaiyuan bench": "needs a server on port 8080",
    "ANTHROPIC_BASE_URL=": "Claude Code itself (an npm program), against a running server",
}
# Chat lines get a short answer: the test is that they run, not what the model writes.
SHORT = ["--max-tokens", "8"]


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    lines = []
    for block in re.findall(r"^```(?:sh|bash|console)\n(.*?)^```", text, re.M | re.S):
        for line in block.splitlines():
            command = " ".join(shlex.split(line, comments=True))
            if command:
                lines.append(line.split("  #")[0].strip())
    return lines


def skip_reason(line: str) -> str | None:
    return next((why for prefix, why in SKIPPED.items() if line.startswith(prefix)), None)


def test_every_readme_command_is_run_or_skipped_for_a_reason() -> None:
    commands = readme_commands()
    assert len(commands) > 10, commands  # the README's blocks were found at all
    run = [c for c in commands if skip_reason(c) is None]
    assert all(".venv/bin/kaiyuan" in c for c in run), run
    # The examples name the virtualenv's kaiyuan (it is not on PATH without activating it).
    bare = [c for c in commands if re.match(r"^kaiyuan\b|\|\s*kaiyuan\b", c)]
    assert bare == [], bare
    # Every skip still matches a README line, so the list stays the README's.
    for prefix in SKIPPED:
        assert any(c.startswith(prefix) for c in commands), f"stale SKIPPED entry {prefix!r}"


RUNNABLE = [c for c in readme_commands() if skip_reason(c) is None]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fresh home for all the commands: the bundled models are inspected once."""
    return tmp_path_factory.mktemp("readme-home")


@pytest.mark.slow
@pytest.mark.parametrize("line", RUNNABLE)
def test_readme_command_runs(line: str, home: Path) -> None:
    command = line.replace(".venv/bin/kaiyuan", shlex.quote(KAIYUAN))
    if " chat" in line:
        command += " " + " ".join(SHORT)
    env = {**os.environ, "KAIYUAN_HOME": str(home)}
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
