"""Export InceptionResnetV1 with the project's recognition weights to ONNX, for the "onnx" engine.

Build time only (`facepipe models prepare`, the image's export stage): torch and facenet-pytorch are the
source of truth. The file gets a dynamic batch axis (the recognizer embeds chunks of any size) and a sidecar
(cloud/operator/models/onnx_export.py) that also names the source weights by sha256, so a new weights file is
re-exported and an unchanged one is not.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from cloud.functions.recognition.embedder import onnx_model_path, standardise
from cloud.functions.recognition.torch_network import load_model
from cloud.operator.models.onnx_export import export
from cloud.operator.models.sidecar import file_sha256, is_up_to_date, sidecar_path

INPUT_NAME = "crops"  # float32 (n, 3, 160, 160), standardised as cloud.functions.recognition.embedder.standardise does
OUTPUT_NAME = "embeddings"  # float32 (n, 512), L2-normalised by the graph itself


def export_resnet(weights: Path, models_dir: Path, parity_crops: Sequence[np.ndarray]) -> dict[str, object]:
    """`models_dir/inception_resnet_v1.onnx` from the state_dict at `weights`, its parity with torch measured on
    `parity_crops` (real uint8 RGB face crops: the whole set as one batch, and the first crop alone). Returns the
    sidecar's content; when the file is up to date and was exported from the same weights, nothing is redone."""
    out = onnx_model_path(models_dir)
    weights_sha256 = _weights_sha256(weights)
    if is_up_to_date(out):
        record: dict[str, object] = json.loads(sidecar_path(out).read_text())
        source = record.get("source")
        if isinstance(source, dict) and source.get("weights_sha256") == weights_sha256:
            return record
    batch = standardise(parity_crops)
    if not len(batch):
        raise ValueError("parity needs at least one face crop")
    source = {"model": "facenet_pytorch.InceptionResnetV1(classify=False)",
              "facenet_pytorch": version("facenet-pytorch"), "weights": weights.name,
              "weights_sha256": weights_sha256}
    return export(load_model(weights), out, example=torch.from_numpy(batch[:2]), input_name=INPUT_NAME,
                  output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: "faces"}, OUTPUT_NAME: {0: "faces"}},
                  source=source, parity_inputs=[batch, batch[:1]])


def _weights_sha256(weights: Path) -> str:
    """From the weights' own sidecar (`facepipe models prepare` and `fetch` record it), else hashed."""
    if not weights.is_file():
        raise FileNotFoundError(f"weights file {weights} not found: build it with `facepipe models prepare`")
    try:
        recorded = json.loads(sidecar_path(weights).read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return file_sha256(weights)
    return recorded if isinstance(recorded, str) else file_sha256(weights)
