"""Request-queue messages against a real moto server over HTTP: inline crops, S3 overflow, size limits."""

from __future__ import annotations

import base64
import time
import uuid

import numpy as np
import pytest
from PIL import Image

from cloud import aws
from cloud.contracts import RequestMessage
from cloud.detection.detector import Detector, Face
from cloud.detection.enqueue import Frame, MessageTooLarge, send_frame
from cloud.images import decode_jpeg
from cloud.settings import Settings, get_settings
from tests.photos import packaged


@pytest.fixture(scope="module")
def group_faces() -> tuple[Image.Image, list[Face]]:
    with Image.open(packaged("insightface/t1.jpg")) as photo:
        image = photo.convert("RGB")
    return image, Detector().detect(image)


def _frame(image: Image.Image) -> Frame:
    return Frame(
        request_id=str(uuid.uuid4()), device_id="cam-1", frame_timestamp=1767225600.5, reply_to=None,
        width=image.width, height=image.height, detect_ms=12.5, detected_at=time.time(),
    )


def _received(settings: Settings) -> list[RequestMessage]:
    reply = aws.client("sqs").receive_message(QueueUrl=settings.request_queue_url, MaxNumberOfMessages=10)
    return [RequestMessage.model_validate_json(m["Body"]) for m in reply.get("Messages", [])]


def _crop_keys(settings: Settings) -> list[str]:
    listing = aws.client("s3").list_objects_v2(Bucket=settings.bucket, Prefix="crops/")
    return [obj["Key"] for obj in listing.get("Contents", [])]


def _send(frame: Frame, faces: list[Face], settings: Settings) -> None:
    send_frame(frame, faces, sqs=aws.client("sqs"), s3=aws.client("s3"), settings=settings)


def test_crops_travel_inline_when_they_fit(settings: Settings, group_faces: tuple[Image.Image, list[Face]]) -> None:
    image, faces = group_faces
    frame = _frame(image)
    _send(frame, faces, settings)
    [message] = _received(settings)
    assert (message.request_id, message.device_id, message.frame_timestamp) == (
        frame.request_id, "cam-1", 1767225600.5,
    )
    assert (message.image_width, message.image_height, len(message.faces)) == (image.width, image.height, len(faces))
    for wire, face in zip(message.faces, faces, strict=True):
        assert wire.crop_s3_key is None and wire.crop_jpeg_b64 is not None
        assert np.allclose(wire.box, face.box, atol=0.01) and np.allclose(wire.landmarks, face.landmarks, atol=0.01)
        crop = decode_jpeg(base64.b64decode(wire.crop_jpeg_b64), (160, 160))
        assert crop.shape == (160, 160, 3)
        assert np.abs(crop.astype(int) - face.crop.astype(int)).mean() < 4  # JPEG of the same pixels
    assert _crop_keys(settings) == []


def test_overflow_moves_crops_to_s3(
    settings: Settings, group_faces: tuple[Image.Image, list[Face]], monkeypatch: pytest.MonkeyPatch
) -> None:
    image, faces = group_faces
    # Six inline crops need ~45 KB; a 20 KB limit forces the S3 path (the 256 KiB case: handler tests).
    monkeypatch.setenv("FACEPIPE_MAX_MESSAGE_BYTES", "20000")
    get_settings.cache_clear()
    small = get_settings()
    frame = _frame(image)
    _send(frame, faces, small)
    [message] = _received(small)
    assert [f.crop_s3_key for f in message.faces] == [f"crops/{frame.request_id}/{i}.jpg" for i in range(len(faces))]
    assert all(f.crop_jpeg_b64 is None for f in message.faces)
    assert sorted(_crop_keys(small)) == sorted(f.crop_s3_key for f in message.faces)
    stored = aws.client("s3").get_object(Bucket=small.bucket, Key=message.faces[0].crop_s3_key)["Body"].read()
    assert np.abs(decode_jpeg(stored, (160, 160)).astype(int) - faces[0].crop.astype(int)).mean() < 4


def test_too_large_even_with_s3_queues_and_uploads_nothing(
    settings: Settings, group_faces: tuple[Image.Image, list[Face]], monkeypatch: pytest.MonkeyPatch
) -> None:
    image, faces = group_faces
    monkeypatch.setenv("FACEPIPE_MAX_MESSAGE_BYTES", "1500")
    get_settings.cache_clear()
    with pytest.raises(MessageTooLarge, match="even with crops in S3"):
        _send(_frame(image), faces, get_settings())
    assert _received(settings) == [] and _crop_keys(settings) == []


def test_a_frame_without_faces_is_still_queued(settings: Settings) -> None:
    with Image.open(packaged("skimage/astronaut.png")) as photo:
        shuttle = photo.convert("RGB").crop((0, 300, 512, 512))  # the lower part: no face
    faces = Detector().detect(shuttle)
    assert faces == []
    frame = _frame(shuttle)
    _send(frame, faces, settings)
    [message] = _received(settings)
    assert message.request_id == frame.request_id and message.faces == []
