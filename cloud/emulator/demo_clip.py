"""Build the demo's video from real photos: for each photo, a still hold, then a slow pan.

A fresh machine has no footage of its own, so the demo films the sample photos that PyPI packages ship.
The hold lets the edge's motion gate show its effect (still frames are gated out), the pan gives it
moving frames to send.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

# The grey the photos are filmed on: the scene with nobody in it.
BACKDROP = 40


def _fit(image: np.ndarray, width: int, height: int, fill: float) -> np.ndarray:
    """Scale the whole photo to `fill` of the frame, keeping its aspect ratio."""
    scale = fill * min(width / image.shape[1], height / image.shape[0])
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def pan_frames(
    image: np.ndarray, width: int, height: int, hold_frames: int, pan_frames_count: int
) -> Iterator[np.ndarray]:
    """The whole photo on a dark backdrop: a still hold, then the camera pans so the photo slides across."""
    photo = _fit(image, width, height, fill=0.85)
    ph, pw = photo.shape[:2]
    top = (height - ph) // 2
    travel = (width - pw) // 2 + pw // 8  # slide from left of centre to right of centre, partly out of frame
    centre = (width - pw) // 2
    offsets = [centre - travel] * hold_frames + [
        centre - travel + round(2 * travel * step / pan_frames_count) for step in range(1, pan_frames_count + 1)
    ]
    for x in offsets:
        frame = np.full((height, width, 3), BACKDROP, dtype=np.uint8)
        left, right = max(x, 0), min(x + pw, width)
        frame[top : top + ph, left:right] = photo[:, left - x : right - x]
        yield frame


def write_pan_clip(
    photos: Sequence[Path],
    out: Path,
    width: int = 640,
    height: int = 480,
    fps: float = 10.0,
    hold_s: float = 1.0,
    pan_s: float = 2.0,
) -> int:
    """Write the clip (MJPG in an .avi container: decodable by every OpenCV build); returns the frame count."""
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {out}")
    frames = 0
    try:
        for photo in photos:
            image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
            if image is None:
                raise FileNotFoundError(f"cannot read photo {photo}")
            for frame in pan_frames(image, width, height, round(hold_s * fps), round(pan_s * fps)):
                writer.write(np.ascontiguousarray(frame))
                frames += 1
    finally:
        writer.release()
    return frames
