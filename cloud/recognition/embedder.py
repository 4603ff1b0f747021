"""Face embeddings with facenet-pytorch's InceptionResnetV1, from a local weights file only.

The weights file is a state_dict (`facepipe models prepare` builds the CASIA-WebFace one offline). It is
never downloaded here and there is no fallback to random weights: a missing or broken file is an error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from facenet_pytorch import InceptionResnetV1

from cloud.contracts import CROP_SIZE
from cloud.recognition.gallery import EMBEDDING_SIZE


class WeightsMissing(FileNotFoundError):
    """The weights file named in config does not exist."""


class WeightsInvalid(ValueError):
    """The weights file exists but is not an InceptionResnetV1 state_dict."""


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


def standardise(crops: Sequence[np.ndarray]) -> np.ndarray:
    """uint8 RGB HxWx3 crops -> float32 NCHW batch, (x - 127.5) / 128 as MTCNN's post_process does.

    Fixed standardisation is what the converted CASIA-WebFace weights were measured with; per-image
    prewhitening loses accuracy.
    """
    batch = np.empty((len(crops), CROP_SIZE, CROP_SIZE, 3), dtype=np.float32)
    for i, crop in enumerate(crops):
        if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
            raise ValueError(f"crop {i}: expected uint8 HxWx3 RGB, got {crop.dtype} {crop.shape}")
        if crop.shape[:2] != (CROP_SIZE, CROP_SIZE):
            crop = cv2.resize(crop, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA)
        batch[i] = crop
    batch -= 127.5
    batch /= 128.0
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


class Embedder:
    def __init__(self, weights_path: str | Path, threads: int | None = None) -> None:
        path = Path(weights_path)
        if not path.is_file():
            raise WeightsMissing(
                f"weights file {path} not found: build it with `facepipe models prepare --out {path}`"
            )
        if threads is not None:
            torch.set_num_threads(threads)
        self.weights_path = path
        # Galleries record this tag so embeddings from other weights are never compared with ours.
        with path.open("rb") as fh:
            self.model_tag = f"inception_resnet_v1:{hashlib.file_digest(fh, 'sha256').hexdigest()[:16]}"
        self._model = load_model(path)

    def embed(self, crops: Sequence[np.ndarray], chunk_size: int = 32) -> np.ndarray:
        """L2-normalised float32 (n, 512) embeddings of uint8 RGB face crops, at most `chunk_size` crops per
        forward pass: a pass's memory grows with its crops (~4 MB each), so a big batch never needs more than
        one chunk's worth."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
        embeddings = np.empty((len(crops), EMBEDDING_SIZE), dtype=np.float32)
        for start in range(0, len(crops), chunk_size):
            batch = torch.from_numpy(standardise(crops[start : start + chunk_size]))
            with torch.inference_mode():
                embeddings[start : start + len(batch)] = self._model(batch).numpy()  # the model ends with F.normalize
        return embeddings
