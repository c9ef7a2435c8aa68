"""Build llama.cpp's own llama-server from the pinned llama-cpp-python sdist (for benchmarks).

The benchmarks compare kaiyuan with llama-server built from the very llama.cpp that kaiyuan's
llama-cpp-python wraps, so both run the same kernels. The sdist is the one
scripts/llama_converter.py fetches (~/.cache/kaiyuan-build); the binary is built once (~6 min
on 2 cores) into ~/.cache/kaiyuan-build/llama-server-VERSION and its path printed.

usage: python scripts/llama_server.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llama_converter import CACHE, pinned_version, sdist


def main() -> None:
    version = pinned_version()
    binary = CACHE / f"llama-server-{version}"
    if binary.exists():
        print(binary)
        return
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "llama.cpp"
        with tarfile.open(sdist(version)) as tar:
            for member in tar.getmembers():
                if member.name.startswith(prefix) and (member.isfile() or member.isdir()):
                    member.name = member.name.removeprefix(prefix) or "."
                    tar.extract(member, src, filter="data")
        build = src / "build"
        jobs = str(os.cpu_count() or 2)
        subprocess.run(
            ["cmake", "-S", str(src), "-B", str(build), "-DLLAMA_CURL=OFF",
             "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        subprocess.run(
            ["cmake", "--build", str(build), "--target", "llama-server", "-j", jobs],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        shutil.copy2(build / "bin" / "llama-server", binary)
    print(binary)


if __name__ == "__main__":
    main()
