"""AWS_IAM auth on the local Function URL under attack: only requests SigV4-signed with the stack's key,
recently, over exactly the body and headers that arrive, get in (403 otherwise, nothing queued)."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import botocore.auth
import pytest
import requests

from cloud.functions.contracts import HEADER_ANSWER_SCHEMA, HEADER_DEVICE_ID, HEADER_REPLY_TO, HEADER_REQUEST_ID
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


def _headers(device_id: str = "cam") -> dict[str, str]:
    return {"Content-Type": "image/jpeg", HEADER_REQUEST_ID: str(uuid.uuid4()), HEADER_DEVICE_ID: device_id}


def _signed_at(local_stack: Any, monkeypatch: pytest.MonkeyPatch, age: datetime.timedelta, body: bytes,
               headers: dict[str, str]) -> dict[str, str]:
    """Headers signed by botocore as if its clock read now - `age` (botocore.auth takes the time from
    get_current_datetime, which an SDK on a device with a wrong clock would return)."""
    signed_at = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - age
    with monkeypatch.context() as patch:
        patch.setattr(botocore.auth, "get_current_datetime", lambda: signed_at)
        return sign_request(local_stack, "POST", local_stack.function_url, body, headers)


def test_a_signature_older_than_5_minutes_is_refused(local_stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    photo = packaged(PHOTO).read_bytes()
    with local_stack.trigger.paused():
        stale = _signed_at(local_stack, monkeypatch, datetime.timedelta(minutes=5, seconds=30), photo, _headers())
        assert_forbidden(requests.post(local_stack.function_url, data=photo, headers=stale, timeout=30),
                         "away from server time")
        # The same signing 4 minutes in the past is within SigV4's allowance: the 403 above is the age.
        recent = _signed_at(local_stack, monkeypatch, datetime.timedelta(minutes=4), photo, _headers())
        assert requests.post(local_stack.function_url, data=photo, headers=recent, timeout=60).status_code == 202


def test_a_body_altered_after_signing_is_refused(local_stack: Any) -> None:
    photo = bytearray(packaged(PHOTO).read_bytes())
    signed = sign_request(local_stack, "POST", local_stack.function_url, bytes(photo), _headers())
    photo[len(photo) // 2] ^= 0x01  # one bit, same length: Content-Length still matches
    assert_forbidden(requests.post(local_stack.function_url, data=bytes(photo), headers=signed, timeout=30),
                     "does not match")


def test_a_signed_header_changed_after_signing_is_refused(local_stack: Any) -> None:
    photo = packaged(PHOTO).read_bytes()
    signed = sign_request(local_stack, "POST", local_stack.function_url, photo, _headers("front-door"))
    assert "x-device-id" in signed["Authorization"]
    signed[HEADER_DEVICE_ID] = "back-door"
    assert_forbidden(requests.post(local_stack.function_url, data=photo, headers=signed, timeout=30),
                     "signature does not match")


def test_a_header_the_handler_uses_added_after_signing_is_refused(local_stack: Any) -> None:
    photo = packaged(PHOTO).read_bytes()
    headers = _headers()
    del headers[HEADER_DEVICE_ID]
    signed = sign_request(local_stack, "POST", local_stack.function_url, photo, headers)
    assert "x-device-id" not in signed["Authorization"]
    signed[HEADER_DEVICE_ID] = "someone-elses-camera"  # not covered by the signature
    with local_stack.trigger.paused():
        reply = requests.post(local_stack.function_url, data=photo, headers=signed, timeout=60)
    assert reply.status_code == 403, reply.text


@pytest.mark.parametrize("header", [HEADER_REPLY_TO, HEADER_ANSWER_SCHEMA])
def test_a_routing_header_added_after_signing_is_refused_and_nothing_is_queued(local_stack: Any, header: str) -> None:
    # GIVEN a correctly signed frame to which someone on the way adds an unsigned X-Reply-To (or X-Answer-Schema)
    sqs, photo = local_stack.client("sqs"), packaged(PHOTO).read_bytes()
    signed = sign_request(local_stack, "POST", local_stack.function_url, photo, _headers())
    signed[header] = f"{local_stack.reply_to_prefix}attacker" if header == HEADER_REPLY_TO else "1"
    with local_stack.trigger.paused():
        before = queue_depth(sqs, local_stack.request_queue_url)
        reply = requests.post(local_stack.function_url, data=photo, headers=signed, timeout=30)
        assert_forbidden(reply, f"not covered by the signature (SignedHeaders): {header.lower()}")
        assert queue_depth(sqs, local_stack.request_queue_url) == before
