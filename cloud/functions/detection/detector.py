"""Face detection: MTCNN (facenet-pytorch's networks) over every face of a frame, with aligned 160x160 crops.

Two engines run the same MTCNN: "onnx" (the exported networks in ONNX Runtime, with the stages around them in
numpy: cloud/functions/detection/mtcnn.py; no torch) and "torch" (facenet-pytorch's own MTCNN, the reference the
other is checked against; torch is imported only when it is chosen).

Large frames are optionally downscaled before detection (MTCNN's cost grows with the pixel count); boxes and
landmarks are mapped back to the original image, and the crops are cut from the original so recognition sees
full-resolution faces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
from PIL import Image

from cloud.functions.contracts import CROP_SIZE, FaceQuality
from cloud.functions.detection import mtcnn, quality

if TYPE_CHECKING:
    import onnxruntime as ort

Engine = Literal["onnx", "torch"]

# Context around the box, in pixels of the 160 px crop: FaceNet 20180408 (CASIA-WebFace) was trained and
# validated on crops with margin 32. Measured on the shared photos: margin 0 leaves a same-person pair at
# 1.18 (above the nearest stranger), margin 32 separates same (<= 1.00) from different (>= 1.036) people.
CROP_MARGIN = 32


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original image pixels
    probability: float
    landmarks: tuple[tuple[float, float], ...]  # eyes, nose, mouth corners; original pixels
    # uint8 RGB 160x160x3; excluded from ==/hash because arrays have no truth value.
    crop: np.ndarray = field(compare=False, repr=False)
    quality: FaceQuality | None = field(default=None, compare=False)  # of `crop` (cloud/functions/detection/quality.py)


@dataclass(frozen=True)
class Detection:
    faces: list[Face]  # most probable first
    dropped: int  # found above the probability threshold but beyond the face limit: not cropped, not queued


class Detector:
    """One MTCNN per instance: build once, call often. `engine` "onnx" reads pnet/rnet/onet.onnx from
    `models_dir` (`facepipe models export` writes them); "torch" loads facenet-pytorch's (weights in its wheel)."""

    def __init__(
        self, min_probability: float = 0.9, max_side: int = 1280, threads: int | None = None,
        engine: Engine = "torch", models_dir: Path | None = None,
    ) -> None:
        self.min_probability = min_probability
        self.max_side = max_side
        self.engine = engine
        if engine == "onnx":
            self._mtcnn: _Mtcnn = _OnnxMtcnn(models_dir, threads)
        elif engine == "torch":
            self._mtcnn = _TorchMtcnn(threads)
        else:
            raise ValueError(f"unknown engine {engine!r}: onnx or torch")

    def detect(self, image: Image.Image) -> list[Face]:
        """Every face with probability >= min_probability, most probable first."""
        return self.detect_capped(image, None).faces

    def detect_capped(self, image: Image.Image, max_faces: int | None) -> Detection:
        """The `max_faces` most probable faces (ties: the larger first), cropped; the rest only counted."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        small, scale = self._downscale(image)
        if min(small.size) < mtcnn.MIN_FACE_SIZE:
            # MTCNN's image pyramid starts at its minimum face size: a thinner frame holds no face it
            # can find, and facenet-pytorch raises on it instead of returning nothing.
            return Detection([], 0)
        faces_found = self._mtcnn.find(small)
        found = []
        for box, prob, pts in zip(faces_found.boxes, faces_found.probabilities, faces_found.landmarks, strict=True):
            if float(prob) < self.min_probability:
                continue
            box = np.asarray(box, dtype=np.float64) / np.array([*scale, *scale])
            pts = np.asarray(pts, dtype=np.float64) / np.array(scale)
            found.append((float(prob), float((box[2] - box[0]) * (box[3] - box[1])), box, pts))
        # MTCNN gives many clear faces the same probability (0.9999...): size breaks the tie.
        found.sort(key=lambda item: (item[0], item[1]), reverse=True)
        kept = found if max_faces is None else found[:max_faces]
        faces = [self._face(image, prob, box, pts) for prob, _, box, pts in kept]
        return Detection(faces, len(found) - len(kept))

    def _face(self, image: Image.Image, prob: float, box: np.ndarray, pts: np.ndarray) -> Face:
        corners = (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
        crop = self._mtcnn.crop(image, box)  # only kept faces are cropped: the dropped cost nothing more
        return Face(box=corners, probability=prob, landmarks=tuple((float(x), float(y)) for x, y in pts), crop=crop,
                    quality=quality.measure(corners, prob, crop))

    def _downscale(self, image: Image.Image) -> tuple[Image.Image, tuple[float, float]]:
        longest = max(image.size)
        if not self.max_side or longest <= self.max_side:
            return image, (1.0, 1.0)
        scale = self.max_side / longest
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        resized = image.resize(size, Image.Resampling.BILINEAR)
        # Map back with the per-axis ratios actually used (rounding makes them differ slightly).
        return resized, (resized.width / image.width, resized.height / image.height)


class _Mtcnn(Protocol):
    def find(self, image: Image.Image) -> mtcnn.Found: ...

    def crop(self, image: Image.Image, box: np.ndarray) -> np.ndarray:
        """The face with CROP_MARGIN, CROP_SIZE square, uint8 HWC RGB."""
        ...


class _OnnxMtcnn:
    def __init__(self, models_dir: Path | None, threads: int | None) -> None:
        from cloud.functions.onnx_session import (  # onnxruntime: only for this engine
            EXPORT_HINT,
            models_folder,
            session,
        )

        paths = [models_folder(models_dir) / name for name in mtcnn.NETWORK_FILES]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"no {', '.join(missing)}: {EXPORT_HINT}")
        # threads None: ONNX Runtime's default, one per physical core (as torch's).
        runs = [_runner(session(path, threads or 0)) for path in paths]
        self._networks = mtcnn.Networks(*runs)

    def find(self, image: Image.Image) -> mtcnn.Found:
        return mtcnn.detect_faces(np.asarray(image), self._networks)

    def crop(self, image: Image.Image, box: np.ndarray) -> np.ndarray:
        return mtcnn.extract_face(image, box, image_size=CROP_SIZE, margin=CROP_MARGIN)


def _runner(session: ort.InferenceSession) -> mtcnn.Network:
    def network(data: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(session.run(None, {mtcnn.INPUT_NAME: data}))

    return network


class _TorchMtcnn:
    """facenet-pytorch's MTCNN, detection and extraction as it does them: the reference."""

    def __init__(self, threads: int | None) -> None:
        import torch
        from facenet_pytorch import MTCNN

        if threads is not None:
            torch.set_num_threads(threads)  # process-wide: a Lambda container runs one detector
        self._torch = torch
        self._mtcnn = MTCNN(
            keep_all=True, post_process=False, image_size=CROP_SIZE, margin=CROP_MARGIN, device=torch.device("cpu")
        )

    def find(self, image: Image.Image) -> mtcnn.Found:
        boxes, probs, points = self._mtcnn.detect(image, landmarks=True)
        if boxes is None:
            return mtcnn.Found(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
        return mtcnn.Found(np.asarray(boxes, np.float32), np.asarray(probs, np.float32), np.asarray(points, np.float32))

    def crop(self, image: Image.Image, box: np.ndarray) -> np.ndarray:
        from facenet_pytorch.models.utils.detect_face import extract_face

        tensor = extract_face(image, box, image_size=CROP_SIZE, margin=CROP_MARGIN)  # float 0..255, CHW
        return tensor.permute(1, 2, 0).round().clamp(0, 255).to(self._torch.uint8).numpy()
