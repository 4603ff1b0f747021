"""The detector's engines: the ONNX path runs without torch, the export writes checked files once, and the
detection function picks its engine from the settings (issue 24). Parity itself: test_mtcnn_parity.py."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from cloud.functions.detection import handler as detection
from cloud.functions.detection.detector import Detector
from cloud.functions.settings import get_settings
from cloud.operator.models import export
from cloud.operator.models.sidecar import file_sha256, sidecar_path
from tests.photos import PACKAGED, REPO, packaged, weights_path

NETWORKS = ("pnet.onnx", "rnet.onnx", "onet.onnx", "inception_resnet_v1.onnx")


def test_the_onnx_path_never_imports_torch(onnx_models: Path) -> None:
    script = f"""
import sys
import cloud.functions.detection.handler
from cloud.functions.detection.detector import Detector
from pathlib import Path
from PIL import Image
detector = Detector(engine="onnx", models_dir=Path({str(onnx_models)!r}))
faces = detector.detect(Image.open({str(packaged("insightface/t1.jpg"))!r}))
print(len(faces), sorted(m for m in ("torch", "torchvision", "facenet_pytorch") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    assert done.stdout.split() == ["6", "[]"], done.stdout + done.stderr


def test_models_export_records_each_file_and_keeps_what_is_up_to_date(
    onnx_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN an exported models dir in which rnet.onnx went stale (its sidecar names another sha256)
    models = tmp_path / "models"
    shutil.copytree(onnx_models, models)
    before = {name: (models / name).stat().st_mtime_ns for name in NETWORKS}
    (models / "rnet.onnx").write_bytes(b"truncated")

    # WHEN `facepipe models export` runs on it
    parser = argparse.ArgumentParser()
    export.add_arguments(parser)
    args = parser.parse_args(["--weights", str(weights_path()), "--models-dir", str(models), "--photos", str(PACKAGED)])
    assert export.run(args) == 0

    # THEN each of the four files is what its sidecar says, checked against torch; only the stale one is rewritten
    assert capsys.readouterr().out.count("max |onnx - torch|") == len(NETWORKS)
    for name in NETWORKS:
        record = json.loads(sidecar_path(models / name).read_text())
        assert record["sha256"] == file_sha256(models / name) and record["opset"] == 17
        parity = record["parity"]
        assert isinstance(parity, dict) and parity["inputs"] >= 1 and parity["max_abs_difference"] < 1e-4
        if name != "rnet.onnx":
            assert (models / name).stat().st_mtime_ns == before[name], f"{name} was up to date but rewritten"
    assert (models / "rnet.onnx").stat().st_size > 100_000  # the stale one was exported again


def test_the_onnx_engine_without_its_files_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="facepipe models export"):
        Detector(engine="onnx", models_dir=tmp_path)


def test_the_detection_function_runs_the_engine_its_settings_name(onnx_models: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEPIPE_ENGINE", "onnx")
    monkeypatch.setenv("FACEPIPE_MODELS_DIR", str(onnx_models))
    get_settings.cache_clear()
    detection.get_detector.cache_clear()
    try:
        detector = detection.get_detector()
        assert detector.engine == "onnx"
        with Image.open(packaged("face_recognition/obama.jpg")) as image:
            assert len(detector.detect(image.convert("RGB"))) == 1
    finally:
        get_settings.cache_clear()
        detection.get_detector.cache_clear()
