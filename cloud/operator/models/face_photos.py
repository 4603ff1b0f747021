"""Real photos and their MTCNN face crops, which check every model file built here against its reference.

Shared by `facepipe models prepare` (the weights against cv2.dnn) and `export` (each ONNX file against torch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

VERIFY_CROPS = 12  # enough faces to catch a wrong mapping; cv2.dnn runs them one at a time
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}


class PrepareError(Exception):
    """A one-line, user-facing reason why a model file (the weights, an ONNX export) cannot be built."""


def photo_files(photos: Path) -> list[Path]:
    files = sorted(p for p in photos.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES) if photos.is_dir() else []
    if not files:
        raise PrepareError(
            f"no photos under {photos} to verify the conversion with: run `make photos` or pass --verify-photos DIR"
        )
    return files


def face_crops(files: list[Path], limit: int) -> tuple[list[np.ndarray], list[Path]]:
    """Up to `limit` uint8 RGB 160x160 MTCNN face crops from `files`, and the files they came from."""
    from facenet_pytorch import MTCNN
    from PIL import Image

    mtcnn = MTCNN(image_size=160, keep_all=True, post_process=False)
    crops: list[np.ndarray] = []
    used: list[Path] = []
    for file in files:
        with Image.open(file) as image:
            faces = mtcnn(image.convert("RGB"))
        if faces is None:
            continue
        used.append(file)
        crops.extend(faces.permute(0, 2, 3, 1).round().clamp(0, 255).byte().numpy())
        if len(crops) >= limit:
            break
    if not crops:
        raise PrepareError(f"MTCNN found no face in {len(files)} photos ({files[0].parent}, ...)")
    return crops[:limit], used
