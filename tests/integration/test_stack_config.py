"""LocalStack refuses configurations that would expose it or cannot work, before starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud.emulator.stack import LocalStack, StackConfig
from tests.photos import models_dir


def test_only_loopback_addresses_are_accepted() -> None:
    with pytest.raises(ValueError, match="loopback"):
        LocalStack(StackConfig(host="0.0.0.0", models_dir=models_dir())).start()


def test_missing_weights_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        LocalStack(StackConfig(engine="torch", weights_path=missing)).start()


def test_missing_onnx_files_name_the_folder_and_the_export(tmp_path: Path) -> None:
    (tmp_path / "pnet.onnx").write_bytes((models_dir() / "pnet.onnx").read_bytes())  # one of the four
    with pytest.raises(FileNotFoundError) as refused:
        LocalStack(StackConfig(models_dir=tmp_path)).start()  # the default engine: onnx
    assert str(refused.value) == (f"rnet.onnx, onet.onnx, inception_resnet_v1.onnx missing under {tmp_path} "
                                  "(engine onnx): `facepipe models export --models-dir DIR` (or `make models`) "
                                  "writes them")
