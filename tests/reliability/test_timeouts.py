"""A recognition batch that outlives RecognitionTimeout, on the real local stack: the worker is killed as
Lambda kills a timed-out invocation, the batch returns to the queue, and its redelivery is answered.

The test stack's recognition handler holds a batch with a first delivery from SLOW_DEVICE past the
timeout (the test-only FACEPIPE_TEST_DELAY hook, tests/conftest.py)."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import pytest

from cloud.functions.contracts import HEADER_REPLY_TO
from tests.conftest import RECOGNITION_TIMEOUT_S, SLOW_DEVICE, Mailbox, post_frame
from tests.photos import packaged

pytestmark = pytest.mark.slow


def test_a_timed_out_batch_is_redelivered_and_answered(
        local_stack: Any, reply_queue: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cloud.emulator")
    mailbox = Mailbox(local_stack.client("sqs"), reply_queue)
    visibility = local_stack.resources.queues["RequestQueue"].visibility_timeout
    request_id = str(uuid.uuid4())
    # GIVEN a frame whose first recognition batch takes longer than RecognitionTimeout
    posted = time.monotonic()
    reply = post_frame(local_stack, packaged("face_recognition/biden.jpg").read_bytes(), request_id=request_id,
                       device_id=SLOW_DEVICE, headers={HEADER_REPLY_TO: reply_queue.rsplit("/", 1)[1]})
    assert reply.status_code == 202, reply.text
    # WHEN the trigger invokes recognition with it
    answer = mailbox.wait_for(request_id, timeout=visibility + 60)
    waited = time.monotonic() - posted
    # THEN the invocation was killed at the timeout, as Lambda logs it
    assert f"Task timed out after {RECOGNITION_TIMEOUT_S:.2f} seconds" in caplog.text
    assert "Status: timeout" in caplog.text  # its REPORT line
    # AND the batch came back after the queue's visibility timeout and was answered, once
    assert waited >= visibility
    assert [face["name"] for face in answer["faces"]] == ["joe_biden"]
    assert mailbox.deliveries[request_id] == 1
    print(f"\n[timeout] answered {waited:.1f} s after the upload (visibility timeout {visibility} s)")
