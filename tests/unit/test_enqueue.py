"""Request-queue messages against a real moto server over HTTP: inline crops, S3 overflow, size limits."""

from __future__ import annotations

import base64
import threading
import time
import uuid
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cloud.functions import aws
from cloud.functions.contracts import RequestMessage
from cloud.functions.detection.detector import Detector, Face
from cloud.functions.detection.enqueue import UPLOAD_THREADS, Frame, MessageTooLarge, send_frame
from cloud.functions.images import decode_jpeg
from cloud.functions.settings import Settings, get_settings
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
    scope = f"crops/{frame.device_id}/{frame.request_id}"
    assert [f.crop_s3_key for f in message.faces] == [f"{scope}/{i}.jpg" for i in range(len(faces))]
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


class _Overlapping:
    """The real S3 client, but each put_object first waits until `together` puts are under way at once:
    uploads made one after another never get there (the barrier times out and the send fails)."""

    def __init__(self, s3: Any, together: int) -> None:
        self._s3 = s3
        self._barrier = threading.Barrier(together, timeout=10)
        self._lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.threads: set[str] = set()

    def put_object(self, **kwargs: Any) -> Any:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.threads.add(threading.current_thread().name)
        try:
            if not self._barrier.broken:
                self._barrier.wait()
            return self._s3.put_object(**kwargs)
        finally:
            with self._lock:
                self.in_flight -= 1


def test_overflow_crops_upload_concurrently_on_a_bounded_pool(
    settings: Settings, group_faces: tuple[Image.Image, list[Face]], monkeypatch: pytest.MonkeyPatch
) -> None:
    image, faces = group_faces
    monkeypatch.setenv("FACEPIPE_MAX_MESSAGE_BYTES", "20000")  # forces the S3 path for the six faces
    get_settings.cache_clear()
    small = get_settings()
    frame = _frame(image)
    assert len(faces) >= 2
    s3 = _Overlapping(aws.client("s3"), together=2)
    send_frame(frame, faces, sqs=aws.client("sqs"), s3=s3, settings=small)
    assert 2 <= s3.most_in_flight <= UPLOAD_THREADS and 2 <= len(s3.threads) <= UPLOAD_THREADS
    [message] = _received(small)
    assert sorted(_crop_keys(small)) == sorted(f.crop_s3_key for f in message.faces)
