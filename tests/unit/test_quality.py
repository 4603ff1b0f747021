"""The quality record measured in detection, on real photos: width in the frame, sharpness of the aligned crop,
the detector's probability; carried on the request queue."""

from __future__ import annotations

import time

import pytest
from PIL import Image, ImageFilter

from cloud.functions.contracts import FaceQuality, RequestMessage
from cloud.functions.detection.detector import Detector, Face
from cloud.functions.detection.enqueue import Frame, build_message
from tests.photos import packaged


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(min_probability=0.9, max_side=1280)


def _one_face(detector: Detector, image: Image.Image) -> tuple[Face, FaceQuality]:
    faces = detector.detect(image)
    assert len(faces) == 1 and faces[0].quality is not None
    return faces[0], faces[0].quality


def _photo() -> Image.Image:
    with Image.open(packaged("face_recognition/obama.jpg")) as image:
        return image.convert("RGB")


def test_quality_is_the_face_width_the_crop_sharpness_and_the_probability(detector: Detector) -> None:
    face, quality = _one_face(detector, _photo())
    assert quality.width_px == pytest.approx(face.box[2] - face.box[0], abs=0.1)
    assert quality.probability == pytest.approx(face.probability, abs=1e-6)
    assert quality.sharpness > 100  # a sharp portrait (measured: 500; blurred by 4 px: 19; at 40 px wide: 54)


def test_a_blurred_face_scores_lower_sharpness(detector: Detector) -> None:
    photo = _photo()
    _, sharp = _one_face(detector, photo)
    _, blurred = _one_face(detector, photo.filter(ImageFilter.GaussianBlur(4)))
    assert blurred.sharpness < 0.5 * sharp.sharpness
    assert blurred.width_px == pytest.approx(sharp.width_px, rel=0.15)  # the same face, as wide


def test_a_small_face_is_narrower_and_its_upscaled_crop_less_sharp(detector: Detector) -> None:
    photo = _photo()
    _, full = _one_face(detector, photo)
    small = photo.resize((photo.width // 6, photo.height // 6), Image.Resampling.BOX)
    _, tiny = _one_face(detector, small)
    assert tiny.width_px == pytest.approx(full.width_px / 6, rel=0.2)
    assert tiny.sharpness < 0.5 * full.sharpness


def test_the_request_message_carries_each_face_quality(detector: Detector) -> None:
    with Image.open(packaged("insightface/t1.jpg")) as image:
        faces = detector.detect(image.convert("RGB"))
    frame = Frame(request_id="00000000-0000-4000-8000-000000000000", device_id="cam", frame_timestamp=None,
                  reply_to=None, width=640, height=480, detect_ms=1.0, detected_at=time.time())
    message = build_message(frame, faces, [b"jpeg"] * len(faces), in_s3=False)
    assert len(message.faces) == 6
    for sent in message.faces:  # measured for each face, from its own box and crop
        assert sent.quality is not None
        assert sent.quality.width_px == pytest.approx(sent.box[2] - sent.box[0], abs=0.06)
        assert sent.quality.probability == sent.probability and sent.quality.sharpness > 0
    assert len({f.quality.sharpness for f in message.faces if f.quality}) == 6  # not one record copied to all
    assert RequestMessage.model_validate_json(message.model_dump_json()) == message
