"""cloud/bench/cores.py's set_group_nice, on real processes: the bench runs recognition ahead of detection where
they share cores by setting detection's session group to nice 19, and gives it back. Two CPU burners, each in a
session of its own as the local workers are, pinned to one core."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.bench import cores

pytestmark = pytest.mark.skipif(not cores.CAN_PIN, reason="sched_setaffinity and autogroups are Linux-only")

BURN = "while True:\n    pass\n"


@pytest.fixture
def burners() -> Iterator[list[subprocess.Popen[bytes]]]:
    core = {cores.available()[-1]}
    started = [subprocess.Popen([sys.executable, "-c", BURN], start_new_session=True) for _ in range(2)]
    try:
        for process in started:
            cores.pin(process.pid, core)
        yield started
    finally:
        for process in started:
            process.kill()
            process.wait(10)


def _group_nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])  # "/autogroup-123 nice 19"


def _shares(processes: list[subprocess.Popen[bytes]], seconds: float = 1.0) -> list[float]:
    before = [cores.cpu_seconds(p.pid) for p in processes]
    time.sleep(seconds)
    used = [cores.cpu_seconds(p.pid) - b for p, b in zip(processes, before, strict=True)]
    return [u / sum(used) for u in used]


def test_a_group_at_nice_19_yields_the_core_and_gets_it_back(burners: list[subprocess.Popen[bytes]]) -> None:
    behind, ahead = burners
    if not cores.autogroups_decide(behind.pid):
        # Autogroups off, or a cpu cgroup decides: the bench must say it could not order them, and change nothing.
        assert cores.set_group_nice(behind.pid, 19) is False
        return
    assert cores.set_group_nice(behind.pid, 19) is True
    assert _group_nice(behind.pid) == 19 and _group_nice(ahead.pid) == 0
    assert _shares(burners)[1] > 0.85  # weights 15 : 1024, so about 0.985 of the core

    assert cores.set_group_nice(behind.pid, 0) is True  # back without privilege (set_group_nice waits out EAGAIN)
    assert _group_nice(behind.pid) == 0
    assert 0.3 < _shares(burners)[0] < 0.7  # an even split again


def test_this_process_own_group_is_never_changed() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # same session as the bench
    try:
        before = Path("/proc/self/autogroup").read_text()
        assert cores.set_group_nice(child.pid, 19) is False
        assert Path("/proc/self/autogroup").read_text() == before
    finally:
        child.kill()
        child.wait(10)


def test_the_kernels_default_group_is_told_apart_and_left_alone() -> None:
    # PID 1 never calls setsid, so it is in the default group, whose file reads empty. So is every process of a
    # runner that starts commands without a session of their own: the CI run once failed here when the bench
    # took that empty file for an error and ordered nothing.
    assert Path("/proc/1/autogroup").read_text() == ""
    assert cores.set_group_nice(1, 19) is False
    burner = subprocess.Popen([sys.executable, "-c", BURN], start_new_session=True)
    try:
        assert cores.set_group_nice(burner.pid, 19) is cores.autogroups_decide(burner.pid)
    finally:
        burner.kill()
        burner.wait(10)


def test_a_process_that_has_gone_is_not_an_error() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    child.wait(10)
    assert cores.set_group_nice(child.pid, 19) is False
