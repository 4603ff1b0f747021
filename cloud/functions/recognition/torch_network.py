"""Engine "torch": facenet-pytorch's InceptionResnetV1 forward pass on the project's weights file.

The reference the ONNX export is measured against, and the export's source (cloud/operator/models/resnet_export.py).
Only this engine and the export import this module: the ONNX path never loads torch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from facenet_pytorch import InceptionResnetV1

from cloud.functions.recognition.network import WeightsInvalid, WeightsMissing


def load_model(path: Path) -> InceptionResnetV1:
    """InceptionResnetV1(classify=False) in eval mode with every parameter taken from `path`."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a non-checkpoint file
        raise WeightsInvalid(f"{path} is not a torch state_dict ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict):
        raise WeightsInvalid(f"{path} holds a {type(state).__name__}, not a state_dict")
    # facenet-pytorch's own downloads carry a classification head (logits.*) that embeddings never use.
    state = {key: value for key, value in state.items() if not key.startswith("logits.")}
    model = InceptionResnetV1(classify=False)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first_line = str(exc).splitlines()[0]
        raise WeightsInvalid(f"{path} is not an InceptionResnetV1 state_dict: {first_line}") from exc
    return model.eval()


class TorchNetwork:
    """The tag names the weights file by sha256 (`inception_resnet_v1:<sha16>`), as galleries enrolled before
    the ONNX engine record it; the ONNX engine's tag names its own file, so the two never mix."""

    def __init__(self, weights: Path, threads: int | None) -> None:
        if not weights.is_file():
            raise WeightsMissing(
                f"weights file {weights} not found: build it with `facepipe models prepare --out {weights}`"
            )
        if threads is not None:
            torch.set_num_threads(threads)
        with weights.open("rb") as fh:
            self.tag = f"inception_resnet_v1:{hashlib.file_digest(fh, 'sha256').hexdigest()[:16]}"
        self.model = load_model(weights)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return np.asarray(self.model(torch.from_numpy(batch)).numpy())
