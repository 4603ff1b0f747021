"""cloud/functions/memory.py: the malloc settings the handlers apply in their init phase are ones glibc accepts."""

from __future__ import annotations

import platform

import pytest

from cloud.functions.memory import keep_freed_memory, return_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's parameters are glibc's")
def test_glibc_takes_both_settings() -> None:
    assert keep_freed_memory() is True


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith("VmRSS:"))) / 1024


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_freed_heap_goes_back_to_the_kernel_only_when_asked() -> None:
    # GIVEN the handlers' settings (freed memory kept), and 200 MB of 1 MB blocks allocated, touched and freed
    assert keep_freed_memory() is True
    blocks = [bytearray(b"x" * (1 << 20)) for _ in range(200)]
    del blocks
    kept = _rss_mb()
    # WHEN the heap is trimmed, THEN what was freed leaves the process (a load's leftovers, after a model loads)
    assert return_freed_memory() is True
    assert kept - _rss_mb() > 100, f"{kept:.0f} MB resident before the trim, {_rss_mb():.0f} MB after"
