"""The detection handler's ingest-queue door: image events (inline, S3-referenced) and S3 notifications,
delivered as the SQS event source mapping delivers them (real messages received from a moto queue), with
bad records reported as batch item failures while their batch-mates are detected and queued."""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from cloud.functions import aws
from cloud.functions.contracts import IMAGE_EVENT_METADATA, ImageEvent, RequestMessage, S3ImageRef, s3_request_id
from cloud.functions.detection import handler as detection
from cloud.functions.settings import Settings, get_settings
from tests.bad_images import png_claiming
from tests.photos import packaged

REGION = "us-east-1"


@pytest.fixture(scope="module", autouse=True)
def fresh_detector() -> Iterator[None]:
    yield
    detection.get_detector.cache_clear()


REPLY_TO_PREFIX = "facepipe-reply-"


@pytest.fixture
def ingest(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh ingest queue on the same moto server, reply_to queues allowed under REPLY_TO_PREFIX; returns its URL."""
    monkeypatch.setenv("FACEPIPE_REPLY_TO_PREFIX", REPLY_TO_PREFIX)
    get_settings.cache_clear()
    return str(aws.client("sqs").create_queue(QueueName=f"ingest-{uuid.uuid4().hex[:12]}")["QueueUrl"])


def small_jpeg(photo: str = "face_recognition/obama2.jpg", side: int = 640) -> bytes:
    """A real photo scaled so its base64 fits one 256 KiB message."""
    with Image.open(packaged(photo)) as image:
        image = image.convert("RGB")
        image.thumbnail((side, side))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
    return out.getvalue()


def inline(image: bytes, **fields: Any) -> str:
    event = ImageEvent(request_id=str(uuid.uuid4()), device_id="producer-1",
                       image_b64=base64.b64encode(image).decode("ascii"), **fields)
    return event.model_dump_json(exclude_none=True)


def deliver(queue_url: str, bodies: list[str]) -> dict[str, Any]:
    """Send `bodies`, receive them back with every attribute and build the Lambda SQS event of that batch."""
    sqs = aws.client("sqs")
    for body in bodies:
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    messages: list[dict[str, Any]] = []
    while len(messages) < len(bodies):
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"],
                                  WaitTimeSeconds=1).get("Messages", [])
        assert got, f"received {len(messages)} of {len(bodies)}"
        messages += got
    return sqs_event(messages, arn)


def sqs_event(messages: list[dict[str, Any]], arn: str) -> dict[str, Any]:
    return {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": m.get("Attributes", {}), "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
        "eventSource": "aws:sqs", "eventSourceARN": arn, "awsRegion": REGION} for m in messages]}


def queued(settings: Settings) -> dict[str, RequestMessage]:
    sqs, found = aws.client("sqs"), {}
    while True:
        reply = sqs.receive_message(QueueUrl=settings.request_queue_url, MaxNumberOfMessages=10)
        if not reply.get("Messages"):
            return found
        for message in reply["Messages"]:
            request = RequestMessage.model_validate_json(message["Body"])
            found[request.request_id] = request
            sqs.delete_message(QueueUrl=settings.request_queue_url, ReceiptHandle=message["ReceiptHandle"])


def failures(result: dict[str, Any]) -> set[str]:
    return {item["itemIdentifier"] for item in result["batchItemFailures"]}


def test_inline_and_s3_image_events_are_detected_and_queued(settings: Settings, ingest: str) -> None:
    photo = packaged("face_recognition/obama.jpg").read_bytes()  # 280 KB: too big to go inline
    aws.client("s3").put_object(Bucket=settings.bucket, Key="uploads/obama.jpg", Body=photo)
    by_ref = ImageEvent(request_id=str(uuid.uuid4()), device_id="producer-2", reply_to="facepipe-reply-x",
                        image_s3=S3ImageRef(bucket=settings.bucket, key="uploads/obama.jpg"), filename="obama.jpg")
    small = inline(small_jpeg(), frame_timestamp=1767225600.5)
    result = detection.handler(deliver(ingest, [small, by_ref.model_dump_json()]), None)
    assert result == {"batchItemFailures": []}
    requests = queued(settings)
    inline_id = json.loads(small)["request_id"]
    assert set(requests) == {inline_id, by_ref.request_id}
    assert (requests[inline_id].device_id, requests[inline_id].frame_timestamp) == ("producer-1", 1767225600.5)
    referenced = requests[by_ref.request_id]
    assert (referenced.device_id, referenced.reply_to, referenced.filename) == ("producer-2", "facepipe-reply-x",
                                                                               "obama.jpg")
    with Image.open(io.BytesIO(photo)) as image:
        assert (referenced.image_width, referenced.image_height) == image.size
    assert all(len(r.faces) == 1 for r in requests.values())


def test_s3_notifications_of_uploads_are_detected_with_the_documented_request_id(
    settings: Settings, ingest: str
) -> None:
    # The real notification moto's S3 sends for a put under uploads/, as on AWS (and its s3:TestEvent).
    s3, sqs = aws.client("s3"), aws.client("sqs")
    arn = sqs.get_queue_attributes(QueueUrl=ingest, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket=settings.bucket, NotificationConfiguration={"QueueConfigurations": [
        {"QueueArn": arn, "Events": ["s3:ObjectCreated:*"],
         "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "uploads/"}]}}}]})
    key = "uploads/door cam/2026 01 01+obama.jpg"  # notifications URL-encode keys
    put = s3.put_object(Bucket=settings.bucket, Key=key, Body=small_jpeg(),
                        Metadata={"device-id": "door-cam", "reply-to": "facepipe-reply-door"})
    s3.put_object(Bucket=settings.bucket, Key="elsewhere/not-for-us.jpg", Body=small_jpeg())  # no notification
    messages = sqs.receive_message(QueueUrl=ingest, MaxNumberOfMessages=10, AttributeNames=["All"],
                                   WaitTimeSeconds=1)["Messages"]
    assert [json.loads(m["Body"]).get("Event") for m in messages] == ["s3:TestEvent", None]
    event = sqs_event(messages, arn)
    assert detection.handler(event, None) == {"batchItemFailures": []}
    assert detection.handler(event, None) == {"batchItemFailures": []}  # the same notification, redelivered
    version = put.get("VersionId") or put["ETag"]
    expected = s3_request_id(settings.bucket, key, version if version != "null" else put["ETag"])
    sent = [RequestMessage.model_validate_json(m["Body"]) for m in aws.client("sqs").receive_message(
        QueueUrl=settings.request_queue_url, MaxNumberOfMessages=10)["Messages"]]
    assert [r.request_id for r in sent] == [expected, expected]
    assert sent[0].model_dump(exclude={"detected_at", "detect_ms"}) == sent[1].model_dump(
        exclude={"detected_at", "detect_ms"})
    first = sent[0]
    assert (first.device_id, first.reply_to, first.filename) == ("door-cam", "facepipe-reply-door",
                                                                 "2026 01 01+obama.jpg")
    assert len(first.faces) == 1


def test_the_notification_of_an_image_events_object_is_not_detected_twice(settings: Settings, ingest: str) -> None:
    s3 = aws.client("s3")
    put = s3.put_object(Bucket=settings.bucket, Key="uploads/ref.jpg", Body=small_jpeg(),
                        Metadata={IMAGE_EVENT_METADATA: str(uuid.uuid4())})
    notification = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                                 "s3": {"bucket": {"name": settings.bucket},
                                        "object": {"key": "uploads/ref.jpg", "eTag": put["ETag"].strip('"')}}}]}
    assert detection.handler(deliver(ingest, [json.dumps(notification)]), None) == {"batchItemFailures": []}
    assert queued(settings) == {}


def test_s3_request_id_is_uuid5_of_bucket_key_and_version() -> None:
    assert s3_request_id("b", "uploads/a.jpg", "v1") == str(uuid.uuid5(uuid.NAMESPACE_URL, "b/uploads/a.jpg/v1"))
    assert s3_request_id("b", "uploads/a.jpg", '"etag"') == s3_request_id("b", "uploads/a.jpg", "etag")


def test_bad_records_are_batch_failures_and_their_batch_mates_are_queued(settings: Settings, ingest: str) -> None:
    s3 = aws.client("s3")
    s3.put_object(Bucket=settings.bucket, Key="gallery/secret.jpg", Body=small_jpeg())
    s3.put_object(Bucket=settings.bucket, Key="uploads/huge.jpg", Body=bytes(settings.max_body_bytes + 1))

    def by_ref(key: str, bucket: str | None = None) -> str:
        return ImageEvent(request_id=str(uuid.uuid4()), device_id="p",
                          image_s3=S3ImageRef(bucket=bucket or settings.bucket, key=key)).model_dump_json()

    good = [inline(small_jpeg()), inline(small_jpeg("face_recognition/biden.jpg"))]
    bad = {
        "missing S3 object": by_ref("uploads/no-such.jpg"),
        "outside uploads/": by_ref("gallery/secret.jpg"),
        "another bucket": by_ref("uploads/x.jpg", bucket="someone-elses"),
        "object over the byte limit": by_ref("uploads/huge.jpg"),
        "not an image": inline(b"hello, not an image"),
        "PNG claiming 20000x20000": inline(png_claiming(20000, 20000)),
        "truncated JPEG": inline(small_jpeg()[:5000]),
        "both image fields": json.dumps({**json.loads(inline(small_jpeg())),
                                         "image_s3": {"bucket": "b1b", "key": "uploads/k"}}),
        "unknown schema version": json.dumps({**json.loads(inline(small_jpeg())), "schema_version": 2}),
        "not JSON": "hello",
        "bad request id": json.dumps({**json.loads(inline(small_jpeg())), "request_id": "frame-1"}),
        "reply_to outside the prefix": inline(small_jpeg(), reply_to="someone-elses-queue"),
    }
    bodies = [good[0], *bad.values(), good[1]]
    event = deliver(ingest, bodies)
    result = detection.handler(event, None)
    ids = {record["body"]: record["messageId"] for record in event["Records"]}
    assert failures(result) == {ids[body] for body in bad.values()}
    assert set(queued(settings)) == {json.loads(body)["request_id"] for body in good}
