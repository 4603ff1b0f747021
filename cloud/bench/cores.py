"""Which cores a measurement may use, and the CPU time it took: the raw run and the pipeline's workers are
pinned to the same cores, so "pipeline / raw" compares equal CPU (as `taskset -c` would). Linux only; elsewhere
nothing is pinned (the bench says so) and other processes' CPU time reads 0.

Every thread of a process is pinned (`/proc/<pid>/task`): sched_setaffinity(pid) alone moves only the main
thread, and torch's OpenMP threads would stay where they were.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

CAN_PIN = hasattr(os, "sched_setaffinity") and Path("/proc/self/task").is_dir()


def available() -> list[int]:
    """The cores this process may run on (a `taskset` or cgroup around the bench narrows them), in order."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def first(count: int) -> set[int]:
    """The first `count` available cores (all of them when there are fewer)."""
    return set(available()[:max(1, count)])


def pin(pid: int, cores: set[int]) -> None:
    """Every thread of `pid` on `cores`; a thread or process that has gone meanwhile is skipped."""
    if not CAN_PIN:
        return
    try:
        tids = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return
    for tid in tids:
        with suppress(ProcessLookupError, PermissionError):
            os.sched_setaffinity(tid, cores)


@contextmanager
def pinned_self(cores: set[int]) -> Iterator[None]:
    """This process on `cores` for the block, then back on every core it had (threads started inside the
    block, e.g. OpenMP's, are moved back too)."""
    before = set(available())
    pin(os.getpid(), cores)
    try:
        yield
    finally:
        pin(os.getpid(), before)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far, all its threads (/proc/<pid>/stat); 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14, 15


def busy_seconds(cores: set[int]) -> float:
    """Seconds `cores` have been busy so far, summed (/proc/stat: user, nice, system, irq, softirq, steal); 0 when
    unreadable. Across a measurement, minus its workers' CPU: what other processes took from their cores."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return 0.0
    busy = 0
    for line in lines:
        name, *ticks = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, ticks[:8])
            busy += user + nice + system + irq + softirq + steal
    return busy / os.sysconf("SC_CLK_TCK")
