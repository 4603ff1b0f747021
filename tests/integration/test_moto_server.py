"""The local stack's moto server: what it does per request, on a real server over HTTP."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import moto
import moto.core.utils
import pytest
from moto.core import DEFAULT_ACCOUNT_ID as ACCOUNT_ID
from moto.sqs.models import Queue, sqs_backends

from cloud.emulator.moto_server import MotoServer
from tests.moto_env import moto_sqs


def test_requests_are_routed_without_listing_motos_package_each_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto 5 lists its package directory on every request to route it; the local stack's server lists it once."""
    server = MotoServer()
    endpoint = server.start()
    package = Path(moto.__file__).parent
    listings: list[str] = []
    real_listdir = os.listdir

    def listdir(path: str = ".") -> list[str]:
        if Path(path).resolve() == package.resolve():
            listings.append(path)
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    try:
        sqs = boto3.session.Session().client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                                             aws_access_key_id="AKIAMOTOSERVERTEST00", aws_secret_access_key="test")
        url = sqs.create_queue(QueueName="routed-once")["QueueUrl"]  # SQS's backend loads on its first request
        listings.clear()
        sqs.send_message(QueueUrl=url, MessageBody="hello")
        assert [m["Body"] for m in sqs.receive_message(QueueUrl=url)["Messages"]] == ["hello"]
    finally:
        server.stop()
    assert listings == []


@pytest.fixture
def sqs_server() -> Iterator[Any]:
    """A MotoServer of the local stack's kind and an SQS client for it."""
    with moto_sqs() as sqs:
        yield sqs


def test_receiving_builds_no_queue_attributes_per_message(sqs_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """moto checks each delivered message's retention through every queue attribute, the message counts among them
    (a pass over the queue each): quadratic in the queue's depth. The local stack's server reads the one it needs."""
    url = sqs_server.create_queue(QueueName="deep-receive")["QueueUrl"]
    for start in range(0, 30, 10):
        sqs_server.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"m{start + i}"}
                                                             for i in range(10)])
    built: list[str] = []
    attributes = Queue.attributes

    def counted(queue: Queue) -> dict[str, Any]:
        built.append(queue.name)
        return attributes.fget(queue)  # type: ignore[attr-defined,no-any-return]

    monkeypatch.setattr(Queue, "attributes", property(counted))
    received = sqs_server.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert len(received) == 10
    assert built == []


def test_a_message_past_its_queues_retention_is_still_not_delivered(sqs_server: Any) -> None:
    url = sqs_server.create_queue(QueueName="retention", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
    sqs_server.send_message(QueueUrl=url, MessageBody="expired")
    (message,) = sqs_backends[ACCOUNT_ID]["us-east-1"].get_queue("retention")._messages
    message.sent_timestamp -= 61_000  # sent 61 s earlier than it was: past the queue's 60 s
    assert sqs_server.receive_message(QueueUrl=url).get("Messages", []) == []
    sqs_server.send_message(QueueUrl=url, MessageBody="fresh")
    assert [m["Body"] for m in sqs_server.receive_message(QueueUrl=url)["Messages"]] == ["fresh"]


def test_queueing_and_receiving_read_no_datetime_per_queued_message(sqs_server: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """moto reads the clock through datetimes four times per queued message on every send (the queue's message
    counts) and twice per message looked at on a receive; the local stack's server reads time.time()."""
    url = sqs_server.create_queue(QueueName="deep-clock")["QueueUrl"]
    for start in range(0, 30, 10):
        sqs_server.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"m{start + i}"}
                                                             for i in range(10)])
    reads: list[None] = []
    utcnow = moto.core.utils.utcnow

    def counted() -> Any:
        reads.append(None)
        return utcnow()

    monkeypatch.setattr(moto.core.utils, "utcnow", counted)
    sqs_server.send_message(QueueUrl=url, MessageBody="one more")
    assert len(sqs_server.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]) == 10
    assert len(reads) < 30  # moto's own: 214


def test_delays_and_visibility_timeouts_still_hold(sqs_server: Any) -> None:
    """The clock the local stack's server reads is in the units moto's SQS expects (seconds, milliseconds)."""
    url = sqs_server.create_queue(QueueName="clocked")["QueueUrl"]
    sqs_server.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=1)
    assert sqs_server.receive_message(QueueUrl=url).get("Messages", []) == []
    (delayed,) = sqs_server.receive_message(QueueUrl=url, WaitTimeSeconds=3, VisibilityTimeout=1)["Messages"]
    assert delayed["Body"] == "later"
    assert sqs_server.receive_message(QueueUrl=url).get("Messages", []) == []  # in flight for 1 s
    (again,) = sqs_server.receive_message(QueueUrl=url, WaitTimeSeconds=3, AttributeNames=["All"])["Messages"]
    assert again["Attributes"]["ApproximateReceiveCount"] == "2"
