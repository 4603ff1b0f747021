"""Workers killed with SIGKILL mid-invocation, on the real local stack (real processes, models, photos):
nothing is lost. A killed recognition batch returns to the queue and is answered on redelivery; a killed
detection request is a 502 that the client's retry (as the edge uploader retries a 502) gets answered."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
import uuid
from typing import Any

import pytest

from cloud.functions.contracts import HEADER_REPLY_TO
from tests.conftest import Mailbox, post_frame
from tests.photos import packaged
from tests.processes import alive, worker_pids

pytestmark = pytest.mark.slow

# A group photo (six faces): a recognition batch then takes ~70 ms on ONNX Runtime, long enough to be caught busy
# and killed mid-batch (one-face batches take ~15 ms there, and the last kill found no batch left to hit).
PHOTOS = ["insightface/t1.jpg"]
FRAMES = 50
KILLS = 3


def busy_worker(stack: Any, logical_id: str, first_delivery_only: bool = False,
                timeout: float = 60) -> tuple[int, str]:
    """The pid of a `logical_id` worker in the middle of an invocation, and the invocation's request id, found
    by its command line among the processes (`ps`), once the stack shows it busy. With `first_delivery_only`,
    only a recognition batch none of whose messages was received before (its redelivery must be allowed to
    succeed: MaxReceiveCount is 2 in the test stack)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = worker_pids(logical_id)
        for environment in stack.functions[logical_id].environments:
            invocation = environment.api.current
            if invocation is None or environment.process is None or environment.pid not in running:
                continue
            if first_delivery_only:
                records = json.loads(invocation.payload)["Records"]
                if any(r["attributes"]["ApproximateReceiveCount"] != "1" for r in records):
                    continue
            return environment.pid, invocation.request_id
        time.sleep(0.005)
    raise AssertionError(f"no busy {logical_id} worker within {timeout} s")


def exit_error_logged(caplog: pytest.LogCaptureFixture, request_id: str, timeout: float = 5) -> bool:
    """Whether the invocation `request_id` failed as Runtime.ExitError (its worker was killed during it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(request_id in message and "Runtime exited with error: signal: kill" in message
               for message in [record.getMessage() for record in list(caplog.records)]):
            return True
        time.sleep(0.05)
    return False


def test_recognition_workers_killed_mid_batch_lose_no_frame(
        local_stack: Any, reply_queue: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cloud.emulator")
    mailbox = Mailbox(local_stack.client("sqs"), reply_queue)
    reply_to = {HEADER_REPLY_TO: reply_queue.rsplit("/", 1)[1]}
    images = [packaged(photo).read_bytes() for photo in PHOTOS]
    sent: list[str] = []
    killed: list[int] = []
    confirmed_misses: list[int] = []  # kills that landed just after a batch ended: no invocation failed
    posting_done = threading.Event()

    def kill_during_the_run() -> None:
        for kill in range(KILLS):
            while len(sent) < (kill + 1) * FRAMES // (KILLS + 1) and not posting_done.is_set():
                time.sleep(0.05)
            for _ in range(10):  # a batch of ~70 ms may end between being seen busy and the kill: kill again
                pid, request_id = busy_worker(local_stack, "RecognitionFunction", first_delivery_only=True)
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                if exit_error_logged(caplog, request_id):
                    break
                confirmed_misses.append(pid)

    killer = threading.Thread(target=kill_during_the_run)
    killer.start()
    try:
        # GIVEN 50 frames posted one after another (the detection side is not under test here)
        for i in range(FRAMES):
            request_id = str(uuid.uuid4())
            reply = post_frame(local_stack, images[i % len(images)], request_id=request_id, headers=reply_to)
            assert reply.status_code == 202, reply.text
            sent.append(request_id)
    finally:
        posting_done.set()
        killer.join(timeout=120)
    # WHEN recognition workers were SIGKILLed three times in the middle of a batch (and any kill that came just
    # too late for its batch was followed by another)
    assert len(killed) == KILLS + len(confirmed_misses) and not any(alive(pid) for pid in killed)
    # THEN every frame is answered; the client counts each request_id once
    for request_id in sent:
        mailbox.wait_for(request_id, timeout=120)
    assert set(mailbox.received) == set(sent) and len(mailbox.received) == FRAMES
    duplicates = sum(count - 1 for count in mailbox.deliveries.values())
    # AND each kill failed its batch as Lambda's Runtime.ExitError (whole batch back to the queue)
    exit_errors = [record for record in caplog.records if record.name == "cloud.emulator.environment"
                   and "Runtime exited with error: signal: kill" in record.getMessage()]
    assert len(exit_errors) == KILLS
    print(f"\n[worker crashes] {FRAMES}/{FRAMES} answered after {KILLS} SIGKILLs of recognition workers mid-batch "
          f"({len(confirmed_misses)} more just after a batch); "
          f"{duplicates} duplicate deliveries (a batch killed after sending some answers), deduplicated by request_id")


def test_a_detection_worker_killed_mid_request_is_a_502_and_the_retry_is_answered(
        local_stack: Any, reply_queue: str) -> None:
    mailbox = Mailbox(local_stack.client("sqs"), reply_queue)
    reply_to = {HEADER_REPLY_TO: reply_queue.rsplit("/", 1)[1]}
    image = packaged("face_recognition/obama2.jpg").read_bytes()
    request_id = str(uuid.uuid4())
    replies: list[Any] = []
    upload = threading.Thread(target=lambda: replies.append(
        post_frame(local_stack, image, request_id=request_id, headers=reply_to)))
    # GIVEN a frame upload in progress
    upload.start()
    # WHEN its detection worker is killed mid-request
    pid, _ = busy_worker(local_stack, "DetectionFunction")
    os.kill(pid, signal.SIGKILL)
    upload.join(timeout=60)
    # THEN the client gets a 502, as from a Lambda whose runtime exited
    assert replies[0].status_code == 502
    # AND its retry of the same frame (same request_id) is accepted by a fresh worker and answered
    retry = post_frame(local_stack, image, request_id=request_id, headers=reply_to)
    assert retry.status_code == 202, retry.text
    answer = mailbox.wait_for(request_id, timeout=90)
    assert [face["name"] for face in answer["faces"]] == ["barack_obama"]
    assert pid not in worker_pids("DetectionFunction")
