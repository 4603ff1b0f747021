"""cloud/memory.py: the malloc settings the handlers apply in their init phase are ones glibc accepts."""

from __future__ import annotations

import platform

import pytest

from cloud.memory import keep_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's parameters are glibc's")
def test_glibc_takes_both_settings() -> None:
    assert keep_freed_memory() is True
