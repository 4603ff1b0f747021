"""Correlation on a real SQS protocol server (moto over HTTP): matching, duplicates reported once,
other devices' answers left for them, malformed messages left for the DLQ, timeouts counted."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from cloud.functions.contracts import RecognisedFace, ResponseMessage, Timings
from edge_client.config import ResponsesConfig
from edge_client.correlator import Correlator, CorrelatorEvents, Pending, PendingRequests


class Recorder:
    def __init__(self) -> None:
        self.answered: list[tuple[str, float]] = []
        self.unanswered: list[str] = []
        self.duplicates: list[str] = []
        self.late: list[str] = []

    def events(self) -> CorrelatorEvents:
        return CorrelatorEvents(
            answered=lambda answer, item, latency: self.answered.append((answer.request_id, latency)),
            unanswered=lambda item: self.unanswered.append(item.request_id),
            duplicate=self.duplicates.append,
            late=self.late.append,
        )


def _answer(request_id: str, device_id: str = "porch") -> str:
    return ResponseMessage(
        request_id=request_id, device_id=device_id, frame_timestamp=time.time(),
        faces=[RecognisedFace(box=[1, 2, 30, 40], name="joe_biden", distance=0.61, probability=0.99)],
        timings=Timings(detect_ms=10, queue_wait_ms=1, recognise_ms=20), model="test",
    ).model_dump_json()


@pytest.fixture
def queue(moto_sqs: Any) -> str:
    url: str = moto_sqs.create_queue(QueueName=f"edge-test-{uuid.uuid4().hex[:8]}",
                                     Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    return url


def _correlator(moto_sqs: Any, queue: str, recorder: Recorder, timeout_s: float = 30) -> tuple[Correlator,
                                                                                             PendingRequests]:
    pending = PendingRequests()
    config = ResponsesConfig(queue_url=queue, wait_s=1, answer_timeout_s=timeout_s)
    return Correlator(config, "porch", moto_sqs, pending, recorder.events()), pending


def _visible(sqs: Any, queue: str) -> int:
    attrs = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attrs["Attributes"]["ApproximateNumberOfMessages"])


def _poll(correlator: Correlator, until: Callable[[], bool], rounds: int = 10) -> None:
    for _ in range(rounds):
        if until():
            return
        correlator.poll_once(wait_s=1)


def test_answer_matched_and_duplicate_reported_once(moto_sqs: Any, queue: str) -> None:
    recorder = Recorder()
    correlator, pending = _correlator(moto_sqs, queue, recorder)
    request_id = str(uuid.uuid4())
    pending.add(Pending(request_id, captured_at=time.time() - 0.25, jpeg=None))
    for _ in range(3):  # SQS delivers at least once: the same answer three times
        moto_sqs.send_message(QueueUrl=queue, MessageBody=_answer(request_id))
    _poll(correlator, lambda: len(recorder.duplicates) == 2)
    assert [rid for rid, _ in recorder.answered] == [request_id]
    assert recorder.answered[0][1] >= 0.25
    assert recorder.duplicates == [request_id, request_id]
    assert len(pending) == 0 and _visible(moto_sqs, queue) == 0  # ours: all deleted


def test_other_devices_answers_stay_for_their_owner(moto_sqs: Any, queue: str) -> None:
    recorder = Recorder()
    correlator, _ = _correlator(moto_sqs, queue, recorder)
    foreign = str(uuid.uuid4())
    moto_sqs.send_message(QueueUrl=queue, MessageBody=_answer(foreign, device_id="garage"))
    correlator.poll_once(wait_s=1)
    assert recorder.answered == [] and recorder.late == []
    # Visible again at once (visibility 0), so the owner receives it without waiting 30 s.
    messages = moto_sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1).get("Messages", [])
    assert [ResponseMessage.model_validate_json(m["Body"]).request_id for m in messages] == [foreign]


def test_malformed_message_is_left_for_the_redrive_policy(moto_sqs: Any, queue: str) -> None:
    recorder = Recorder()
    correlator, _ = _correlator(moto_sqs, queue, recorder)
    moto_sqs.send_message(QueueUrl=queue, MessageBody='{"schema_version": 99, "request_id": "x"}')
    correlator.poll_once(wait_s=1)
    attrs = moto_sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
    assert int(attrs["Attributes"]["ApproximateNumberOfMessagesNotVisible"]) == 1  # not deleted, not released
    assert recorder.answered == recorder.late == []


def test_no_answer_in_time_counts_unanswered_once_and_late_answer_is_not_reported(
    moto_sqs: Any, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    correlator, pending = _correlator(moto_sqs, queue, recorder, timeout_s=0.3)
    request_id = str(uuid.uuid4())
    pending.add(Pending(request_id, captured_at=time.time(), jpeg=None))
    correlator.poll_once(wait_s=0)
    assert recorder.unanswered == []
    time.sleep(0.35)
    correlator.poll_once(wait_s=0)
    correlator.poll_once(wait_s=0)
    assert recorder.unanswered == [request_id]
    assert "counted unanswered" in caplog.text
    moto_sqs.send_message(QueueUrl=queue, MessageBody=_answer(request_id))
    _poll(correlator, lambda: bool(recorder.late), rounds=3)
    assert recorder.answered == [] and recorder.late == [request_id]
    assert _visible(moto_sqs, queue) == 0
