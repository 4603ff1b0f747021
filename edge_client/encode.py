"""Encode: scale a frame down to the configured longer side and compress it to JPEG."""

from __future__ import annotations

import cv2
import numpy as np

from cloud.functions.contracts import MAX_REQUEST_BODY_BYTES


class EncodeError(ValueError):
    """The frame cannot become an acceptable upload body."""


def encode_jpeg(image: np.ndarray, max_side: int, quality: int) -> bytes:
    """JPEG bytes of `image` with its longer side at most `max_side` (never upscaled)."""
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise EncodeError("JPEG encoding failed")
    body = buffer.tobytes()
    if len(body) > MAX_REQUEST_BODY_BYTES:  # the Function URL would refuse it; better to know here
        raise EncodeError(f"encoded frame is {len(body)} bytes, over the {MAX_REQUEST_BODY_BYTES} byte request limit")
    return body
