"""Which cores a measurement may use, and the CPU time it took: the raw run and the pipeline's workers are
pinned to the same cores, so "pipeline / raw" compares equal CPU (as `taskset -c` would). Linux only; elsewhere
nothing is pinned (the bench says so) and other processes' CPU time reads 0.

Every thread of a process is pinned (`/proc/<pid>/task`): sched_setaffinity(pid) alone moves only the main
thread, and torch's OpenMP threads would stay where they were.
"""

from __future__ import annotations

import errno
import os
import time
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


def set_group_nice(pid: int, nice: int) -> bool:
    """Set the nice value of `pid`'s autogroup: the scheduling group of its session (each local worker starts a
    session of its own). With autogroups, the kernel shares a core between sessions first and weighs a process's
    own nice only within its session, so this is the nice that orders two workers on one core. Raising it and
    setting it back to 0 need no privilege. False, and nothing changed, where autogroups do not decide (disabled,
    a cpu cgroup other than the root, not Linux), where `pid` shares this process's group, is in
    the kernel's default group, or has gone."""
    group = Path(f"/proc/{pid}/autogroup")
    try:
        name = _autogroup_name(group)
        if not autogroups_decide(pid) or name in ("", _autogroup_name(Path("/proc/self/autogroup"))):
            return False  # the default group is the root task group, whose weight the kernel never changes
        for _ in range(20):
            try:
                group.write_text(str(nice))
                return True
            except OSError as exc:  # unprivileged writers may change an autogroup's nice once per 100 ms
                if exc.errno != errno.EAGAIN:
                    return False
                time.sleep(0.1)
    except OSError:  # the process has gone, or /proc is not there
        pass
    return False


def _autogroup_name(path: Path) -> str:
    """The group's name, as in "/autogroup-123 nice 0"; "" for the kernel's default group, which the file shows as
    empty: the group of PID 1's session and of every process below it that never called setsid (a CI runner's
    processes may not)."""
    words = path.read_text().split()
    return words[0] if words else ""


def autogroups_decide(pid: int) -> bool:
    """Autogroups are on and `pid` is in the root cpu cgroup: the kernel ignores autogroups anywhere else."""
    try:
        if Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() != "1":
            return False
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "cpu" in controllers.split(","):  # cgroup v1: the cpu hierarchy
                return path == "/"
            if controllers == "":  # cgroup v2 alone: no cpu cgroups unless the root hands the controller down
                return path == "/" or "cpu" not in Path("/sys/fs/cgroup/cgroup.subtree_control").read_text().split()
    except OSError:
        return False
    return True
