"""One request-queue message per frame: metadata plus, per face, box, probability, landmarks and crop.

Crops travel inline (base64 JPEG) while the message fits `max_message_bytes` in UTF-8 bytes (SQS's
unit; moto counts characters, so we measure ourselves). A frame with many faces overflows: then
every crop goes to S3 at `crops/<device_id>/<request_id>/<i>.jpg` and the message carries the keys. The keys
depend only on the device and request id, so a retried upload of the same frame overwrites instead of piling up.
The handler has already capped the faces (FACEPIPE_MAX_FACES; the message model refuses more than
MAX_FACES_PER_FRAME), so the uploads are bounded too; they run a few at a time, not one by one.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cloud.functions.aws import utf8_size
from cloud.functions.contracts import AnswerSchema, DetectedFace, RequestMessage, crop_key
from cloud.functions.detection.detector import Face
from cloud.functions.images import encode_jpeg
from cloud.functions.settings import Settings

CROP_JPEG_QUALITY = 90
# Crop uploads at once: botocore's client keeps 10 connections (max_pool_connections), so 8 never wait for one.
UPLOAD_THREADS = 8


class MessageTooLarge(ValueError):
    """The frame's message exceeds the queue limit even with every crop moved to S3."""


@dataclass(frozen=True)
class Frame:
    """What the handler knows about an accepted upload, besides its faces."""

    request_id: str
    device_id: str
    frame_timestamp: float | None
    reply_to: str | None
    width: int
    height: int
    detect_ms: float
    detected_at: float
    filename: str | None = None  # a JSON upload's or image event's filename, carried to the answer
    faces_dropped: int = 0  # found beyond the face limit: counted in the message, not sent
    answer_schema: AnswerSchema = 1


@dataclass(frozen=True)
class Sent:
    message_id: str
    message_bytes: int
    crops_in_s3: bool


def build_message(frame: Frame, faces: Sequence[Face], crops: Sequence[bytes], in_s3: bool) -> RequestMessage:
    """The message with crops inline (base64) or, when `in_s3`, as S3 keys."""
    wire = [
        DetectedFace(
            # Hundredths of a pixel are plenty and keep the message small.
            box=[round(v, 2) for v in face.box],
            probability=round(min(max(face.probability, 0.0), 1.0), 6),
            landmarks=[[round(x, 2), round(y, 2)] for x, y in face.landmarks],
            quality=face.quality,
            crop_s3_key=crop_key(frame.device_id, frame.request_id, i) if in_s3 else None,
            crop_jpeg_b64=None if in_s3 else base64.b64encode(jpeg).decode("ascii"),
        )
        for i, (face, jpeg) in enumerate(zip(faces, crops, strict=True))
    ]
    return RequestMessage(
        request_id=frame.request_id,
        device_id=frame.device_id,
        frame_timestamp=frame.frame_timestamp,
        detected_at=frame.detected_at,
        detect_ms=round(frame.detect_ms, 3),
        image_width=frame.width,
        image_height=frame.height,
        reply_to=frame.reply_to,
        faces=wire,
        filename=frame.filename,
        faces_dropped=frame.faces_dropped,
        answer_schema=frame.answer_schema,
    )


def plan(frame: Frame, faces: Sequence[Face], max_bytes: int) -> tuple[str, list[tuple[str, bytes]]]:
    """The message body to send and the (key, JPEG) uploads it needs first; checked before uploading."""
    crops = [encode_jpeg(face.crop, CROP_JPEG_QUALITY) for face in faces]
    body = build_message(frame, faces, crops, in_s3=False).model_dump_json()
    if utf8_size(body) <= max_bytes:
        return body, []
    body = build_message(frame, faces, crops, in_s3=True).model_dump_json()
    size = utf8_size(body)
    if size > max_bytes:
        raise MessageTooLarge(
            f"{len(faces)} faces make a {size}-byte queue message even with crops in S3; "
            f"the limit is {max_bytes} bytes"
        )
    return body, [(crop_key(frame.device_id, frame.request_id, i), jpeg) for i, jpeg in enumerate(crops)]


def send_frame(frame: Frame, faces: Sequence[Face], *, sqs: Any, s3: Any, settings: Settings) -> Sent:
    """Upload overflow crops (if any), then put the frame's message on the request queue."""
    if not settings.request_queue_url:
        raise RuntimeError("FACEPIPE_REQUEST_QUEUE_URL is not set")
    body, uploads = plan(frame, faces, settings.max_message_bytes)
    if uploads and not settings.bucket:
        raise RuntimeError("FACEPIPE_BUCKET is not set, and this frame's crops do not fit in one message")
    upload_crops(s3, settings.bucket, uploads)
    reply = sqs.send_message(QueueUrl=settings.request_queue_url, MessageBody=body)
    return Sent(message_id=reply["MessageId"], message_bytes=utf8_size(body), crops_in_s3=bool(uploads))


def upload_crops(s3: Any, bucket: str, uploads: Sequence[tuple[str, bytes]]) -> None:
    """Put every crop, UPLOAD_THREADS at a time (boto3 clients are thread-safe); the first failure raises."""
    if not uploads:
        return

    def put(upload: tuple[str, bytes]) -> None:
        s3.put_object(Bucket=bucket, Key=upload[0], Body=upload[1], ContentType="image/jpeg")

    with ThreadPoolExecutor(max_workers=min(UPLOAD_THREADS, len(uploads)), thread_name_prefix="crop-upload") as pool:
        list(pool.map(put, uploads))  # list(): re-raises the first upload's exception here
