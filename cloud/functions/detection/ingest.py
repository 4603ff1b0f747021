"""The ingest queue's door into detection: an SQS batch of image events and S3 notifications.

Each record's body is one of
- an `ImageEvent` (cloud/functions/contracts.py): the image inline (`image_b64`) or in the stack's bucket (`image_s3`);
- an S3 event notification `{"Records": [{"s3": ...}]}` for objects put under `uploads/` (the bucket's
  notification configuration); the request id is `s3_request_id(bucket, key, version-or-etag)`, the device
  id and reply_to come from the object's `x-amz-meta-device-id` / `x-amz-meta-reply-to` metadata;
- S3's `s3:TestEvent` (sent once when the notification is configured): consumed, nothing to answer.
  Neither is the notification of an object with `x-amz-meta-image-event` metadata: an image event
  references it (`facepipe submit --via queue` with an image too big to go inline).

Each image then takes the Function URL's path (`handler.process`: the same byte, pixel and format checks,
detection, the request queue), so its answer reaches the response queue like an upload's. A record that
fails (not an image event, an unreadable or oversized image, an object outside uploads/) is reported in
`batchItemFailures`: SQS redelivers it and moves it to the ingest DLQ after maxReceiveCount receives,
while its batch-mates are answered.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from cloud.functions import aws
from cloud.functions.contracts import (
    DEVICE_ID_METADATA,
    IMAGE_EVENT_METADATA,
    REPLY_TO_METADATA,
    S3_DEVICE_ID,
    UPLOADS_PREFIX,
    ImageEvent,
    S3ImageRef,
    is_valid_device_id,
    reply_to_refusal,
    s3_request_id,
)
from cloud.functions.detection.pipeline import Rejected, Upload, logger, metrics, process
from cloud.functions.detection.senders import check_sender, s3_principal
from cloud.functions.settings import Settings, get_settings

processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


class BadImageEvent(ValueError):
    """A record that will not get better on redelivery; it ends in the ingest DLQ."""


def _checked_ref(ref: S3ImageRef, settings: Settings) -> None:
    """Detection reads images from its own bucket's uploads/ only (its IAM policy allows no more)."""
    if ref.bucket != settings.bucket:
        raise BadImageEvent(f"image_s3 bucket {ref.bucket!r} is not this stack's bucket")
    if not ref.key.startswith(UPLOADS_PREFIX):
        raise BadImageEvent(f"image_s3 key {ref.key[:120]!r} is not under {UPLOADS_PREFIX}")


def _version_args(version_id: str | None) -> dict[str, str]:
    return {"VersionId": version_id} if version_id else {}


def head_upload(ref: S3ImageRef, settings: Settings, etag: str | None = None) -> dict[str, Any]:
    """HEAD of an uploads/ object (its size, metadata and version), refusing one over the byte limit
    before anything is downloaded. `etag` pins the object when no version id is known."""
    _checked_ref(ref, settings)
    extra = _version_args(ref.version_id) or ({"IfMatch": etag} if etag else {})
    head: dict[str, Any] = aws.client("s3").head_object(Bucket=ref.bucket, Key=ref.key, **extra)
    size = int(head["ContentLength"])
    if size > settings.max_body_bytes:
        raise BadImageEvent(
            f"s3://{ref.bucket}/{ref.key[:120]} is {size} bytes; the limit is {settings.max_body_bytes}")
    return head


def read_upload(ref: S3ImageRef, head: dict[str, Any], settings: Settings) -> bytes:
    """The object's bytes: exactly the version HEAD saw, never more than the byte limit."""
    version = ref.version_id or head.get("VersionId")
    extra = _version_args(version) or {"IfMatch": head["ETag"]}
    stored = aws.client("s3").get_object(Bucket=ref.bucket, Key=ref.key, **extra)
    with stored["Body"] as body:
        data: bytes = body.read(settings.max_body_bytes + 1)
    if len(data) > settings.max_body_bytes:
        raise BadImageEvent(f"s3://{ref.bucket}/{ref.key[:120]} grew beyond {settings.max_body_bytes} bytes")
    return data


def from_image_event(event: ImageEvent, settings: Settings, sender: str | None = None) -> Upload:
    check_sender(event.device_id, event.reply_to, sender, settings)  # before anything is read
    if event.image_b64 is not None:
        try:
            image = base64.b64decode(event.image_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadImageEvent("image_b64 is not valid base64") from exc
    else:
        assert event.image_s3 is not None  # the model guarantees exactly one
        image = read_upload(event.image_s3, head_upload(event.image_s3, settings), settings)
    return Upload(request_id=event.request_id, device_id=event.device_id, frame_timestamp=event.frame_timestamp,
                  reply_to=_checked_reply_to(event.reply_to, settings), body=image, filename=event.filename)


def from_s3_record(record: dict[str, Any], settings: Settings) -> Upload | None:
    """One S3 notification record as an upload; None for an event that is not an object creation."""
    if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
        return None
    try:
        bucket = str(record["s3"]["bucket"]["name"])
        stored = record["s3"]["object"]
        key = unquote_plus(str(stored["key"]))  # S3 URL-encodes keys in notifications
        etag = str(stored["eTag"])
    except (KeyError, TypeError) as exc:
        raise BadImageEvent(f"S3 notification record without {exc}") from exc
    ref = S3ImageRef(bucket=bucket, key=key, version_id=stored.get("versionId") or None)
    head = head_upload(ref, settings, etag=f'"{etag.strip(chr(34))}"')
    version = ref.version_id or head.get("VersionId")
    if version in (None, "null"):  # an unversioned bucket (S3 says "null"): the ETag identifies the object
        version = None
    metadata = {k.lower(): v for k, v in head.get("Metadata", {}).items()}
    if IMAGE_EVENT_METADATA in metadata:  # an image event names this object and gets the answer
        logger.info("uploads/ object of image event %s: its notification is not detected again",
                    metadata[IMAGE_EVENT_METADATA][:40])
        return None
    device_id = metadata.get(DEVICE_ID_METADATA, S3_DEVICE_ID)
    if not is_valid_device_id(device_id):
        raise BadImageEvent(f"x-amz-meta-{DEVICE_ID_METADATA} {device_id[:80]!r} is not a valid device id")
    reply_to = _checked_reply_to(metadata.get(REPLY_TO_METADATA), settings)
    check_sender(device_id, reply_to, s3_principal(record), settings)
    pinned = S3ImageRef(bucket=bucket, key=key, version_id=version)
    return Upload(request_id=s3_request_id(bucket, key, version or etag), device_id=device_id,
                  frame_timestamp=head["LastModified"].timestamp() if "LastModified" in head else None,
                  reply_to=reply_to, body=read_upload(pinned, head, settings), filename=key.rsplit("/", 1)[-1])


def _checked_reply_to(name: str | None, settings: Settings) -> str | None:
    """The URL's check: a reply_to outside the prefix fails its record here, never reaching the recognizer."""
    refusal = None if name is None else reply_to_refusal(name, settings.reply_to_prefix)
    if refusal:
        raise BadImageEvent(refusal)
    return name


def uploads_of(body: str, settings: Settings, sender: str | None = None) -> list[Upload]:
    """The images one ingest-queue message (sent by SQS SenderId `sender`) asks to detect (none for S3's test
    event). Where devices are identities, an event naming a device must be that device's (senders.py)."""
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise BadImageEvent(f"message body is not JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise BadImageEvent("message body is not a JSON object")
    if data.get("Event") == "s3:TestEvent":
        return []
    if "Records" in data:
        records = data["Records"] if isinstance(data["Records"], list) else []
        return [u for u in (from_s3_record(r, settings) for r in records if isinstance(r, dict)) if u is not None]
    return [from_image_event(ImageEvent.model_validate(data), settings, sender)]  # ValidationError is a ValueError


def detect_record(record: SQSRecord) -> list[str]:
    """powertools' record handler: detect every image of one message, or raise (-> batchItemFailures)."""
    settings = get_settings()
    metrics.add_metric(name="IngestMessages", unit=MetricUnit.Count, value=1)
    try:
        uploads = uploads_of(record.body, settings, record.attributes.get("SenderId"))
        for upload in uploads:
            logger.set_correlation_id(upload.request_id)
            process(upload)
            logger.info("image event queued", extra={"device_id": upload.device_id})
    except Exception as exc:
        reason = f"{exc.status} {exc}" if isinstance(exc, Rejected) else f"{type(exc).__name__}: {exc}"
        logger.warning("ingest message %s not processed (receive count %s): %s", record.message_id,
                       record.attributes.get("ApproximateReceiveCount"), reason[:500])
        metrics.add_metric(name="IngestFailed", unit=MetricUnit.Count, value=1)
        raise
    finally:
        logger.set_correlation_id(None)
    return [upload.request_id for upload in uploads]


def handle_batch(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The ingest queue's batch: partial batch response, so a bad record does not hold up the others."""
    result = process_partial_response(event=event, record_handler=detect_record, processor=processor,
                                      context=context)
    return dict(result)
