"""Poison messages on the request queue next to good ones, through the real recognizer: the good ones are
answered, each poison message is reported as a batch item failure, redelivered, and after maxReceiveCount
receives sits in the request DLQ; `facepipe dlq list` says why; after the fix `facepipe dlq redrive` moves it
back and it is answered, once."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest

from cloud.functions.contracts import HEADER_REPLY_TO
from tests.conftest import Mailbox, drain_queue, post_frame, queue_depth
from tests.dlq import list_dlq, run_dlq, visible
from tests.photos import packaged

pytestmark = pytest.mark.slow

GOOD = {"barack_obama": "face_recognition/obama2.jpg", "joe_biden": "face_recognition/biden.jpg"}
POISON_SOURCE = "face_recognition/obama3.jpg"  # its detection message loses its crop


def wait_until_dead_lettered(sqs: Any, dlq_url: str, count: int, timeout: float) -> float:
    started = time.monotonic()
    while visible(sqs, dlq_url) < count:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"fewer than {count} poison messages reached the DLQ within {timeout} s")
        time.sleep(1)
    return time.monotonic() - started


def discard(sqs: Any, dlq_url: str, body: str) -> None:
    """Delete the DLQ message with this body (an operator giving up on it); the others stay visible."""
    messages = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=30,
                                   WaitTimeSeconds=1)["Messages"]
    for message in messages:
        if message["Body"] == body:
            sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
        else:
            sqs.change_message_visibility(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"],
                                          VisibilityTimeout=0)


def test_poison_messages_dead_letter_while_batch_mates_are_answered_then_redrive(
    local_stack: Any, reply_queue: str
) -> None:
    sqs, s3 = local_stack.client("sqs"), local_stack.client("s3")
    drain_queue(sqs, local_stack.request_dlq_url)  # this test counts what the DLQ holds
    reply_to = reply_queue.rsplit("/", 1)[-1]
    mailbox = Mailbox(sqs, reply_queue)
    request_queue = local_stack.resources.queues["RequestQueue"]  # as template.yaml made it in moto
    max_receive_count = request_queue.max_receive_count
    assert max_receive_count is not None and max_receive_count >= 2  # at least one redelivery before the DLQ

    with local_stack.trigger.paused():
        # GIVEN a real detection message whose crop was moved to S3 under a key not written (yet) ...
        poison_id = str(uuid.uuid4())
        reply = post_frame(local_stack, packaged(POISON_SOURCE).read_bytes(), request_id=poison_id,
                           headers={HEADER_REPLY_TO: reply_to})
        assert reply.status_code == 202, reply.text
        [message] = drain_queue(sqs, local_stack.request_queue_url)
        poison = json.loads(message["Body"])
        crop = base64.b64decode(poison["faces"][0].pop("crop_jpeg_b64"))
        key = poison["faces"][0]["crop_s3_key"] = f"crops/{poison['device_id']}/{poison_id}/0.jpg"
        sqs.send_message(QueueUrl=local_stack.request_queue_url, MessageBody=json.dumps(poison))
        # ... a message the contract refuses ...
        malformed = json.dumps({"schema_version": 1, "request_id": str(uuid.uuid4()), "faces": "not a list"})
        sqs.send_message(QueueUrl=local_stack.request_queue_url, MessageBody=malformed)
        # ... and two good frames, all waiting together on the request queue
        good_ids = {}
        for name, photo in GOOD.items():
            request_id = str(uuid.uuid4())
            reply = post_frame(local_stack, packaged(photo).read_bytes(), request_id=request_id,
                               headers={HEADER_REPLY_TO: reply_to})
            assert reply.status_code == 202, reply.text
            good_ids[request_id] = name
    # WHEN the trigger takes them THEN the good ones are answered
    for request_id, name in good_ids.items():
        assert [face["name"] for face in mailbox.wait_for(request_id)["faces"]] == [name]
    # AND both poison messages come back until received maxReceiveCount times, then dead-letter
    took = wait_until_dead_lettered(sqs, local_stack.request_dlq_url, 2,
                                    timeout=request_queue.visibility_timeout * (max_receive_count + 2))
    assert queue_depth(sqs, local_stack.request_queue_url) == 0  # good messages deleted after one delivery
    letters = {letter["request_id"]: letter for letter in list_dlq(local_stack, "request")}
    assert set(letters) == {poison_id, json.loads(malformed)["request_id"]}
    assert all(letter["receives"] >= max_receive_count for letter in letters.values())
    assert letters[poison_id]["reason"] == f"crop object(s) missing: s3://{local_stack.bucket}/{key}"
    malformed_reason = letters[json.loads(malformed)["request_id"]]["reason"]
    assert malformed_reason.startswith("not a request message: ")
    assert "faces: Input should be a valid list" in malformed_reason and "device_id: Field required" in malformed_reason

    # WHEN the operator discards the malformed one, writes the missing crop and redrives
    discard(sqs, local_stack.request_dlq_url, malformed)
    s3.put_object(Bucket=local_stack.bucket, Key=key, Body=crop)
    moved = run_dlq(local_stack, "redrive", "--queue", "request")
    assert moved.returncode == 0, moved.stderr
    assert "moved 1 message(s)" in moved.stdout
    # THEN the poison frame is answered, and every frame exactly once
    assert [face["name"] for face in mailbox.wait_for(poison_id)["faces"]] == ["barack_obama"]
    time.sleep(2)  # a duplicate answer would arrive within a batch or two
    assert drain_queue(sqs, reply_queue, wait_s=1) == []
    assert set(mailbox.deliveries) == {poison_id, *good_ids} and set(mailbox.deliveries.values()) == {1}
    assert queue_depth(sqs, local_stack.request_dlq_url) == 0
    print(f"\npoison and redrive: frames sent 3 + 1 malformed message; answered {len(mailbox.received)} "
          f"(2 at once, 1 after redrive); duplicated {sum(mailbox.deliveries.values()) - len(mailbox.deliveries)}; "
          f"dead-lettered 2 (after {took:.0f} s), discarded 1, redriven 1")
