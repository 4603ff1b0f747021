"""The sample events under events/ and a backend on a moto server they run against as stored: queues, a
bucket, a gallery, and real face crops at the S3 keys the SQS batch's messages point at."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from cloud.functions import aws
from cloud.functions.contracts import MAX_QUEUE_MESSAGE_BYTES, UNKNOWN_NAME, RequestMessage
from cloud.functions.detection.detector import Detector
from cloud.functions.enrollment import enroll_photos
from cloud.functions.images import encode_jpeg
from cloud.functions.recognition.embedder import Embedder
from tests.photos import REPO, packaged

FUNCTION_URL_EVENT = REPO / "events" / "function_url_frame.json"
SQS_BATCH_EVENT = REPO / "events" / "sqs_request_batch.json"
# What the batch's S3 crop pointers get, in order: a face of someone enrolled, then a stranger's.
CROP_PHOTOS = ["face_recognition/obama2.jpg", "matplotlib/grace_hopper.jpg"]
EXPECTED_NAMES = ["barack_obama", UNKNOWN_NAME]
ENROLLED = {"barack_obama": ["face_recognition/obama.jpg"]}


def load(path: Path) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(path.read_text())
    return event


def batch_requests(event: dict[str, Any]) -> list[RequestMessage]:
    return [RequestMessage.model_validate_json(record["body"]) for record in event["Records"]]


def crop_keys(event: dict[str, Any]) -> list[str]:
    return [face.crop_s3_key for request in batch_requests(event) for face in request.faces if face.crop_s3_key]


@dataclass(frozen=True)
class Backend:
    request_queue_url: str
    response_queue_url: str
    bucket: str
    env: dict[str, str]  # the FACEPIPE_* settings both handlers read


def create_backend(models_dir: Path) -> Backend:
    """Fresh queues and a bucket on the moto server cloud.functions.aws points at (see tests.moto_env); the handlers run
    the default engine, onnx, on the networks exported in `models_dir`."""
    suffix = uuid.uuid4().hex[:12]
    sqs, s3 = aws.client("sqs"), aws.client("s3")
    request_queue = sqs.create_queue(QueueName=f"requests-{suffix}",
                                     Attributes={"MaximumMessageSize": str(MAX_QUEUE_MESSAGE_BYTES)})["QueueUrl"]
    response_queue = sqs.create_queue(QueueName=f"responses-{suffix}")["QueueUrl"]
    bucket = f"facepipe-{suffix}"
    s3.create_bucket(Bucket=bucket)
    env = {
        "FACEPIPE_REQUEST_QUEUE_URL": request_queue,
        "FACEPIPE_RESPONSE_QUEUE_URL": response_queue,
        "FACEPIPE_BUCKET": bucket,
        "FACEPIPE_GALLERY_URI": f"s3://{bucket}/gallery/gallery.npz",
        "FACEPIPE_ENGINE": "onnx",
        "FACEPIPE_MODELS_DIR": str(models_dir),
        "FACEPIPE_THREADS": "2",
    }
    return Backend(request_queue, response_queue, bucket, env)


def stock(backend: Backend, detector: Detector, embedder: Embedder) -> None:
    """Real crops at the SQS batch's S3 keys (JPEG, as the detection side stores them) and a gallery."""
    keys = crop_keys(load(SQS_BATCH_EVENT))
    assert len(keys) == len(CROP_PHOTOS), keys
    for key, photo in zip(keys, CROP_PHOTOS, strict=True):
        faces = detector.detect(Image.open(packaged(photo)).convert("RGB"))
        assert len(faces) == 1, photo
        aws.client("s3").put_object(Bucket=backend.bucket, Key=key, Body=encode_jpeg(faces[0].crop),
                                    ContentType="image/jpeg")
    people = {name: [packaged(photo) for photo in photos] for name, photos in ENROLLED.items()}
    report = enroll_photos(backend.env["FACEPIPE_GALLERY_URI"], embedder.weights_path, people,
                           detector=detector, embedder=embedder)
    assert report.enrolled == {name: len(photos) for name, photos in ENROLLED.items()}
