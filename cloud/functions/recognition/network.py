"""What the two InceptionResnetV1 engines share, below the embedder and both of them (so neither engine's module
imports the embedder that picks it): the protocol an engine's network follows, the ONNX file's name and the
errors a missing or broken model file raises."""

from __future__ import annotations

from typing import Protocol

import numpy as np

ONNX_FILE = "inception_resnet_v1.onnx"


class WeightsMissing(FileNotFoundError):
    """The weights (or exported model) file named in config does not exist."""


class WeightsInvalid(ValueError):
    """The file exists but is not an InceptionResnetV1 state_dict (or its ONNX export)."""


class Network(Protocol):
    """InceptionResnetV1(classify=False) as one engine runs it."""

    tag: str  # names the computation: the file it runs, by sha256

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """float32 NCHW standardised crops -> float32 (n, 512) embeddings."""
        ...
