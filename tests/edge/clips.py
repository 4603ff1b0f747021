"""Camera-like clips built from real photos (never synthetic faces): a head cut from a real photo, scaled,
moved across a real background, optionally blurred, written as an MJPG .avi (every OpenCV build reads it).

- `passage_clip`: people walking slowly across a real photo with no face in it (one event each);
- `small_face_clip`: one head about 40 px wide, slightly blurred, pasted into the frames of the shared
  real video (a camera several metres away).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@functools.cache
def face_box(photo: Path) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the most probable face the backend's own detector (MTCNN) finds in the photo."""
    from PIL import Image

    from cloud.functions.detection.detector import Detector

    faces = Detector().detect(Image.open(photo))
    if not faces:
        raise ValueError(f"no face found in {photo}")
    x1, y1, x2, y2 = faces[0].box
    return round(x1), round(y1), round(x2 - x1), round(y2 - y1)


def head(photo: Path, face_width: int) -> np.ndarray:
    """The photo cut around its face (plus a third of a face all round), scaled so the face is
    `face_width` pixels wide."""
    image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(photo)
    x, y, w, h = face_box(photo)
    x1, y1 = max(0, x - w // 3), max(0, y - h // 3)
    x2, y2 = min(image.shape[1], x + w + w // 3), min(image.shape[0], y + h + h // 3)
    crop = image[y1:y2, x1:x2]
    scale = face_width / w
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    return cv2.resize(crop, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


@dataclass(frozen=True)
class Walker:
    """A head crossing the frame from (x0, y) to (x1, y) between t0 and t1 seconds (centre coordinates),
    growing from `scale0` to 1 times its size (walking towards the camera)."""

    image: np.ndarray
    t0: float
    t1: float
    x0: float
    x1: float
    y: float
    scale0: float = 1.0

    def position(self, t: float) -> tuple[int, int] | None:
        if not self.t0 <= t <= self.t1:
            return None
        share = self._share(t)
        return round(self.x0 + (self.x1 - self.x0) * share), round(self.y)

    def _share(self, t: float) -> float:
        return (t - self.t0) / max(self.t1 - self.t0, 1e-6)

    def head_at(self, t: float) -> np.ndarray:
        scale = self.scale0 + (1.0 - self.scale0) * self._share(t)
        if scale == 1.0:
            return self.image
        size = (max(1, round(self.image.shape[1] * scale)), max(1, round(self.image.shape[0] * scale)))
        return cv2.resize(self.image, size, interpolation=cv2.INTER_AREA)


def _paste(frame: np.ndarray, image: np.ndarray, centre: tuple[int, int]) -> None:
    h, w = image.shape[:2]
    left, top = centre[0] - w // 2, centre[1] - h // 2
    fx1, fy1 = max(0, left), max(0, top)
    fx2, fy2 = min(frame.shape[1], left + w), min(frame.shape[0], top + h)
    if fx1 < fx2 and fy1 < fy2:
        frame[fy1:fy2, fx1:fx2] = image[fy1 - top : fy2 - top, fx1 - left : fx2 - left]


def motion_blur(image: np.ndarray, length: int) -> np.ndarray:
    """Horizontal motion blur over `length` pixels (a head moving during the exposure)."""
    kernel = np.full((1, length), 1.0 / length, dtype=np.float32)
    return cv2.filter2D(image, -1, kernel)


def write_clip(backgrounds: Sequence[np.ndarray], walkers: Sequence[Walker], out: Path, fps: float,
               blur_sigma: float = 0.0, blur_px: int = 0) -> int:
    """One frame per background (at `fps`) with the walkers pasted in (their heads motion-blurred over
    `blur_px`), the frame then blurred by `blur_sigma` (focus); returns the frame count."""
    height, width = backgrounds[0].shape[:2]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {out}")
    try:
        for index, background in enumerate(backgrounds):
            frame = background.copy()
            for walker in walkers:
                centre = walker.position(index / fps)
                if centre is not None:
                    image = walker.head_at(index / fps)
                    _paste(frame, motion_blur(image, blur_px) if blur_px > 1 else image, centre)
            if blur_sigma:
                frame = cv2.GaussianBlur(frame, (0, 0), blur_sigma)
            writer.write(np.ascontiguousarray(frame))
    finally:
        writer.release()
    return len(backgrounds)


def still_background(photo: Path, width: int, height: int, frames: int) -> list[np.ndarray]:
    image = cv2.imread(str(photo), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(photo)
    return [cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)] * frames


def video_frames(video: Path, fps: float, seconds: float) -> list[np.ndarray]:
    """Frames of a real video resampled to `fps` for `seconds` (or until it ends)."""
    capture = cv2.VideoCapture(str(video))
    native = capture.get(cv2.CAP_PROP_FPS) or 30.0
    wanted = {round(i * native / fps) for i in range(round(fps * seconds))}
    frames, index = [], 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        if index in wanted:
            frames.append(image)
        index += 1
    capture.release()
    return frames


def passage_clip(people: Sequence[tuple[Path, float, float]], background: Path, out: Path, fps: float = 5.0,
                 seconds: float = 6.0, face_width: int = 110) -> int:
    """Each (photo, t0, t1): that person walks slowly across a 640x480 real no-face photo from t0 to t1.
    People are given their own lane (left to right, one above the other)."""
    walkers = [
        Walker(head(photo, face_width), t0, t1, 180 + 60 * lane, 460 - 60 * lane, 150 + 190 * (lane % 2))
        for lane, (photo, t0, t1) in enumerate(people)
    ]
    return write_clip(still_background(background, 640, 480, round(fps * seconds)), walkers, out, fps)


def small_face_clip(photo: Path, video: Path, out: Path, fps: float = 5.0, seconds: float = 8.0,
                    face_width: tuple[int, int] = (30, 48), blur_sigma: float = 1.0, blur_px: int = 5) -> int:
    """One head walking slowly across the real video's frames towards the camera (its face growing from
    face_width[0] to face_width[1] px wide), motion-blurred over `blur_px` and slightly out of focus."""
    backgrounds = video_frames(video, fps, seconds)
    walker = Walker(head(photo, face_width[1]), 0.0, seconds, 120, 520, 250, face_width[0] / face_width[1])
    return write_clip(backgrounds, [walker], out, fps, blur_sigma, blur_px)
