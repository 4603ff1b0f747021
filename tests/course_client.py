"""The course workload generator's request, written exactly to its protocol: an unsigned JSON POST of
`{request_id, content (base64), filename}` that must be answered 200, then a long poll of the response queue one
message at a time until the answer with that request_id, whose `result` is the answer. Used by the protocol test
and by cloud/bench/json_protocol.py."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import requests


def ask(url: str, sqs: Any, queue_url: str, photo: Path, timeout: float = 60) -> str | None:
    """The answer's `result` for `photo`; None when the POST is not answered 200 or no answer comes in time."""
    request_id = str(uuid.uuid4())
    body = {"request_id": request_id, "content": base64.b64encode(photo.read_bytes()).decode("ascii"),
            "filename": photo.name}
    reply = requests.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"}, timeout=60)
    if reply.status_code != 200:
        return None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1,
                                           WaitTimeSeconds=5).get("Messages", []):
            answer = json.loads(message["Body"])
            if answer["request_id"] == request_id:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                return str(answer["result"])
    return None
