"""What this machine has: memory, GPUs and memory bandwidth (for choosing quantisations and
budgets, and estimating decode speed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(slots=True, frozen=True)
class GPU:
    name: str
    memory_bytes: int


@dataclass(slots=True, frozen=True)
class Machine:
    cpus: int
    total_memory: int
    available_memory: int
    gpus: tuple[GPU, ...] = field(default=())


def total_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def available_memory() -> int:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def gpus() -> tuple[GPU, ...]:
    """NVIDIA GPUs via nvidia-smi, if present (none is the common case on CPU machines)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    found = []
    for line in out.strip().splitlines():
        name, _, mib = line.rpartition(",")
        if name and mib.strip().isdigit():
            found.append(GPU(name.strip(), int(mib.strip()) * 2**20))
    return tuple(found)


def this_machine() -> Machine:
    return Machine(os.cpu_count() or 1, total_memory(), available_memory(), gpus())


def model_memory(machine: Machine) -> int:
    """The memory a model may fill: RAM, or a GPU's when that is larger (llama.cpp and vLLM
    can put the weights there)."""
    return max([machine.total_memory, *(g.memory_bytes for g in machine.gpus)])


BANDWIDTH_FILE = "bandwidth.json"
_COPY_BYTES = 128 * 2**20  # two of these: well past any CPU cache, and faulted in < 1 s


def measure_bandwidth(repeats: int = 5) -> float:
    """Bytes per second (read plus written) that a large memory copy moves, best of ``repeats``.

    Decoding one token reads every weight once, so this bounds a CPU's decode speed. The copy
    runs on up to 8 threads (numpy releases the GIL), as a decoder uses every core."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    threads = max(1, min(os.cpu_count() or 1, 8))
    src = np.ones(_COPY_BYTES, dtype=np.uint8)
    dst = np.zeros_like(src)
    step = -(-_COPY_BYTES // threads)
    parts = [(dst[i : i + step], src[i : i + step]) for i in range(0, _COPY_BYTES, step)]
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(lambda p: np.copyto(p[0], p[1]), parts))
            best = min(best, time.perf_counter() - start)
    return 2 * _COPY_BYTES / best


def memory_bandwidth(cache_dir: Path | None) -> float:
    """This machine's memory bandwidth, measured once and then read from ``cache_dir``.

    The cache names the machine it was measured on (CPUs, RAM); a home moved to another
    machine measures again."""
    machine = {"cpus": os.cpu_count() or 1, "total_memory": total_memory()}
    path = cache_dir / BANDWIDTH_FILE if cache_dir is not None else None
    if path is not None:
        try:
            cached = json.loads(path.read_text())
            if cached.get("machine") == machine and float(cached["bytes_per_second"]) > 0:
                return float(cached["bytes_per_second"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
    measured = measure_bandwidth()
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_text(json.dumps({"machine": machine, "bytes_per_second": measured}))
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only home measures every time; that is all
    return measured
