"""The local SQS trigger's Lambda semantics, on a real moto server, with stand-in handlers: these
tests are about the transport (batches, partial failures, redelivery), not recognition."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from cloud.emulator.moto_server import MotoServer
from cloud.emulator.sqs_trigger import SqsTrigger

REGION = "us-east-1"


@pytest.fixture(scope="module")
def sqs() -> Iterator[Any]:
    server = MotoServer()
    endpoint = server.start()
    yield boto3.session.Session().client("sqs", endpoint_url=endpoint, region_name=REGION,
                                         aws_access_key_id="AKIATRANSPORTTEST000",
                                         aws_secret_access_key="transport-test")
    server.stop()


@pytest.fixture
def queue(sqs: Any) -> Iterator[tuple[str, str]]:
    url = sqs.create_queue(QueueName=f"trigger-test-{uuid.uuid4().hex[:8]}",
                           Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    yield url, arn
    sqs.delete_queue(QueueUrl=url)


class Recorder:
    """A stand-in function: records each event, answers with `decide(event)`."""

    def __init__(self, decide: Any, expected_bodies: int) -> None:
        self.decide, self.expected = decide, expected_bodies
        self.events: list[dict[str, Any]] = []
        self.done = threading.Event()

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        self.events.append(event)
        if sum(len(e["Records"]) for e in self.events) >= self.expected:
            self.done.set()
        return self.decide(event)

    def bodies(self) -> list[str]:
        return [r["body"] for e in self.events for r in e["Records"]]


def run_trigger(sqs: Any, queue: tuple[str, str], recorder: Recorder, **options: Any) -> None:
    trigger = SqsTrigger(sqs, recorder, queue_url=queue[0], queue_arn=queue[1], region=REGION, **options)
    trigger.start()
    try:
        assert recorder.done.wait(30), f"only {len(recorder.bodies())} records delivered"
    finally:
        trigger.stop()


def send(sqs: Any, url: str, bodies: list[str]) -> None:
    for start in range(0, len(bodies), 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": body, "MessageAttributes": {"k": {"DataType": "String", "StringValue": "v"}}}
            for i, body in enumerate(bodies[start:start + 10])])


def depth(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def test_event_has_the_lambda_sqs_record_shape(sqs: Any, queue: tuple[str, str]) -> None:
    send(sqs, queue[0], ["hello"])
    recorder = Recorder(lambda event: {"batchItemFailures": []}, expected_bodies=1)
    run_trigger(sqs, queue, recorder)
    record = recorder.events[0]["Records"][0]
    assert record["body"] == "hello"
    assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"] == queue[1]
    assert record["awsRegion"] == REGION and record["md5OfBody"]
    assert {"ApproximateReceiveCount", "SentTimestamp", "ApproximateFirstReceiveTimestamp"} <= set(record["attributes"])
    assert record["messageAttributes"]["k"]["stringValue"] == "v"
    assert record["messageAttributes"]["k"]["dataType"] == "String"
    assert depth(sqs, queue[0]) == 0


def test_reported_failures_are_redelivered_and_the_rest_deleted(sqs: Any, queue: tuple[str, str]) -> None:
    send(sqs, queue[0], [f"m{i}" for i in range(5)])
    failed_once: set[str] = set()

    def fail_odd_once(event: dict[str, Any]) -> dict[str, Any]:
        failures = []
        for record in event["Records"]:
            if record["body"] in ("m1", "m3") and record["body"] not in failed_once:
                failed_once.add(record["body"])
                failures.append({"itemIdentifier": record["messageId"]})
        return {"batchItemFailures": failures}

    recorder = Recorder(fail_odd_once, expected_bodies=7)
    run_trigger(sqs, queue, recorder)
    bodies = recorder.bodies()
    assert sorted(bodies) == ["m0", "m1", "m1", "m2", "m3", "m3", "m4"]
    records = [r for e in recorder.events for r in e["Records"]]
    redelivered = [r for r in records if r["attributes"]["ApproximateReceiveCount"] == "2"]
    assert sorted(r["body"] for r in redelivered) == ["m1", "m3"]
    assert depth(sqs, queue[0]) == 0


@pytest.mark.parametrize("outcome", ["raises", "invalid item id", "not a dict"])
def test_exception_or_invalid_response_returns_the_whole_batch(sqs: Any, queue: tuple[str, str],
                                                               outcome: str) -> None:
    send(sqs, queue[0], ["a", "b", "c"])
    calls = 0

    def fail_first_batch(event: dict[str, Any]) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            if outcome == "raises":
                raise RuntimeError("stand-in failure")
            return {"batchItemFailures": [{"itemIdentifier": "no-such-id"}]} if outcome == "invalid item id" else []
        return {"batchItemFailures": []}

    recorder = Recorder(fail_first_batch, expected_bodies=6)
    run_trigger(sqs, queue, recorder)
    assert sorted(recorder.bodies()) == ["a", "a", "b", "b", "c", "c"]
    assert depth(sqs, queue[0]) == 0


def test_batch_size_and_window_gather_one_big_batch(sqs: Any, queue: tuple[str, str]) -> None:
    # Visibility well above the window, so nothing comes back while the batch is being gathered.
    sqs.set_queue_attributes(QueueUrl=queue[0], Attributes={"VisibilityTimeout": "10"})
    send(sqs, queue[0], [f"m{i}" for i in range(25)])
    recorder = Recorder(lambda event: None, expected_bodies=25)  # None = every record succeeded
    run_trigger(sqs, queue, recorder, batch_size=20, batching_window_s=1.0)
    assert [len(e["Records"]) for e in recorder.events] == [20, 5]
    assert depth(sqs, queue[0]) == 0


def test_with_no_batching_window_the_first_poll_is_the_batch(sqs: Any, queue: tuple[str, str]) -> None:
    # Lambda invokes as soon as its long poll returns records; a second receive to top the batch up would put a
    # round trip between every message and its invocation. Every poll the trigger makes is counted off the wire.
    polls: list[dict[str, Any]] = []

    def count(params: dict[str, Any], **_: Any) -> None:
        if params.get("QueueUrl") == queue[0]:
            polls.append(params)

    sqs.meta.events.register("provide-client-params.sqs.ReceiveMessage", count)
    try:
        recorder = Recorder(lambda event: None, expected_bodies=3)
        trigger = SqsTrigger(sqs, recorder, queue_url=queue[0], queue_arn=queue[1], region=REGION)
        trigger.start()
        try:
            send(sqs, queue[0], ["a", "b", "c"])  # one SendMessageBatch: all three visible at once
            assert recorder.done.wait(30), f"only {len(recorder.bodies())} records delivered"
            receives_for_batches = len(polls)
        finally:
            trigger.stop()
    finally:
        sqs.meta.events.unregister("provide-client-params.sqs.ReceiveMessage", count)
    assert [len(e["Records"]) for e in recorder.events] == [3]
    # The polls before the batch waited (empty-handed, each up to poll_wait_s); the one that found it was the last.
    assert polls and all(p["WaitTimeSeconds"] == trigger.poll_wait_s for p in polls[:receives_for_batches])


def test_stop_is_prompt_on_an_idle_queue(sqs: Any, queue: tuple[str, str]) -> None:
    import time

    trigger = SqsTrigger(sqs, lambda e, c: None, queue_url=queue[0], queue_arn=queue[1], region=REGION)
    trigger.start()
    time.sleep(0.2)
    started = time.monotonic()
    trigger.stop()
    assert time.monotonic() - started < 5


def test_batches_over_ten_need_a_batching_window(sqs: Any, queue: tuple[str, str]) -> None:
    with pytest.raises(ValueError, match="batching window of at least 1 s"):
        SqsTrigger(sqs, lambda e, c: None, queue_url=queue[0], queue_arn=queue[1], region=REGION, batch_size=11)


def test_concurrency_runs_that_many_batches_at_once_and_paused_waits_for_all(sqs: Any) -> None:
    import time

    url = sqs.create_queue(QueueName=f"trigger-test-{uuid.uuid4().hex[:8]}",
                           Attributes={"VisibilityTimeout": "30"})["QueueUrl"]  # longer than a batch here
    queue = (url, sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])

    running, most = 0, 0
    lock = threading.Lock()

    def slow(event: dict[str, Any], context: Any) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(1.0)
        with lock:
            running -= 1

    send(sqs, queue[0], [f"m{i}" for i in range(6)])
    trigger = SqsTrigger(sqs, slow, queue_url=queue[0], queue_arn=queue[1], region=REGION, batch_size=1,
                         concurrency=3)
    trigger.start()
    try:
        time.sleep(0.5)  # three pollers took a message each and are in their handler
        with trigger.paused():  # returns once every in-flight batch has finished
            assert running == 0
            taken = trigger.batches
            time.sleep(1.5)
            assert trigger.batches == taken  # nothing new while paused
        deadline = time.monotonic() + 30
        while depth(sqs, queue[0]) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        trigger.stop()
        sqs.delete_queue(QueueUrl=url)
    assert most == 3 and trigger.batches == 6
