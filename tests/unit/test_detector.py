"""MTCNN detector on real photos: face counts, geometry in original pixels, crops, downscale mapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cloud.functions.detection.detector import CROP_MARGIN, Detector, Face
from tests.photos import SHARED, packaged, requires_shared, shared_manifest


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(min_probability=0.9, max_side=1280)


def _rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _check_geometry(face: Face, size: tuple[int, int]) -> None:
    x1, y1, x2, y2 = face.box
    width, height = size
    assert -0.05 * width < x1 < x2 < 1.05 * width and -0.05 * height < y1 < y2 < 1.05 * height
    assert len(face.landmarks) == 5
    for x, y in face.landmarks:  # eyes, nose, mouth corners all lie inside the face box
        assert x1 <= x <= x2 and y1 <= y <= y2
    assert face.crop.shape == (160, 160, 3) and face.crop.dtype == np.uint8


@pytest.mark.parametrize(
    ("name", "expected"),
    [("face_recognition/obama.jpg", 1), ("insightface/t1.jpg", 6), ("skimage/astronaut.png", 1)],
)
def test_packaged_photos(detector: Detector, name: str, expected: int) -> None:
    image = _rgb(packaged(name))
    faces = detector.detect(image)
    assert len(faces) == expected
    probabilities = [f.probability for f in faces]
    assert probabilities == sorted(probabilities, reverse=True)
    assert min(probabilities) >= 0.9
    for face in faces:
        _check_geometry(face, image.size)


def test_threshold_only_drops_less_probable_faces() -> None:
    image = _rgb(packaged("insightface/t1.jpg"))
    loose = Detector(min_probability=0.5, max_side=0).detect(image)
    strict = Detector(min_probability=0.99, max_side=0).detect(image)
    assert all(f.probability >= 0.99 for f in strict)
    assert [f.box for f in strict] == [f.box for f in loose if f.probability >= 0.99]


def test_downscale_maps_boxes_back_and_crops_from_the_original() -> None:
    image = _rgb(packaged("insightface/t1.jpg"))  # 1280 px wide
    full = Detector(max_side=0).detect(image)
    small = Detector(max_side=640).detect(image)
    assert len(small) == len(full)
    for face in small:
        nearest = min(full, key=lambda f: np.abs(np.subtract(f.box, face.box)).sum())
        size = nearest.box[2] - nearest.box[0]
        # Same face, same original-pixel coordinates, within a tenth of its width.
        assert np.abs(np.subtract(nearest.box, face.box)).max() < 0.1 * size
        assert np.abs(np.subtract(nearest.landmarks, face.landmarks)).max() < 0.1 * size
        # The crop is the original-resolution region of the mapped box, not the downscaled one.
        # CROP_MARGIN is in pixels of the 160 px crop, so in the original it scales with the box.
        x1, y1, x2, y2 = face.box
        mx = CROP_MARGIN * (x2 - x1) / (160 - CROP_MARGIN)
        my = CROP_MARGIN * (y2 - y1) / (160 - CROP_MARGIN)
        box = (int(max(x1 - mx / 2, 0)), int(max(y1 - my / 2, 0)),
               int(min(x2 + mx / 2, image.width)), int(min(y2 + my / 2, image.height)))
        expected = np.asarray(image.crop(box).resize((160, 160), Image.Resampling.BILINEAR))
        assert np.abs(expected.astype(int) - face.crop.astype(int)).mean() < 1


@requires_shared
def test_shared_photos_face_counts(detector: Detector) -> None:
    wrong = []
    for row in shared_manifest():
        folder = row["file"].split("/")[0]
        if folder not in ("identities", "noface", "group"):
            continue
        expected = 1 if folder == "identities" else int(row["faces"])
        found = len(detector.detect(_rgb(SHARED / row["file"])))
        if found != expected:
            wrong.append(f"{row['file']}: {found} faces, expected {expected}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    ("crop", "max_side"),
    [((0, 0, 16, 16), 0), ((0, 200, 1280, 219), 0), ((0, 200, 1280, 230), 640)],
    ids=["16x16", "1280x19", "thin after downscale"],
)
def test_frames_thinner_than_the_smallest_face_have_no_faces(crop: tuple[int, int, int, int], max_side: int) -> None:
    # MTCNN cannot look for a face smaller than 20 px; facenet-pytorch raises on such frames.
    strip = _rgb(packaged("insightface/t1.jpg")).crop(crop)
    assert Detector(max_side=max_side).detect(strip) == []
