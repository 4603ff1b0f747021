"""Bad uploads over HTTP: each gets a 4xx JSON error with a clear message, nothing is queued, and
the server keeps serving."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests

from cloud.functions.contracts import HEADER_REQUEST_ID
from tests.bad_images import png_claiming
from tests.conftest import Mailbox, post_frame, queue_depth
from tests.photos import packaged


def truncated_jpeg() -> bytes:
    photo = packaged("face_recognition/obama2.jpg").read_bytes()
    return photo[: len(photo) * 2 // 5]


CASES = {
    # name: (body, headers, content type, words the error must contain)
    "empty body": (lambda: b"", {}, "image/jpeg", "empty"),
    "truncated jpeg": (truncated_jpeg, {}, "image/jpeg", "JPEG"),
    "text body": (lambda: b"hello, this is not an image", {}, "text/plain", "JPEG, PNG and WebP"),
    "png claiming 20000x20000": (lambda: png_claiming(20000, 20000), {}, "image/png", "pixels"),
    "7 MB body": (lambda: b"\xff\xd8\xff" + bytes(7 * 1024 * 1024), {}, "image/jpeg", "exceeds"),
    "non-uuid request id": (lambda: packaged("face_recognition/obama2.jpg").read_bytes(),
                            {HEADER_REQUEST_ID: "frame-0001"}, "image/jpeg", "UUID"),
    "10 KB request id": (lambda: packaged("face_recognition/obama2.jpg").read_bytes(),
                         {HEADER_REQUEST_ID: "a" * 10240}, "image/jpeg", "UUID"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_upload_is_a_4xx_and_queues_nothing(local_stack: Any, case: str) -> None:
    make_body, headers, content_type, words = CASES[case]
    sqs = local_stack.client("sqs")
    with local_stack.trigger.paused():  # whatever detection queued would stay visible
        before = queue_depth(sqs, local_stack.request_queue_url)
        request_id = headers.get(HEADER_REQUEST_ID, str(uuid.uuid4()))
        reply = post_frame(local_stack, make_body(), request_id=request_id,
                           headers={"Content-Type": content_type, **headers})
        assert 400 <= reply.status_code < 500, reply.text
        assert reply.headers["Content-Type"] == "application/json"
        error = reply.json()["error"]
        assert words.lower() in error.lower(), error
        assert queue_depth(sqs, local_stack.request_queue_url) == before
    # Still serving: a cheap request gets its answer.
    assert requests.get(local_stack.function_url, timeout=10).status_code == 403


def test_oversized_body_is_refused_before_it_is_sent_when_the_client_asks_first(local_stack: Any) -> None:
    # Expect: 100-continue lets a client learn about the limit without uploading 7 MB.
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(local_stack.function_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    connection.putrequest("POST", "/")
    connection.putheader("Content-Length", str(7 * 1024 * 1024))
    connection.putheader("Expect", "100-continue")
    connection.endheaders()
    reply = connection.getresponse()
    assert reply.status == 413
    assert "exceeds" in reply.read().decode()
    connection.close()


def test_a_good_frame_is_still_answered_after_the_bad_ones(local_stack: Any, responses: Mailbox) -> None:
    request_id = str(uuid.uuid4())
    reply = post_frame(local_stack, packaged("face_recognition/obama2.jpg").read_bytes(), request_id=request_id)
    assert reply.status_code == 202, reply.text
    assert responses.wait_for(request_id)["request_id"] == request_id
