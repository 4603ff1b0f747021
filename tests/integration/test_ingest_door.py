"""The ingest door on the real local stack: image events (inline and by S3 reference) and photos put under
uploads/ are answered on the response queue with the right names; bad events end in the ingest DLQ after
maxReceiveCount receives while their batch-mates are answered."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest

from cloud.functions.contracts import IMAGE_EVENT_METADATA, ImageEvent, S3ImageRef, s3_request_id
from tests.bad_images import png_claiming
from tests.conftest import INGEST_VISIBILITY_S, MAX_RECEIVE_COUNT, Mailbox
from tests.photos import SHARED, requires_shared

pytestmark = [pytest.mark.slow, requires_shared]
OBAMA, BIDEN = SHARED / "identities" / "barack_obama" / "2.jpg", SHARED / "identities" / "joe_biden" / "2.jpg"


def event(reply_queue_url: str, **image: Any) -> ImageEvent:
    return ImageEvent(request_id=str(uuid.uuid4()), device_id="ingest-test", filename="probe.jpg",
                      reply_to=reply_queue_url.rsplit("/", 1)[1], **image)


def test_inline_and_s3_referenced_events_are_answered_with_the_right_names(
    local_stack: Any, ingest_door: Any, reply_queue: str
) -> None:
    sqs, s3 = local_stack.client("sqs"), local_stack.client("s3")
    inline = event(reply_queue, image_b64=base64.b64encode(OBAMA.read_bytes()).decode("ascii"))
    by_ref = event(reply_queue, image_s3=S3ImageRef(bucket=local_stack.bucket, key="uploads/by-ref/biden.jpg"))
    # Under uploads/, the object is also notified; its metadata says an image event has it (answered once).
    s3.put_object(Bucket=local_stack.bucket, Key="uploads/by-ref/biden.jpg", Body=BIDEN.read_bytes(),
                  Metadata={IMAGE_EVENT_METADATA: by_ref.request_id})
    for message in (inline, by_ref):
        sqs.send_message(QueueUrl=ingest_door.url, MessageBody=message.model_dump_json(exclude_none=True))
    mailbox = Mailbox(sqs, reply_queue)
    answers = {m.request_id: mailbox.wait_for(m.request_id, timeout=60) for m in (inline, by_ref)}
    assert answers[inline.request_id]["result"] == "barack_obama"
    assert answers[by_ref.request_id]["result"] == "joe_biden"
    assert all(a["device_id"] == "ingest-test" and a["filename"] == "probe.jpg" for a in answers.values())
    time.sleep(2 * INGEST_VISIBILITY_S)  # the notification of the referenced object was consumed, not answered
    assert sqs.receive_message(QueueUrl=reply_queue, WaitTimeSeconds=1).get("Messages", []) == []


def test_a_photo_put_under_uploads_is_answered_with_its_documented_request_id_once_per_version(
    local_stack: Any, ingest_door: Any, reply_queue: str
) -> None:
    sqs, s3 = local_stack.client("sqs"), local_stack.client("s3")
    key = f"uploads/{uuid.uuid4().hex[:8]}/barack obama.jpg"
    put = s3.put_object(Bucket=local_stack.bucket, Key=key, Body=OBAMA.read_bytes(),
                        Metadata={"device-id": "dropbox", "reply-to": reply_queue.rsplit("/", 1)[1]})
    request_id = s3_request_id(local_stack.bucket, key, put["VersionId"])  # the bucket is versioned
    mailbox = Mailbox(sqs, reply_queue)
    answer = mailbox.wait_for(request_id, timeout=60)
    assert (answer["result"], answer["device_id"], answer["filename"]) == ("barack_obama", "dropbox",
                                                                           "barack obama.jpg")
    # The same notification delivered again (SQS is at-least-once): the same request id, the same answer.
    notification = {"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                                 "s3": {"bucket": {"name": local_stack.bucket},
                                        "object": {"key": key.replace(" ", "+"), "eTag": put["ETag"].strip('"'),
                                                   "versionId": put["VersionId"]}}}]}
    sqs.send_message(QueueUrl=ingest_door.url, MessageBody=json.dumps(notification))
    del mailbox.received[request_id]
    again = mailbox.wait_for(request_id, timeout=60)
    assert mailbox.deliveries[request_id] == 2
    assert {k: v for k, v in again.items() if k != "timings"} == {k: v for k, v in answer.items() if k != "timings"}


def test_bad_events_end_in_the_ingest_dlq_while_batch_mates_are_answered(
    local_stack: Any, ingest_door: Any, reply_queue: str
) -> None:
    sqs = local_stack.client("sqs")
    dlq = local_stack.resources.queues["IngestDeadLetterQueue"].url
    good = event(reply_queue, image_b64=base64.b64encode(OBAMA.read_bytes()).decode("ascii"))
    bad = {
        "missing S3 object": event(reply_queue, image_s3=S3ImageRef(bucket=local_stack.bucket,
                                                                    key=f"uploads/{uuid.uuid4()}.jpg")),
        "not an image": event(reply_queue, image_b64=base64.b64encode(b"hello, not an image").decode("ascii")),
        "oversized": event(reply_queue, image_b64=base64.b64encode(png_claiming(20000, 20000)).decode("ascii")),
    }
    sqs.send_message_batch(QueueUrl=ingest_door.url, Entries=[
        {"Id": str(i), "MessageBody": m.model_dump_json(exclude_none=True)}
        for i, m in enumerate([*bad.values(), good])])
    assert Mailbox(sqs, reply_queue).wait_for(good.request_id, timeout=60)["result"] == "barack_obama"
    wanted = {m.request_id for m in bad.values()}
    dead: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + (MAX_RECEIVE_COUNT + 2) * INGEST_VISIBILITY_S + 30
    while set(dead) != wanted and time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                           AttributeNames=["All"]).get("Messages", []):
            request_id = json.loads(message["Body"]).get("request_id")
            if request_id in wanted:
                dead[request_id] = message
                sqs.delete_message(QueueUrl=dlq, ReceiptHandle=message["ReceiptHandle"])
    assert set(dead) == wanted, f"in the DLQ: {sorted(dead)}; expected {sorted(wanted)}"
    assert all(int(m["Attributes"]["ApproximateReceiveCount"]) >= MAX_RECEIVE_COUNT for m in dead.values())
