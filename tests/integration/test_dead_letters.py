"""A malformed request-queue message next to good ones: the good ones are answered, the bad one is
reported as a batch item failure, redelivered, and after maxReceiveCount receives sits in the DLQ."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from tests.conftest import Mailbox, post_frame, queue_depth
from tests.photos import packaged

pytestmark = pytest.mark.slow


def wait_for_dead_letter(sqs: Any, dlq_url: str, body: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=2,
                                           AttributeNames=["All"]).get("Messages", []):
            sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
            if message["Body"] == body:
                return dict(message)
    raise TimeoutError(f"the malformed message did not reach the DLQ within {timeout} s")


def test_malformed_message_ends_in_the_dlq_while_its_batch_mates_are_answered(
    local_stack: Any, responses: Mailbox
) -> None:
    sqs = local_stack.client("sqs")
    malformed = json.dumps({"schema_version": 1, "request_id": str(uuid.uuid4()), "faces": "not a list"})
    good_ids = [str(uuid.uuid4()) for _ in range(2)]
    # GIVEN one malformed and two good messages waiting together on the request queue
    with local_stack.trigger.paused():
        sqs.send_message(QueueUrl=local_stack.request_queue_url, MessageBody=malformed)
        for request_id, photo in zip(good_ids, ["obama2.jpg", "biden.jpg"], strict=True):
            reply = post_frame(local_stack, packaged(f"face_recognition/{photo}").read_bytes(),
                               request_id=request_id)
            assert reply.status_code == 202, reply.text
    # WHEN the trigger takes them as one batch THEN the good ones are answered
    names = [responses.wait_for(request_id)["faces"][0]["name"] for request_id in good_ids]
    assert names == ["barack_obama", "joe_biden"]
    # AND the malformed one comes back until it has been received maxReceiveCount times, then dead-letters
    request_queue = local_stack.resources.queues["RequestQueue"]  # as template.yaml made it in moto
    max_receive_count = request_queue.max_receive_count
    assert max_receive_count is not None and max_receive_count >= 2  # at least one redelivery before the DLQ
    dead = wait_for_dead_letter(sqs, local_stack.request_dlq_url, malformed,
                                timeout=request_queue.visibility_timeout * (max_receive_count + 2))
    assert int(dead["Attributes"]["ApproximateReceiveCount"]) >= max_receive_count
    # AND the request queue is empty: the good messages were deleted after their first delivery
    assert queue_depth(sqs, local_stack.request_queue_url) == 0
