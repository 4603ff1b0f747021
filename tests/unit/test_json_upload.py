"""JSON uploads at the Function URL (the course workload generator's protocol), handler level, messages on a
real moto server; and the `result` field every answer carries."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud.functions import aws
from cloud.functions.contracts import (
    DetectAccepted,
    ErrorBody,
    RecognisedFace,
    RequestMessage,
    ResponseMessage,
    Timings,
)
from cloud.functions.detection import handler as detection
from cloud.functions.settings import Settings
from tests.bad_images import png_claiming
from tests.photos import packaged
from tests.unit.test_detection_handler import bound  # noqa: F401 - the fixture: a stack that binds devices

SAMPLE_EVENT = Path(__file__).resolve().parents[2] / "events" / "function_url_frame.json"


@pytest.fixture(scope="module", autouse=True)
def fresh_detector() -> Iterator[None]:
    yield
    detection.get_detector.cache_clear()


def json_event(body: Any, **headers: str) -> dict[str, Any]:
    """A payload-2.0 event as the Function URL builds it for a JSON POST (text body, not base64)."""
    event: dict[str, Any] = json.loads(SAMPLE_EVENT.read_text())
    event["headers"] = {"content-type": "application/json", "host": event["headers"]["host"], **headers}
    event["body"] = body if isinstance(body, str) else json.dumps(body)
    event["isBase64Encoded"] = False
    return event


def course_body(photo: bytes, request_id: str | None = None, filename: str = "test_00.jpg") -> dict[str, str]:
    return {"request_id": request_id or str(uuid.uuid4()), "content": base64.b64encode(photo).decode("ascii"),
            "filename": filename}


def _received(settings: Settings) -> list[RequestMessage]:
    reply = aws.client("sqs").receive_message(QueueUrl=settings.request_queue_url, MaxNumberOfMessages=10)
    return [RequestMessage.model_validate_json(m["Body"]) for m in reply.get("Messages", [])]


def test_json_upload_is_answered_200_and_queued_with_its_request_id_and_filename(settings: Settings) -> None:
    body = course_body(packaged("face_recognition/obama2.jpg").read_bytes(), filename="obama2.jpg")
    response = detection.handler(json_event(body), None)
    assert response["statusCode"] == 200, response["body"]
    accepted = DetectAccepted.model_validate_json(response["body"])  # the raw upload's 202 body
    assert (accepted.request_id, accepted.faces) == (body["request_id"], 1)
    assert response["headers"]["x-request-id"] == body["request_id"]
    [message] = _received(settings)
    assert (message.request_id, message.device_id, message.filename) == (body["request_id"], "json-client",
                                                                         "obama2.jpg")
    assert len(message.faces) == 1


def test_json_upload_takes_the_device_id_header_and_ignores_extra_fields(settings: Settings) -> None:
    body = {**course_body(packaged("face_recognition/obama2.jpg").read_bytes()), "client": "workload-gen"}
    response = detection.handler(json_event(body, **{"x-device-id": "lab-pc-3", "content-type":
                                                     "Application/JSON; charset=utf-8"}), None)
    assert response["statusCode"] == 200, response["body"]
    [message] = _received(settings)
    assert message.device_id == "lab-pc-3"


def test_raw_uploads_keep_202(settings: Settings) -> None:
    event: dict[str, Any] = json.loads(SAMPLE_EVENT.read_text())
    assert detection.handler(event, None)["statusCode"] == 202


def _photo_b64() -> str:
    return base64.b64encode(packaged("face_recognition/obama2.jpg").read_bytes()).decode("ascii")


GOOD_ID = "0b7c6e4e-9a51-4c47-8a8e-2f4f8b7f0c11"
# body -> (status, words the error must contain)
BAD_BODIES: dict[str, tuple[str, int, str]] = {
    "not JSON": ("{request_id: 1", 400, "not valid JSON"),
    "a JSON array": (json.dumps([1, 2]), 400, "JSON object"),
    "no request_id": (json.dumps({"content": "AAAA", "filename": "a.jpg"}), 400, "request_id"),
    "request_id not a UUID": (json.dumps({"request_id": "frame-1", "content": "AAAA"}), 400, "request_id"),
    "request_id a number": (json.dumps({"request_id": 7, "content": "AAAA"}), 400, "request_id"),
    "no content": (json.dumps({"request_id": GOOD_ID, "filename": "a.jpg"}), 400, "content"),
    "empty content": (json.dumps({"request_id": GOOD_ID, "content": ""}), 400, "content"),
    "content not base64": (json.dumps({"request_id": GOOD_ID, "content": "%%% no %%%"}), 400, "content"),
    "filename not a string": (json.dumps({"request_id": GOOD_ID, "content": "AAAA", "filename": 3}), 400,
                              "filename"),
    "filename of 10 KB": (json.dumps({"request_id": GOOD_ID, "content": _photo_b64(), "filename": "a" * 10240}),
                          400, "filename"),
    "content a text file": (json.dumps({"request_id": GOOD_ID, "content": base64.b64encode(b"hello").decode()}),
                            415, "JPEG, PNG and WebP"),
    "content a PNG claiming 20000x20000": (
        json.dumps({"request_id": GOOD_ID, "content": base64.b64encode(png_claiming(20000, 20000)).decode()}),
        413, "pixels"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_malformed_json_bodies_are_refused_naming_the_field(settings: Settings, case: str) -> None:
    body, status, words = BAD_BODIES[case]
    response = detection.handler(json_event(body), None)
    assert response["statusCode"] == status, response["body"]
    error = ErrorBody.model_validate_json(response["body"])
    assert words in error.error, error.error
    assert len(response["body"]) < 1000
    assert _received(settings) == []


def test_decoded_image_bytes_are_what_the_byte_limit_measures(settings: Settings,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    photo = packaged("face_recognition/obama2.jpg").read_bytes()
    monkeypatch.setattr(settings, "max_body_bytes", len(photo) - 1)
    monkeypatch.setattr(detection, "get_settings", lambda: settings)
    response = detection.handler(json_event(course_body(photo)), None)
    assert response["statusCode"] == 413
    assert f"{len(photo)} bytes" in ErrorBody.model_validate_json(response["body"]).error


def _face(left: float, name: str) -> RecognisedFace:
    return RecognisedFace(box=[left, 10, left + 50, 60], name=name, distance=0.5, probability=0.99)


def _answer(faces: list[RecognisedFace], **extra: Any) -> ResponseMessage:
    return ResponseMessage(request_id=GOOD_ID, device_id="cam", faces=faces, model="m",
                           timings=Timings(detect_ms=1, queue_wait_ms=1, recognise_ms=1), **extra)


def test_result_names_the_faces_by_left_edge() -> None:
    assert _answer([]).result == ""
    assert _answer([_face(10, "alice")]).result == "alice"
    assert _answer([_face(300, "bob"), _face(10, "alice"), _face(120, "unknown")]).result == "alice,unknown,bob"
    wire = json.loads(_answer([_face(300, "bob"), _face(10, "alice")]).model_dump_json())
    assert wire["result"] == "alice,bob"
    assert ResponseMessage.model_validate(wire).result == "alice,bob"


def test_a_result_that_contradicts_the_faces_is_refused() -> None:
    wire = json.loads(_answer([_face(10, "alice")]).model_dump_json())
    with pytest.raises(ValueError, match="does not match"):
        ResponseMessage.model_validate({**wire, "result": "bob"})


def test_deeply_nested_json_is_a_400_not_a_500(settings: Settings) -> None:
    for body in ("[" * 100_000, '{"request_id": ' + "[" * 100_000 + "]" * 100_000 + "}"):
        response = detection.handler(json_event(body), None)
        assert response["statusCode"] == 400, response["body"]
        assert "nested too deeply" in ErrorBody.model_validate_json(response["body"]).error
    assert _received(settings) == []


def test_a_bound_stack_refuses_a_caller_that_is_no_device_before_parsing_its_json(bound: Settings) -> None:  # noqa: F811
    from tests.unit.test_detection_handler import _signed_by

    response = detection.handler(_signed_by("admin", json_event("[" * 100_000)), None)
    assert response["statusCode"] == 403, response["body"]
    assert "not a device of this stack" in ErrorBody.model_validate_json(response["body"]).error
