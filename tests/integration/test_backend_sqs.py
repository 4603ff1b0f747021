"""The local trigger's in-process ReceiveMessage and DeleteMessageBatch against the same calls over HTTP, on a real moto
server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cloud.emulator.backend_sqs import BackendDelete, BackendReceive
from cloud.emulator.sqs_trigger import SqsTrigger, build_event
from tests.moto_env import moto_sqs

ALL = {"AttributeNames": ["All"], "MessageAttributeNames": ["All"]}


@pytest.fixture
def sqs() -> Iterator[Any]:
    with moto_sqs() as client:
        yield client


def queue(sqs: Any, name: str, **attributes: str) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return url, sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def received_both_ways(sqs: Any, url: str, arn: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The one queued message over HTTP (left visible again at once), then from the backend."""
    (over_http,) = sqs.receive_message(QueueUrl=url, VisibilityTimeout=0, **ALL)["Messages"]
    (in_process,) = BackendReceive(arn)(10, 0)
    return over_http, in_process


def same_but_for_this_receive(over_http: dict[str, Any], in_process: dict[str, Any]) -> None:
    assert in_process["ReceiptHandle"] != over_http["ReceiptHandle"]
    assert int(in_process["Attributes"].pop("ApproximateReceiveCount")) == \
        int(over_http["Attributes"].pop("ApproximateReceiveCount")) + 1
    in_process.pop("ReceiptHandle"), over_http.pop("ReceiptHandle")
    assert in_process == over_http


@pytest.mark.parametrize("attributes", [
    {},
    {"text": {"DataType": "String", "StringValue": "hello"}, "count": {"DataType": "Number.int", "StringValue": "3"},
     "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xff\x10"}},
], ids=["plain", "message attributes"])
def test_a_standard_queues_message_is_received_as_over_http(sqs: Any, attributes: dict[str, Any]) -> None:
    url, arn = queue(sqs, "standard")
    sqs.send_message(QueueUrl=url, MessageBody='{"faces": []}', MessageAttributes=attributes,
                     MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String", "StringValue": "Root=1-a-b"}})
    over_http, in_process = received_both_ways(sqs, url, arn)
    event_http = build_event([over_http], arn, "us-east-1")["Records"][0]
    event_in_process = build_event([in_process], arn, "us-east-1")["Records"][0]
    assert event_in_process["messageAttributes"] == event_http["messageAttributes"]
    same_but_for_this_receive(over_http, in_process)


def test_a_fifo_queues_message_keeps_its_group_deduplication_id_and_sequence_number(sqs: Any) -> None:
    url, arn = queue(sqs, "ordered.fifo", FifoQueue="true")
    sqs.send_message(QueueUrl=url, MessageBody="in order", MessageGroupId="camera-1", MessageDeduplicationId="frame-7")
    over_http, in_process = received_both_ways(sqs, url, arn)
    assert {"MessageGroupId", "MessageDeduplicationId", "SequenceNumber"} <= set(in_process["Attributes"])
    same_but_for_this_receive(over_http, in_process)


def test_it_long_polls_and_hides_what_it_received(sqs: Any) -> None:
    url, arn = queue(sqs, "polled", VisibilityTimeout="30")
    receive = BackendReceive(arn)
    threading.Timer(0.3, sqs.send_message, kwargs={"QueueUrl": url, "MessageBody": "late"}).start()
    started = time.monotonic()
    (message,) = receive(10, 5)
    assert message["Body"] == "late" and time.monotonic() - started < 5
    assert receive(10, 0) == []  # in flight for the queue's 30 s visibility timeout
    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])  # its receipt handle works over HTTP
    assert sqs.receive_message(QueueUrl=url).get("Messages", []) == []


def test_past_max_receive_count_a_message_goes_to_the_dead_letter_queue(sqs: Any) -> None:
    dlq_url, dlq_arn = queue(sqs, "poison-dlq")
    url, arn = queue(sqs, "poison", VisibilityTimeout="0",
                     RedrivePolicy=f'{{"deadLetterTargetArn": "{dlq_arn}", "maxReceiveCount": "2"}}')
    sqs.send_message(QueueUrl=url, MessageBody="poison")
    receive = BackendReceive(arn)
    assert [len(receive(10, 0)) for _ in range(3)] == [1, 1, 0]
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=dlq_url)["Messages"]] == ["poison"]


def test_a_batch_deleted_in_process_is_gone_and_a_stale_handle_fails_as_over_http(sqs: Any) -> None:
    url, arn = queue(sqs, "deleted", VisibilityTimeout="0")
    sqs.send_message(QueueUrl=url, MessageBody="done")
    (message,) = BackendReceive(arn)(10, 0)
    stale = {"Id": "stale", "ReceiptHandle": "not-a-receipt-handle"}
    failed = BackendDelete(arn)([{"Id": "done", "ReceiptHandle": message["ReceiptHandle"]}, stale])
    assert failed == sqs.delete_message_batch(QueueUrl=url, Entries=[stale])["Failed"]
    assert [f["Id"] for f in failed] == ["stale"] and failed[0]["Code"] == "ReceiptHandleIsInvalid"
    assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages", []) == []  # visibility 0: not hidden


def test_the_trigger_deletes_what_succeeded_without_an_http_delete(sqs: Any) -> None:
    # Every DeleteMessageBatch the trigger's client makes is counted off the wire: none, with the backend's delete.
    url, arn = queue(sqs, "triggered", VisibilityTimeout="1")
    http_deletes: list[dict[str, Any]] = []
    sqs.meta.events.register("provide-client-params.sqs.DeleteMessageBatch",
                             lambda params, **_: http_deletes.append(params))
    seen: set[str] = set()
    both_seen = threading.Event()

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.update(r["body"] for r in event["Records"])
        if seen == {"ok", "retry me"}:
            both_seen.set()
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]
                                      if r["body"] == "retry me"]}

    trigger = SqsTrigger(sqs, handler, queue_url=url, queue_arn=arn, region="us-east-1",
                         receive=BackendReceive(arn), delete=BackendDelete(arn))
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "1", "MessageBody": "ok"},
                                                   {"Id": "2", "MessageBody": "retry me"}])
    trigger.start()
    try:
        assert both_seen.wait(10)
    finally:
        trigger.stop()
    assert http_deletes == []
    time.sleep(1.1)  # the failed record's visibility timeout
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]] == ["retry me"]
