"""AWS_IAM auth on the local Function URL: only requests SigV4-signed with the stack's key get in."""

from __future__ import annotations

import uuid
from typing import Any

import requests

from cloud.contracts import HEADER_DEVICE_ID, HEADER_REPLY_TO, HEADER_REQUEST_ID
from tests.conftest import post_frame, queue_depth, sign_request
from tests.photos import packaged

PHOTO = "face_recognition/obama2.jpg"


def assert_forbidden(reply: requests.Response, reason: str) -> None:
    assert reply.status_code == 403, reply.text
    assert reply.headers["Content-Type"] == "application/json"
    assert reason in reply.json()["error"]


def test_unsigned_and_wrongly_signed_frames_are_refused_and_nothing_is_queued(local_stack: Any) -> None:
    sqs, photo = local_stack.client("sqs"), packaged(PHOTO).read_bytes()
    with local_stack.trigger.paused():
        before = queue_depth(sqs, local_stack.request_queue_url)
        assert_forbidden(post_frame(local_stack, photo, signed=False), "not SigV4-signed")
        assert_forbidden(post_frame(local_stack, photo, secret_key="not-the-stack-secret"),
                         "signature does not match")
        assert queue_depth(sqs, local_stack.request_queue_url) == before


def test_a_signature_for_another_body_is_refused(local_stack: Any) -> None:
    photo = packaged(PHOTO).read_bytes()
    headers = {"Content-Type": "image/jpeg", HEADER_REQUEST_ID: str(uuid.uuid4()), HEADER_DEVICE_ID: "cam"}
    signed = sign_request(local_stack, "POST", local_stack.function_url, photo[:1000], headers)
    reply = requests.post(local_stack.function_url, data=photo, headers=signed, timeout=30)
    assert_forbidden(reply, "signature does not match")


def test_an_unknown_access_key_is_refused(local_stack: Any) -> None:
    photo = packaged(PHOTO).read_bytes()
    headers = {"Content-Type": "image/jpeg", HEADER_REQUEST_ID: str(uuid.uuid4()), HEADER_DEVICE_ID: "cam"}
    signed = sign_request(local_stack, "POST", local_stack.function_url, photo, headers)
    signed["Authorization"] = signed["Authorization"].replace(local_stack.credentials.access_key,
                                                              "AKIAOTHERKEY00000000")
    assert_forbidden(requests.post(local_stack.function_url, data=photo, headers=signed, timeout=30),
                     "unknown access key")


def test_a_reply_to_added_after_signing_is_refused_and_nothing_is_queued(local_stack: Any) -> None:
    # GIVEN a correctly signed frame to which someone on the way adds an unsigned X-Reply-To
    sqs, photo = local_stack.client("sqs"), packaged(PHOTO).read_bytes()
    headers = {"Content-Type": "image/jpeg", HEADER_REQUEST_ID: str(uuid.uuid4()), HEADER_DEVICE_ID: "cam"}
    signed = sign_request(local_stack, "POST", local_stack.function_url, photo, headers)
    signed[HEADER_REPLY_TO] = f"{local_stack.reply_to_prefix}attacker"
    with local_stack.trigger.paused():
        before = queue_depth(sqs, local_stack.request_queue_url)
        reply = requests.post(local_stack.function_url, data=photo, headers=signed, timeout=30)
        assert_forbidden(reply, "not covered by the signature (SignedHeaders): x-reply-to")
        assert queue_depth(sqs, local_stack.request_queue_url) == before
