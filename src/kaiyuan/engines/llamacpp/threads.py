"""How many threads llama.cpp should use now: the cores other processes leave free.

llama.cpp's threads meet at a barrier after every operation of a decode; when they outnumber
the free cores, each barrier waits for a thread the OS has not scheduled, and a 2-core machine
with one core busy elsewhere generated 3× slower with 2 threads than with 1
(docs/benchmarks.md). So unless the user fixes ``threads``, the scheduler asks this watch
between steps and sets the count with ``llama_set_n_threads`` (cheap, no reload).

Free cores = cores - (all CPU time the machine spent) + (this process's own), over the last
``period`` seconds, from /proc/stat (Linux; elsewhere the count stays fixed). A change needs
two periods in a row that agree, so a moment's noise does not flip it.
"""

from __future__ import annotations

import os
import time

PERIOD = 0.5  # seconds between looks


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _machine_busy() -> float | None:
    """Seconds of CPU time the whole machine has spent busy since boot (None: unknown)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class CoreWatch:
    def __init__(self, limit: int, period: float = PERIOD) -> None:
        self.limit = limit
        self.threads = limit
        self.period = period
        self._candidate = limit
        self._mark = self._read()

    def _read(self) -> tuple[float, float, float] | None:
        busy = _machine_busy()
        return None if busy is None else (time.monotonic(), busy, time.process_time())

    def update(self) -> int | None:
        """The new thread count when it should change, else None (cheap between looks)."""
        if self._mark is None or time.monotonic() - self._mark[0] < self.period:
            return None
        now = self._read()
        if now is None:
            return None
        wall, busy, own = (b - a for a, b in zip(self._mark, now, strict=True))
        self._mark = now
        others = max(0.0, busy - own) / wall  # cores' worth of other processes' work
        wanted = max(1, min(self.limit, int(usable_cores() - others + 0.5)))
        agreed, self._candidate = wanted == self._candidate, wanted
        if agreed and wanted != self.threads:
            self.threads = wanted
            return wanted
        return None
