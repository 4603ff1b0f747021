"""A face's quality record, measured where the face is found: its width in the frame, the sharpness of its aligned
crop and the detector's probability. The edge's track decision weighs each sighting by it."""

from __future__ import annotations

import cv2
import numpy as np

from cloud.functions.contracts import FaceQuality


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the grey crop (Pech-Pacheco et al. 2000): edges give high values; motion blur,
    defocus and a small face upscaled to the crop size all lower it."""
    grey = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def measure(box: tuple[float, float, float, float], probability: float, crop: np.ndarray) -> FaceQuality:
    return FaceQuality(width_px=round(max(0.0, box[2] - box[0]), 1), sharpness=round(sharpness(crop), 1),
                       probability=round(min(max(probability, 0.0), 1.0), 6))
