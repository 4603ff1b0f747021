"""A local SQS event source mapping: long-poll a queue, invoke a handler with batches, delete what succeeded.

Semantics follow Lambda's SQS trigger with `ReportBatchItemFailures`: records named in the
returned `batchItemFailures` stay on the queue and come back after the visibility timeout (and
reach the DLQ after maxReceiveCount receives); the rest are deleted. A failed invocation (the
handler raised, timed out, or its worker crashed), or a response Lambda would reject (not a dict,
unknown itemIdentifier), returns the whole batch. `concurrency` pollers run batches at once, like the
event source mapping's ScalingConfig.MaximumConcurrency.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from cloud.emulator.function_url import Handler, LambdaContext

log = logging.getLogger(__name__)

MAX_RECEIVE = 10  # SQS ReceiveMessage returns at most 10 messages per call
Receive = Callable[[int, int], list[dict[str, Any]]]  # (count, wait_s) -> ReceiveMessage's messages
DeleteBatch = Callable[[list[dict[str, str]]], list[dict[str, Any]]]  # DeleteMessageBatch's Entries -> its Failed


def _message_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """ReceiveMessage's MessageAttributes in the Lambda event's camelCase form (binary as base64)."""
    converted: dict[str, Any] = {}
    for name, value in attributes.items():
        item: dict[str, Any] = {"dataType": value["DataType"], "stringListValues": [], "binaryListValues": []}
        if "StringValue" in value:
            item["stringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            item["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode("ascii")
        converted[name] = item
    return converted


def build_event(messages: list[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """The SQS event Lambda passes to a function for a batch of received messages."""
    records = []
    for message in messages:
        record: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": dict(message.get("Attributes", {})),
            "messageAttributes": _message_attributes(message.get("MessageAttributes", {})),
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": region,
        }
        if "MD5OfMessageAttributes" in message:
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        records.append(record)
    return {"Records": records}


def failed_ids(result: Any, batch_ids: set[str]) -> set[str] | None:
    """The message ids to leave on the queue, or None when Lambda would treat the response as invalid
    (and so fail the whole batch)."""
    if result is None:
        return set()
    if not isinstance(result, dict):
        return None
    failures = result.get("batchItemFailures") or []
    if not isinstance(failures, list):
        return None
    ids: set[str] = set()
    for failure in failures:
        item = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not isinstance(item, str) or item not in batch_ids:
            return None
        ids.add(item)
    return ids


class SqsTrigger:
    """`concurrency` threads that feed `handler` batches from `queue_url` until stop()."""

    def __init__(
        self,
        sqs: Any,
        handler: Handler,
        *,
        queue_url: str,
        queue_arn: str,
        region: str,
        batch_size: int = 10,
        batching_window_s: float = 0.0,
        timeout_s: float = 30.0,
        poll_wait_s: int = 1,
        function_name: str = "facepipe-recognition",
        concurrency: int = 1,
        receive: Receive | None = None,
        delete: DeleteBatch | None = None,
    ) -> None:
        if not 1 <= batch_size <= 10_000:
            raise ValueError("batch size must be 1..10000")
        if not 0 <= batching_window_s <= 300:
            raise ValueError("batching window must be 0..300 s")
        if batch_size > 10 and batching_window_s < 1:
            raise ValueError("a batch size over 10 needs a batching window of at least 1 s (as on AWS)")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.sqs, self.handler = sqs, handler
        # ReceiveMessage and DeleteMessageBatch over HTTP unless given other ways (the local stack's:
        # cloud/emulator/backend_sqs.py).
        self.receive: Receive = receive or self._receive_over_http
        self.delete: DeleteBatch = delete or self._delete_over_http
        self.queue_url, self.queue_arn, self.region = queue_url, queue_arn, region
        self.batch_size, self.batching_window_s = batch_size, batching_window_s
        self.timeout_s, self.function_name, self.concurrency = timeout_s, function_name, concurrency
        # Short long-polls keep stop() prompt; SQS and moto both honour WaitTimeSeconds 0..20.
        self.poll_wait_s = poll_wait_s
        self._stop = threading.Event()
        self._running = threading.Event()  # cleared while paused
        self._running.set()
        self._busy = 0  # pollers receiving or processing a batch
        self._state = threading.Condition()  # guards _busy and batches
        self._threads: list[threading.Thread] = []
        self.batches = 0  # invocations so far (for tests and logs)

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._loop, name=f"sqs-trigger-{i}", daemon=True)
                         for i in range(self.concurrency)]
        for thread in self._threads:
            thread.start()
        log.info("SQS trigger polling %s (batch %d, window %.1f s, %d at once)", self.queue_url, self.batch_size,
                 self.batching_window_s, self.concurrency)

    def stop(self) -> None:
        self._stop.set()
        self._running.set()
        for thread in self._threads:
            thread.join()
        self._threads = []

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Stop taking new batches (in-flight batches finish first); resume on exit."""
        self._running.clear()
        with self._state:
            self._state.wait_for(lambda: self._busy == 0)
        try:
            yield
        finally:
            self._running.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._running.wait()
            if self._stop.is_set():
                break
            with self._state:
                if not self._running.is_set():  # paused between the wait and here
                    continue
                self._busy += 1
            try:
                messages = self._gather()
                if messages:
                    self._process(messages)
            except Exception:
                # The poller must survive a broken endpoint or handler; back off and poll again.
                log.exception("SQS trigger poll failed")
                self._stop.wait(1.0)
            finally:
                with self._state:
                    self._busy -= 1
                    self._state.notify_all()

    def _receive(self, count: int, wait_s: int) -> list[dict[str, Any]]:
        return self.receive(min(MAX_RECEIVE, count), wait_s)

    def _receive_over_http(self, count: int, wait_s: int) -> list[dict[str, Any]]:
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=wait_s,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return list(response.get("Messages", []))

    def _gather(self) -> list[dict[str, Any]]:
        """One batch: the first poll waits for a message, then fill up until the batch size or the
        batching window is reached. With window 0 the first poll's messages are the batch, as Lambda invokes
        as soon as records are available: a second, empty-handed ReceiveMessage would put a round trip
        between every frame's faces and recognition (4-5 ms of a 150 ms frame, traced in the bench)."""
        messages = self._receive(self.batch_size, self.poll_wait_s)
        if not messages or self.batching_window_s == 0:
            return messages
        deadline = time.monotonic() + self.batching_window_s
        while len(messages) < self.batch_size and not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining < 1:
                # Long polls wait whole seconds: sit out the window's last fraction, then take what is there.
                self._stop.wait(max(0.0, remaining))
                messages.extend(self._receive(self.batch_size - len(messages), 0))
                break
            messages.extend(self._receive(self.batch_size - len(messages), min(20, int(remaining))))
        return messages

    def _process(self, messages: list[dict[str, Any]]) -> None:
        ids = {m["MessageId"] for m in messages}
        event = build_event(messages, self.queue_arn, self.region)
        context = LambdaContext(self.function_name, self.timeout_s, self.region)
        with self._state:
            self.batches += 1
        started = time.perf_counter()
        try:
            result = self.handler(event, context)
        except Exception:
            log.exception("%s failed on a batch of %d; whole batch returns to the queue", self.function_name,
                          len(messages))
            return
        failures = failed_ids(result, ids)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if failures is None:
            log.error("%s returned an invalid batch response %r; whole batch returns to the queue",
                      self.function_name, result)
            return
        log.info("%s: batch of %d in %.0f ms, %d failed", self.function_name, len(messages), elapsed_ms,
                 len(failures))
        self._delete([m for m in messages if m["MessageId"] not in failures])

    def _delete(self, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), MAX_RECEIVE):
            chunk = messages[start:start + MAX_RECEIVE]
            for failed in self.delete([{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                                       for i, m in enumerate(chunk)]):
                log.warning("could not delete message: %s", failed)

    def _delete_over_http(self, entries: list[dict[str, str]]) -> list[dict[str, Any]]:
        return self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries).get("Failed", [])
