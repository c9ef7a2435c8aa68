"""engines/llamacpp/threads.CoreWatch: llama.cpp's thread count follows the free cores."""

from __future__ import annotations

import pytest

from kaiyuan.engines.llamacpp import threads


class Machine:
    """A fake clock, machine and process: ``run`` advances them by one look's worth."""

    def __init__(self, cores: int) -> None:
        self.cores, self.wall, self.busy, self.own = cores, 0.0, 0.0, 0.0

    def run(self, seconds: float, *, others: float, own: float) -> None:
        self.wall += seconds
        self.busy += (others + own) * seconds
        self.own += own * seconds


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Machine:
    m = Machine(cores=4)
    monkeypatch.setattr(threads, "usable_cores", lambda: m.cores)
    monkeypatch.setattr(threads, "_machine_busy", lambda: m.busy)
    monkeypatch.setattr(threads.time, "monotonic", lambda: m.wall)
    monkeypatch.setattr(threads.time, "process_time", lambda: m.own)
    return m


def looks(watch: threads.CoreWatch, machine: Machine, n: int, **load: float) -> list[int | None]:
    out = []
    for _ in range(n):
        machine.run(threads.PERIOD, **load)
        out.append(watch.update())
    return out


def test_an_idle_machine_keeps_every_thread(machine: Machine) -> None:
    watch = threads.CoreWatch(limit=4)
    assert looks(watch, machine, 4, others=0.1, own=3.9) == [None] * 4
    assert watch.threads == 4


def test_cores_taken_by_others_are_given_up_and_taken_back(machine: Machine) -> None:
    watch = threads.CoreWatch(limit=4)
    # another program takes two cores: after two looks that agree, two threads
    assert looks(watch, machine, 2, others=2.0, own=2.0) == [None, 2]
    assert looks(watch, machine, 2, others=2.0, own=2.0) == [None, None]
    # it stops: back to four
    assert looks(watch, machine, 2, others=0.0, own=2.0) == [None, 4]


def test_a_moment_of_noise_does_not_flip_the_count(machine: Machine) -> None:
    watch = threads.CoreWatch(limit=4)
    looks(watch, machine, 1, others=3.0, own=1.0)  # one busy look
    assert looks(watch, machine, 3, others=0.0, own=4.0) == [None] * 3
    assert watch.threads == 4


def test_never_fewer_than_one_nor_more_than_the_limit(machine: Machine) -> None:
    watch = threads.CoreWatch(limit=2)
    assert looks(watch, machine, 2, others=8.0, own=0.5)[-1] == 1
    assert looks(watch, machine, 2, others=0.0, own=0.5)[-1] == 2


def test_between_looks_nothing_is_read(machine: Machine) -> None:
    watch = threads.CoreWatch(limit=4)
    machine.run(threads.PERIOD / 10, others=4.0, own=0.0)
    assert watch.update() is None


def test_this_machine_reports_its_cpu_time() -> None:
    """The real source: /proc/stat on Linux, growing as the machine works."""
    first = threads._machine_busy()
    assert first is not None
    sum(i * i for i in range(2_000_000))  # some work of our own
    later = threads._machine_busy()
    assert later is not None and later >= first
