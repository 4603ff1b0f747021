"""Helpers for tests of dead-letter queues: run `facepipe dlq` as a client process, and dead-letter
messages the way SQS does (received maxReceiveCount times without being deleted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run_dlq(stack: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """`facepipe dlq ARGS` in its own process with the environment `facepipe local up` exports."""
    env = {**os.environ, **stack.client_env(), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "cloud.operator.cli", "dlq", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def list_dlq(stack: Any, queue: str) -> list[dict[str, Any]]:
    """`facepipe dlq list --queue QUEUE --json`, parsed."""
    listed = run_dlq(stack, "list", "--queue", queue, "--json")
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line) for line in listed.stdout.splitlines()]


def visible(sqs: Any, queue_url: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


def dead_letter_by_receiving(sqs: Any, queue_url: str, dlq_url: str, expected: int, timeout: float = 30) -> None:
    """Receive everything on `queue_url` without deleting it (visibility 0) until `expected` messages are in
    the DLQ: SQS moves a message there on the receive after its maxReceiveCount-th."""
    deadline = time.monotonic() + timeout
    while visible(sqs, dlq_url) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {expected} messages reached {dlq_url} within {timeout} s")
        sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=0)
