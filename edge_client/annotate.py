"""Annotated pictures: a frame with a box and a 'name distance' label per face (green named, red unknown)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from cloud.functions.contracts import UNKNOWN_NAME, RecognisedFace

JPEG_QUALITY = 85


def annotate(frame_jpeg: bytes, faces: Sequence[RecognisedFace]) -> np.ndarray | None:
    """The decoded frame with the faces drawn on it; None when the JPEG does not decode."""
    image = cv2.imdecode(np.frombuffer(frame_jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None
    scale = max(image.shape[:2]) / 640  # line width and font grow with the frame
    thickness = max(1, round(2 * scale))
    for face in faces:
        x1, y1, x2, y2 = (round(v) for v in face.box)
        color = (0, 0, 255) if face.name == UNKNOWN_NAME else (0, 200, 0)  # BGR: red unknown, green known
        cv2.rectangle(image, (x1, y1), (x2, y2), color, thickness)
        label = face.name if face.distance is None else f"{face.name} {face.distance:.2f}"
        font_scale = 0.6 * scale
        (w, h), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        top = max(0, y1 - h - base - 2)
        cv2.rectangle(image, (x1, top), (x1 + w + 2, top + h + base + 2), color, cv2.FILLED)
        cv2.putText(image, label, (x1 + 1, top + h + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255),
                    thickness, cv2.LINE_AA)
    return image


def annotated_jpeg(frame_jpeg: bytes, faces: Sequence[RecognisedFace]) -> bytes | None:
    """`annotate` encoded as JPEG; None when the frame does not decode or the encoding fails."""
    image = annotate(frame_jpeg, faces)
    if image is None:
        return None
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return encoded.tobytes() if ok else None
