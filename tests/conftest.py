"""Shared fixtures: the real local stack (moto over HTTP, real handlers, real weights) and helpers
to talk to it like a client does (SigV4-signed HTTP, SQS)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from cloud.functions.contracts import HEADER_DEVICE_ID, HEADER_REQUEST_ID
from tests.photos import models_dir, packaged

# What the `local_stack` fixture enrolls before any test runs (names as in the shared set).
ENROLLED = {"barack_obama": "face_recognition/obama.jpg", "joe_biden": "face_recognition/biden.jpg"}
# template.yaml parameters, both off their defaults (60, 3), so that DLQ tests finish in about a minute:
# RecognitionTimeout is enforced (workers are killed past it); 5, not the smallest (3), because a fresh
# worker's first batch on a busy 2-core machine can take over 3 s. The request queue's visibility is 30 s
# (the template's Mapping). On a heavily shared machine, FACEPIPE_TEST_RECOGNITION_TIMEOUT=10 (an allowed
# value) keeps slow batches from timing out.
RECOGNITION_TIMEOUT_S = int(os.environ.get("FACEPIPE_TEST_RECOGNITION_TIMEOUT", "5"))
MAX_RECEIVE_COUNT = 2  # a failing message is redelivered once, then dead-letters
RECOGNITION_WORKERS = 2  # the template's smallest RecognitionMaxConcurrency: each worker holds its own model
# Test-only hook (cloud/functions/recognition/handler.py):
# a batch with a first delivery from this device outlives its timeout.
SLOW_DEVICE = "test-slow-cam"
# The ingest queue's visibility in tests (the template's is 6x DetectionTimeout, 180 s): longer than a batch of
# IngestBatchSize images takes on a busy machine, or they come back while being detected and dead-letter.
INGEST_VISIBILITY_S = 20


@pytest.fixture(scope="session")
def local_stack() -> Iterator[Any]:
    """The whole backend, started once per test session, in this process, on 127.0.0.1, on the default engine
    (onnx: the exported networks `make models` writes, what the functions' image ships).

    Yields a started `cloud.emulator.stack.LocalStack`. Stable API for every test that uses it:
    - `function_url` (auth AWS_IAM: sign with `sign_request`/`post_frame`), `endpoint_url` (moto SQS/S3),
      `request_queue_url`, `response_queue_url`, `request_dlq_url`, `response_dlq_url`, `bucket`,
      `gallery_uri`, `region`, `credentials.access_key` / `credentials.secret_key`, `reply_to_prefix`;
    - `client_env()`: the environment a client process needs (AWS_* plus FACEPIPE_* and the edge
      daemon's FACEPIPE_EDGE__* overrides); `client("sqs" | "s3")`: a boto3 client for the stack;
    - `trigger.paused()`: a context manager that holds recognition (request messages stay queued);
    - `enroll({name: [photo paths]})`: add people to the gallery.
    - `stack_name`, `parameters` (template.yaml parameters as the stack in moto's CloudFormation got them),
      `resources.queues[logical id]` (`.url`, `.arn`, `.attributes`, `.visibility_timeout`, `.max_receive_count`).
    - `functions[logical id]` ("DetectionFunction", "RecognitionFunction"): the function's pool of worker
      processes (cloud/emulator/pool.py: `.environments`, `.concurrency`, `.spec`).
    The gallery starts with ENROLLED (barack_obama, joe_biden from the packaged photos). RecognitionTimeout is
    RECOGNITION_TIMEOUT_S, MaxReceiveCount MAX_RECEIVE_COUNT, recognition runs at most RECOGNITION_WORKERS
    workers, and a first delivery from SLOW_DEVICE times out; read the request queue's visibility timeout
    from `resources.queues["RequestQueue"]` (template.yaml's Mapping gives it). The process
    environment holds the stack's AWS_* variables while it runs. Tests that read answers should use
    the `responses` fixture (it consumes the default response queue) or their own reply_to queue
    (`reply_queue`), never both on the default queue.
    """
    from cloud.emulator.stack import LocalStack, StackConfig

    stack = LocalStack(StackConfig(models_dir=models_dir(), recognition_timeout_s=RECOGNITION_TIMEOUT_S,
                                   max_receive_count=MAX_RECEIVE_COUNT, recognition_concurrency=RECOGNITION_WORKERS,
                                   ingest_visibility_timeout_s=INGEST_VISIBILITY_S,
                                   # results persisted: forgetting a person must delete those naming them
                                   extra_env={"FACEPIPE_TEST_DELAY": f"{SLOW_DEVICE}:{RECOGNITION_TIMEOUT_S + 3}",
                                              "FACEPIPE_PERSIST_RESULTS": "true"}))
    stack.start()
    try:
        stack.enroll({name: [packaged(photo)] for name, photo in ENROLLED.items()})
        yield stack
    finally:
        stack.stop()


def sign_request(stack: Any, method: str, url: str, body: bytes, headers: dict[str, str],
                 secret_key: str | None = None) -> dict[str, str]:
    """`headers` plus a SigV4 signature (service lambda) by botocore, as an AWS SDK client sends it."""
    credentials = Credentials(stack.credentials.access_key, secret_key or stack.credentials.secret_key)
    request = AWSRequest(method=method, url=url, data=body, headers=headers)
    SigV4Auth(credentials, "lambda", stack.region).add_auth(request)
    return dict(request.headers.items())


def post_frame(
    stack: Any,
    body: bytes,
    *,
    request_id: str | None = None,
    device_id: str = "test-cam",
    headers: dict[str, str] | None = None,
    signed: bool = True,
    secret_key: str | None = None,
    timeout: float = 60,
) -> requests.Response:
    """POST an image to the stack's Function URL as the edge does (signed unless `signed=False`)."""
    all_headers = {"Content-Type": "image/jpeg", HEADER_REQUEST_ID: request_id or str(uuid.uuid4()),
                   HEADER_DEVICE_ID: device_id, **(headers or {})}
    if signed:
        all_headers = sign_request(stack, "POST", stack.function_url, body, all_headers, secret_key)
    return requests.post(stack.function_url, data=body, headers=all_headers, timeout=timeout)


def drain_queue(sqs: Any, queue_url: str, wait_s: int = 0) -> list[dict[str, Any]]:
    """Receive and delete every message currently visible on the queue; returns them."""
    drained: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_s,
                                       AttributeNames=["All"]).get("Messages", [])
        if not messages:
            return drained
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
        drained.extend(messages)


def queue_depth(sqs: Any, queue_url: str) -> int:
    """Messages on the queue: visible, in flight and delayed."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
             "ApproximateNumberOfMessagesDelayed"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
    return sum(int(attributes.get(name, 0)) for name in names)


class Mailbox:
    """Reads a response queue, keeps every answer by request_id and deletes it from the queue."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self.sqs, self.queue_url = sqs, queue_url
        self.received: dict[str, dict[str, Any]] = {}
        self.deliveries: dict[str, int] = {}  # answers per request_id (redelivery may repeat one)

    def wait_for(self, request_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while request_id not in self.received:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no response for {request_id} within {timeout} s")
            messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                                WaitTimeSeconds=min(2, max(1, int(remaining)))).get("Messages", [])
            for message in messages:
                answer = json.loads(message["Body"])
                self.received[answer["request_id"]] = answer
                self.deliveries[answer["request_id"]] = self.deliveries.get(answer["request_id"], 0) + 1
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return self.received[request_id]


@pytest.fixture(scope="session")
def responses(local_stack: Any) -> Mailbox:
    """Answers on the stack's default response queue: `responses.wait_for(request_id)`."""
    return Mailbox(local_stack.client("sqs"), local_stack.response_queue_url)


@pytest.fixture
def reply_queue(local_stack: Any) -> Iterator[str]:
    """A fresh per-test reply_to queue (name starts with the stack's reply_to prefix); yields its URL."""
    sqs = local_stack.client("sqs")
    url = sqs.create_queue(QueueName=f"{local_stack.reply_to_prefix}{uuid.uuid4().hex[:12]}")["QueueUrl"]
    yield url
    sqs.delete_queue(QueueUrl=url)


@pytest.fixture(scope="session")
def ingest_door(local_stack: Any) -> Any:
    """The local stack's ingest queue (`.url`, `.arn`), whose trigger feeds the detection workers; the DLQ is
    `local_stack.resources.queues["IngestDeadLetterQueue"]`."""
    return local_stack.resources.queues["IngestQueue"]
