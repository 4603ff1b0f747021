"""Face embeddings with facenet-pytorch's InceptionResnetV1, run by one of two engines, from local files only.

- "onnx": the network exported to `<models_dir>/inception_resnet_v1.onnx` (cloud/operator/models/resnet_export.py), run
  by ONNX Runtime; torch is never imported.
- "torch": facenet-pytorch's own forward pass on the weights file (a state_dict `facepipe models prepare`
  builds offline): the reference the export is checked against.

Nothing is downloaded here and there is no fallback to random weights: a missing or broken file is an error.
Each engine tags its embeddings with the file it computes from (`model_tag`), so a gallery enrolled by one
computation is never matched against probes of another (cloud/functions/recognition/gallery.py, GalleryModelMismatch).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from cloud.functions.contracts import CROP_SIZE
from cloud.functions.recognition.gallery import EMBEDDING_SIZE
from cloud.functions.recognition.network import ONNX_FILE, Network

Engine = Literal["onnx", "torch"]


def onnx_model_path(models_dir: str | Path) -> Path:
    return Path(models_dir) / ONNX_FILE


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
    """`engine` "torch" runs `weights_path`; "onnx" runs `<models_dir>/inception_resnet_v1.onnx`. `threads`:
    intra-op threads (None: the engine's default)."""

    def __init__(self, weights_path: str | Path = "", threads: int | None = None, *, engine: Engine = "torch",
                 models_dir: str | Path = "") -> None:
        network: Network
        if engine == "onnx":
            from cloud.functions.onnx_session import models_folder
            from cloud.functions.recognition.onnx_network import OnnxNetwork

            network = OnnxNetwork(onnx_model_path(models_folder(models_dir)), threads or os.cpu_count() or 1)
        elif engine == "torch":
            from cloud.functions.recognition.torch_network import TorchNetwork

            network = TorchNetwork(Path(weights_path), threads)
        else:
            raise ValueError(f"engine must be 'onnx' or 'torch', not {engine!r}")
        self.engine = engine
        self.weights_path = Path(weights_path)
        self.models_dir = Path(models_dir)
        # Galleries record this tag so embeddings from another computation are never compared with ours.
        self.model_tag = network.tag
        self._network = network

    def embed(self, crops: Sequence[np.ndarray], chunk_size: int = 32) -> np.ndarray:
        """L2-normalised float32 (n, 512) embeddings of uint8 RGB face crops, at most `chunk_size` crops per
        forward pass: a pass's memory grows with its crops (~4 MB each), so a big batch never needs more than
        one chunk's worth."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
        embeddings = np.empty((len(crops), EMBEDDING_SIZE), dtype=np.float32)
        for start in range(0, len(crops), chunk_size):
            batch = standardise(crops[start : start + chunk_size])
            embeddings[start : start + len(batch)] = self._network(batch)  # both graphs end with F.normalize
        return embeddings
