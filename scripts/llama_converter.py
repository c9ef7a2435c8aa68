"""Fetch llama.cpp's HF -> GGUF converter from the pinned llama-cpp-python sdist.

The tests use it to turn the bundled all-MiniLM-L6-v2 into a real GGUF embedding model. The
sdist is fetched once with pip (from its cache when the build already downloaded it), kept in
~/.cache/kaiyuan-build, and only the converter (convert_hf_to_gguf.py, conversion/, gguf-py/)
is unpacked into DEST.

usage: python scripts/llama_converter.py DEST
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache" / "kaiyuan-build"
KEEP = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


def pinned_version() -> str:
    match = re.search(r'"llama-cpp-python==([0-9.]+)"', (ROOT / "pyproject.toml").read_text())
    if match is None:
        raise SystemExit("pyproject.toml does not pin llama-cpp-python")
    return match.group(1)


def sdist(version: str) -> Path:
    target = CACHE / f"llama_cpp_python-{version}.tar.gz"
    if not target.exists():  # pip checks the index's digest and reuses its own cache
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps",
             "--no-binary", "llama-cpp-python", f"llama-cpp-python=={version}", "-d", str(CACHE)],
            check=True,
        )  # fmt: skip
    return target


def main() -> None:
    dest = Path(sys.argv[1])
    version = pinned_version()
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    with tarfile.open(sdist(version)) as tar:
        for member in tar.getmembers():
            name = member.name.removeprefix(prefix)
            if member.name.startswith(prefix) and name.startswith(KEEP) and member.isfile():
                member.name = name
                tar.extract(member, dest, filter="data")
    print(f"llama.cpp converter {version} in {dest}")


if __name__ == "__main__":
    main()
