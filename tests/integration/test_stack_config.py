"""LocalStack refuses configurations that would expose it or cannot work, before starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud.local.stack import LocalStack, StackConfig
from tests.photos import weights_path


def test_only_loopback_addresses_are_accepted() -> None:
    with pytest.raises(ValueError, match="loopback"):
        LocalStack(StackConfig(host="0.0.0.0", weights_path=weights_path())).start()


def test_missing_weights_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        LocalStack(StackConfig(weights_path=missing)).start()
