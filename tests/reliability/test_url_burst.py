"""A burst at the local Function URL, as clients make one: 100 signed 1080p frames posted at once over
100 connections. Lambda answers what it cannot run with a 429 over a healthy connection, so every
request gets an HTTP answer: 202 (queued), 429 (throttled) or a 503 that says why, never a reset."""

from __future__ import annotations

import io
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from PIL import Image

from cloud.functions.contracts import HEADER_DEVICE_ID, HEADER_REPLY_TO, HEADER_REQUEST_ID
from tests.conftest import Mailbox, sign_request
from tests.photos import packaged

CLIENTS = 100
PHOTOS = ["face_recognition/obama2.jpg", "face_recognition/biden.jpg", "matplotlib/grace_hopper.jpg",
          "skimage/astronaut.png"]


def full_hd_frames() -> list[bytes]:
    """Each photo scaled to 1080 rows and pasted on a 1920x1080 backdrop, as a camera's JPEG."""
    frames = []
    for index, name in enumerate(PHOTOS):
        with Image.open(packaged(name)) as photo:
            photo = photo.convert("RGB")
            photo = photo.resize((round(photo.width * 1080 / photo.height), 1080))
        frame = Image.new("RGB", (1920, 1080), (90 + 30 * index, 110, 120))
        frame.paste(photo, (index * (1920 - photo.width) // (len(PHOTOS) - 1), 0))
        out = io.BytesIO()
        frame.save(out, "JPEG", quality=90)
        frames.append(out.getvalue())
    return frames


def test_100_frames_at_once_each_get_an_http_answer(local_stack: Any, reply_queue: str) -> None:
    frames = full_hd_frames()
    reply_to = reply_queue.rsplit("/", 1)[-1]  # answers of the accepted ones go to this test's queue
    requests_to_send = []
    for index in range(CLIENTS):
        body = frames[index % len(frames)]
        headers = {"Content-Type": "image/jpeg", HEADER_REQUEST_ID: str(uuid.uuid4()),
                   HEADER_DEVICE_ID: f"burst-cam-{index}", HEADER_REPLY_TO: reply_to}
        requests_to_send.append((body, sign_request(local_stack, "POST", local_stack.function_url, body, headers)))
    start = threading.Barrier(CLIENTS)

    def post(request: tuple[bytes, dict[str, str]]) -> tuple[str, str]:
        body, headers = request
        start.wait()  # all at once
        try:
            reply = requests.post(local_stack.function_url, data=body, headers=headers, timeout=120)
        except requests.RequestException as exc:
            return f"{type(exc).__name__}: {exc}", headers[HEADER_REQUEST_ID]
        if reply.status_code == 503 and "error" not in reply.text:
            return "503 without a reason", headers[HEADER_REQUEST_ID]
        return str(reply.status_code), headers[HEADER_REQUEST_ID]

    with ThreadPoolExecutor(CLIENTS) as pool:
        answered = list(pool.map(post, requests_to_send))
    outcomes = Counter(status for status, _ in answered)
    assert set(outcomes) <= {"202", "429", "503"}, outcomes
    assert outcomes["202"] > 0, outcomes
    # The accepted ones are answered (and none is left to fail on the reply queue once the test deletes it).
    mailbox = Mailbox(local_stack.client("sqs"), reply_queue)
    for status, request_id in answered:
        if status == "202":
            assert mailbox.wait_for(request_id, timeout=120)["request_id"] == request_id
