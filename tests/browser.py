"""Debian's chromium, the real browser the status-page tests and `make demo` drive. `make test` installs it as
root; in CI (CI set) a missing browser is an error, elsewhere its tests skip with the reason."""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("CI"):
    raise RuntimeError("CI run without chromium: `make test` installs it (apt-get install chromium)")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs a real browser: apt-get install chromium")
