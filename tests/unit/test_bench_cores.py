"""cloud/bench/cores.py: the bench's "equal cores" pins every thread of a process, and gives them back."""

from __future__ import annotations

import os
import threading
import time

import pytest

from cloud.bench import cores

pytestmark = pytest.mark.skipif(not cores.CAN_PIN, reason="sched_setaffinity is Linux-only")


def test_first_takes_the_lowest_available_cores() -> None:
    available = cores.available()
    assert cores.first(1) == {available[0]}
    assert cores.first(len(available) + 5) == set(available)  # more than there are: all of them
    assert cores.first(0) == {available[0]}  # at least one


def test_pinned_self_moves_every_thread_and_restores_them() -> None:
    before = set(cores.available())
    core = cores.available()[-1]
    started, release = threading.Event(), threading.Event()
    thread_ids: list[int] = []

    def worker() -> None:
        thread_ids.append(threading.get_native_id())
        started.set()
        release.wait(10)

    old_thread = threading.Thread(target=worker)  # running before the block: moved too
    threads = [old_thread]
    old_thread.start()
    started.wait(10)
    try:
        with cores.pinned_self({core}):
            assert os.sched_getaffinity(0) == {core}
            assert os.sched_getaffinity(thread_ids[0]) == {core}
            started.clear()
            new_thread = threading.Thread(target=worker)  # started inside: inherits the pin
            threads.append(new_thread)
            new_thread.start()
            started.wait(10)
            assert os.sched_getaffinity(thread_ids[1]) == {core}
        assert os.sched_getaffinity(0) == before
        assert os.sched_getaffinity(thread_ids[0]) == before
        assert os.sched_getaffinity(thread_ids[1]) == before
    finally:
        release.set()
        for thread in threads:
            thread.join(10)


def test_cpu_seconds_reads_a_process_cpu_time() -> None:
    started = cores.cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # burn 0.3 s of CPU
        pass
    used = cores.cpu_seconds(os.getpid()) - started
    assert 0.2 <= used <= 2.0  # clock ticks are 10 ms; others' load does not count: it is CPU, not wall time
    assert cores.cpu_seconds(2**22 + 1) == 0.0  # above pid_max's default: no such process


def test_busy_seconds_counts_a_pinned_burn_on_its_core() -> None:
    core = cores.available()[-1]
    with cores.pinned_self({core}):
        before = cores.busy_seconds({core})
        started = time.monotonic()
        deadline = time.process_time() + 0.3
        while time.process_time() < deadline:  # burn 0.3 s of CPU on `core`
            pass
        busy = cores.busy_seconds({core}) - before
        wall = time.monotonic() - started
    assert 0.25 <= busy <= wall + 0.05  # /proc/stat counts in 10 ms ticks; a core is busy at most all the time
