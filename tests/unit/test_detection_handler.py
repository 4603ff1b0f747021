"""Detection handler end to end: payload-2.0 events in, 202/4xx/5xx out, messages on a real moto server."""

from __future__ import annotations

import base64
import copy
import io
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from cloud.functions import aws
from cloud.functions.contracts import MAX_QUEUE_MESSAGE_BYTES, DetectAccepted, ErrorBody, RequestMessage
from cloud.functions.detection import handler as detection
from cloud.functions.settings import Settings, get_settings
from tests.bad_images import png_claiming
from tests.photos import packaged

SAMPLE_EVENT = Path(__file__).resolve().parents[2] / "events" / "function_url_frame.json"
Event = dict[str, Any]


@pytest.fixture(scope="module", autouse=True)
def fresh_detector() -> Iterator[None]:
    """This module's handler builds its own detector; later modules get a fresh one."""
    yield
    detection.get_detector.cache_clear()


def _sample() -> Event:
    event: Event = json.loads(SAMPLE_EVENT.read_text())
    return event


def _with_body(data: bytes, **headers: str) -> Event:
    event = _sample()
    event["body"] = base64.b64encode(data).decode("ascii")
    event["headers"].update(headers)
    return event


def _received(settings: Settings) -> list[RequestMessage]:
    reply = aws.client("sqs").receive_message(QueueUrl=settings.request_queue_url, MaxNumberOfMessages=10)
    return [RequestMessage.model_validate_json(m["Body"]) for m in reply.get("Messages", [])]


def test_sample_event_is_detected_and_queued(settings: Settings) -> None:
    event = _sample()
    response = detection.handler(event, None)
    assert response["statusCode"] == 202
    accepted = DetectAccepted.model_validate_json(response["body"])
    assert accepted.request_id == event["headers"]["x-request-id"] and accepted.faces == 1
    [message] = _received(settings)
    assert (message.request_id, message.device_id) == (accepted.request_id, event["headers"]["x-device-id"])
    assert message.frame_timestamp == float(event["headers"]["x-frame-timestamp"])
    assert len(message.faces) == 1 and message.faces[0].crop_jpeg_b64


def _reply_prefix(monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    monkeypatch.setenv("FACEPIPE_REPLY_TO_PREFIX", prefix)
    get_settings.cache_clear()


def test_request_id_is_generated_when_absent_and_headers_are_case_insensitive(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _reply_prefix(monkeypatch, "facepipe-replies-")
    event = _sample()
    headers = event["headers"]
    del headers["x-request-id"]
    headers["X-Device-Id"] = headers.pop("x-device-id")
    headers["X-Reply-To"] = "facepipe-replies-cam-1"
    response = detection.handler(event, None)
    assert response["statusCode"] == 202
    request_id = DetectAccepted.model_validate_json(response["body"]).request_id
    assert str(uuid.UUID(request_id)) == request_id and response["headers"]["x-request-id"] == request_id
    [message] = _received(settings)
    assert message.request_id == request_id and message.reply_to == "facepipe-replies-cam-1"


@pytest.mark.parametrize(("prefix", "reply_to"), [("facepipe-replies-", "facepipe-requests"),
                                                  ("facepipe-replies-", "facepipe-replies"),
                                                  ("", "facepipe-replies-cam-1")])
def test_reply_to_the_recognizer_would_refuse_is_a_400_not_a_202(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, prefix: str, reply_to: str
) -> None:
    # Accepting it would queue a message that fails every receive and ends in the DLQ (and its alarm).
    _reply_prefix(monkeypatch, prefix)
    response = detection.handler(_with_body(_obama(), **{"x-reply-to": reply_to}), None)
    assert response["statusCode"] == 400
    error = ErrorBody.model_validate_json(response["body"]).error
    assert "X-Reply-To" in error and ("disabled" in error if not prefix else repr(prefix) in error)
    assert _received(settings) == []


@pytest.mark.parametrize(("header", "evidence_answers", "schema"),
                         [(None, "true", 1), ("1", "true", 1), ("2", "true", 2), ("2", "false", 1)])
def test_the_request_carries_the_answer_schema_the_client_asked_for(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, header: str | None, evidence_answers: str, schema: int
) -> None:
    """X-Answer-Schema 2 asks for each face's evidence; without it the answer is schema 1, as before the header. A
    deployment without FACEPIPE_EVIDENCE_ANSWERS (the template's public URL) answers schema 1: the candidates would
    name enrolled people to anyone."""
    monkeypatch.setenv("FACEPIPE_EVIDENCE_ANSWERS", evidence_answers)
    get_settings.cache_clear()
    response = detection.handler(_with_body(_obama(), **({"X-Answer-Schema": header} if header else {})), None)
    assert response["statusCode"] == 202
    [message] = _received(settings)
    assert message.answer_schema == schema
    [face] = message.faces
    assert face.quality is not None and face.quality.probability == face.probability  # measured whatever is asked


def _obama() -> bytes:
    return packaged("face_recognition/obama.jpg").read_bytes()


def _method(event: Event) -> None:
    event["requestContext"]["http"]["method"] = "GET"


def _plain_text(event: Event) -> None:
    event["body"], event["isBase64Encoded"] = "hello, not an image", False


def _bad_base64(event: Event) -> None:
    event["body"] = "%%% not base64 %%%"


BAD_INPUTS: dict[str, tuple[Callable[[], Event], int]] = {
    "GET": (lambda: _mutated(_method), 405),
    "non-UUID request id": (lambda: _with_body(_obama(), **{"x-request-id": "frame-42"}), 400),
    "10 KB request id": (lambda: _with_body(_obama(), **{"x-request-id": "a" * 10_240}), 400),
    "missing device id": (lambda: _mutated(lambda e: e["headers"].pop("x-device-id")), 400),
    "bad device id": (lambda: _with_body(_obama(), **{"x-device-id": "cam 1/../etc"}), 400),
    "bad frame timestamp": (lambda: _with_body(_obama(), **{"x-frame-timestamp": "yesterday"}), 400),
    "infinite frame timestamp": (lambda: _with_body(_obama(), **{"x-frame-timestamp": "inf"}), 400),
    "bad reply-to": (lambda: _with_body(_obama(), **{"x-reply-to": "https://sqs.example/queue"}), 400),
    "answer schema 3": (lambda: _with_body(_obama(), **{"x-answer-schema": "3"}), 400),
    "empty body": (lambda: _with_body(b""), 400),
    "truncated JPEG": (lambda: _with_body(_obama()[:20_000]), 400),
    "text body": (lambda: _mutated(_plain_text), 415),
    "invalid base64": (lambda: _mutated(_bad_base64), 400),
    "PNG claiming 20000x20000": (lambda: _with_body(png_claiming(20000, 20000)), 413),
    "7 MB body": (lambda: _with_body(_obama() + bytes(7 * 1024 * 1024)), 413),
}


def _mutated(change: Callable[[Event], object]) -> Event:
    event = _sample()
    change(event)
    return event


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_clear_4xx_and_queues_nothing(settings: Settings, case: str) -> None:
    make, status = BAD_INPUTS[case]
    event = make()
    response = detection.handler(copy.deepcopy(event), None)
    assert response["statusCode"] == status
    error = ErrorBody.model_validate_json(response["body"])
    assert len(error.error) > 10
    sent_id = event["headers"].get("x-request-id")
    assert error.request_id == (sent_id if sent_id and len(sent_id) == 36 else None)
    assert len(response["body"]) < 1000  # a 10 KB id is never echoed back
    assert (response["headers"].get("allow") == "POST") == (status == 405)
    assert _received(settings) == []


def test_unreachable_queue_is_a_503(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = settings.request_queue_url.rsplit("/", 1)[0] + "/no-such-queue"
    monkeypatch.setenv("FACEPIPE_REQUEST_QUEUE_URL", missing)
    get_settings.cache_clear()
    response = detection.handler(_sample(), None)
    assert response["statusCode"] == 503
    assert "retry" in ErrorBody.model_validate_json(response["body"]).error


@pytest.mark.slow
def test_a_crowded_frame_queues_the_most_probable_faces_up_to_the_limit_with_crops_in_s3(settings: Settings) -> None:
    # GIVEN six copies of a real group photo (six faces each): 36 real faces in one 3840x1772 frame,
    # more than the default face limit
    with Image.open(packaged("insightface/t1.jpg")) as photo:
        tile = photo.convert("RGB")
    mosaic = Image.new("RGB", (tile.width * 3, tile.height * 2))
    for i in range(6):
        mosaic.paste(tile, (tile.width * (i % 3), tile.height * (i // 3)))
    body = io.BytesIO()
    mosaic.save(body, "JPEG", quality=90)
    limit = settings.max_faces
    assert limit == Settings.model_fields["max_faces"].default
    # ... every face the handler's own detector finds in it, uncapped, in its order of preference
    found = detection.get_detector().detect(Image.open(io.BytesIO(body.getvalue())))
    assert len(found) > limit

    # WHEN it is posted
    response = detection.handler(_with_body(body.getvalue()), None)

    # THEN the answer says how many faces were queued and how many dropped
    assert response["statusCode"] == 202
    accepted = DetectAccepted.model_validate_json(response["body"])
    assert (accepted.faces, accepted.faces_dropped) == (limit, len(found) - limit)
    reply = aws.client("sqs").receive_message(QueueUrl=settings.request_queue_url)
    [raw] = [m["Body"] for m in reply["Messages"]]
    assert len(raw.encode("utf-8")) <= MAX_QUEUE_MESSAGE_BYTES
    message = RequestMessage.model_validate_json(raw)
    assert (len(message.faces), message.faces_dropped) == (limit, len(found) - limit)
    # ... the kept faces are the most probable (ties: the larger), in that order
    kept = found[:limit]
    assert [f.probability for f in message.faces] == pytest.approx([f.probability for f in kept], abs=1e-6)
    for wire, face in zip(message.faces, kept, strict=True):
        assert wire.box == pytest.approx(list(face.box), abs=0.01)
    assert min(f.probability for f in kept) >= max(f.probability for f in found[limit:])
    # ... and their crops went to S3 (the only objects written), as they would not fit inline
    assert all(f.crop_jpeg_b64 is None for f in message.faces)
    s3 = aws.client("s3")
    listing = s3.list_objects_v2(Bucket=settings.bucket, Prefix="crops/")
    scope = f"crops/{message.device_id}/{accepted.request_id}"
    assert sorted(obj["Key"] for obj in listing["Contents"]) == sorted(f"{scope}/{i}.jpg" for i in range(limit))
    crops = [s3.get_object(Bucket=settings.bucket, Key=f.crop_s3_key)["Body"].read() for f in message.faces]
    assert sum(len(base64.b64encode(c)) for c in crops) > MAX_QUEUE_MESSAGE_BYTES


def test_logs_carry_the_request_id_and_never_the_body(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()  # powertools' handler keeps the stdout it saw at import; read its output directly
    monkeypatch.setattr(detection.logger.registered_handler, "stream", stream)
    event = _sample()
    detection.handler(event, None)
    out = stream.getvalue()
    logs = [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"level"' in line]
    assert any(log.get("correlation_id") == event["headers"]["x-request-id"] for log in logs)
    assert event["body"][:64] not in out


def test_a_frame_too_small_for_any_face_is_accepted_with_none(settings: Settings) -> None:
    # A valid image thinner than MTCNN's smallest face: not bad input, just a frame without faces.
    with Image.open(packaged("face_recognition/obama.jpg")) as photo:
        strip = photo.convert("RGB").crop((0, 0, photo.width, 12))
    body = io.BytesIO()
    strip.save(body, "JPEG")
    response = detection.handler(_with_body(body.getvalue()), None)
    assert response["statusCode"] == 202, response["body"]
    assert DetectAccepted.model_validate_json(response["body"]).faces == 0
    [message] = _received(settings)
    assert message.faces == [] and (message.image_width, message.image_height) == (strip.width, 12)


def test_emf_metrics_carry_detect_ms_and_faces(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    response = detection.handler(_sample(), None)
    [emf] = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    [directive] = emf["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "facepipe" and emf["service"] == "facepipe-detection"
    assert {m["Name"] for m in directive["Metrics"]} >= {"DetectMs", "Faces"}
    accepted = DetectAccepted.model_validate_json(response["body"])
    assert emf["Faces"] == [accepted.faces] == [1]  # powertools writes each metric's values as a list
    assert emf["DetectMs"] == [pytest.approx(accepted.detect_ms, abs=0.01)]
    # CPU time: MTCNN's within the whole invocation's, which also decoded the image and queued the faces
    [detect_cpu], [handler_cpu] = emf["DetectCpuMs"], emf["HandlerCpuMs"]
    assert 0 < detect_cpu < handler_cpu


def test_a_refused_frame_still_reports_the_cpu_it_cost(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    response = detection.handler(_with_body(b"not an image"), None)
    assert response["statusCode"] == 415
    [emf] = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert emf["Rejected"] == [1] and emf["HandlerCpuMs"][0] > 0 and "DetectCpuMs" not in emf


# --- devices as identities (FACEPIPE_BIND_DEVICES) --------------------------------------------------------

DEVICE_PREFIX, REPLY_PREFIX = "facepipe-device-", "facepipe_answers-"


@pytest.fixture
def bound(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("FACEPIPE_BIND_DEVICES", "true")
    monkeypatch.setenv("FACEPIPE_DEVICE_USER_PREFIX", DEVICE_PREFIX)
    monkeypatch.setenv("FACEPIPE_REPLY_TO_PREFIX", REPLY_PREFIX)
    monkeypatch.setenv("FACEPIPE_DEVICE_ACCOUNT", "123456789012")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def _signed_by(user: str, event: Event | None = None, path: str = "/facepipe/facepipe/devices/") -> Event:
    """The event as AWS builds it for a request signed by IAM user `user` (authorizer.iam's fields)."""
    event = event or _sample()
    event["requestContext"]["authorizer"] = {"iam": {
        "accessKey": "AKIAEXAMPLE", "accountId": "123456789012", "callerId": "AIDAEXAMPLE",
        "userArn": f"arn:aws:iam::123456789012:user{path}{user}", "userId": "AIDAEXAMPLE"}}
    return event


def test_bound_device_sends_as_itself_and_its_answers_go_to_its_own_queue(bound: Settings) -> None:
    event = _signed_by(DEVICE_PREFIX + "cam-lobby-01")
    response = detection.handler(event, None)
    assert response["statusCode"] == 202, response["body"]
    [message] = _received(bound)
    assert message.device_id == "cam-lobby-01"
    assert message.reply_to == REPLY_PREFIX + "cam-lobby-01"  # set by detection, not asked for


def test_bound_device_may_name_its_own_queue(bound: Settings) -> None:
    event = _signed_by(DEVICE_PREFIX + "cam-lobby-01")
    event["headers"]["x-reply-to"] = REPLY_PREFIX + "cam-lobby-01"
    assert detection.handler(event, None)["statusCode"] == 202
    assert [m.reply_to for m in _received(bound)] == [REPLY_PREFIX + "cam-lobby-01"]


@pytest.mark.parametrize(("user", "headers", "why"), [
    (DEVICE_PREFIX + "cam-b", {}, "is not the caller's device 'cam-b'"),  # cam-b claims to be cam-lobby-01
    (DEVICE_PREFIX + "cam-lobby-01", {"x-reply-to": REPLY_PREFIX + "cam-b"},
     "is not the queue of device 'cam-lobby-01'"),
    ("admin", {}, "not a device of this stack"),
    ("otherstack-device-cam-lobby-01", {}, "not a device of this stack"),
])
def test_bound_device_cannot_act_for_another(bound: Settings, user: str, headers: dict[str, str], why: str) -> None:
    event = _signed_by(user)
    event["headers"].update(headers)
    response = detection.handler(event, None)
    assert response["statusCode"] == 403
    assert why in ErrorBody.model_validate_json(response["body"]).error
    assert _received(bound) == []


def test_bound_stack_refuses_an_unsigned_event(bound: Settings) -> None:
    """No authorizer block (auth NONE, or not a URL request): no identity, no frame."""
    response = detection.handler(_sample(), None)
    assert response["statusCode"] == 403 and _received(bound) == []


def test_bound_json_upload_without_a_device_header_is_the_callers(bound: Settings) -> None:
    from tests.unit.test_json_upload import course_body, json_event

    body = course_body(packaged("face_recognition/obama2.jpg").read_bytes())
    response = detection.handler(_signed_by(DEVICE_PREFIX + "cam-json", json_event(body)), None)
    assert response["statusCode"] == 200, response["body"]
    [message] = _received(bound)
    assert (message.device_id, message.reply_to) == ("cam-json", REPLY_PREFIX + "cam-json")
    claimed = json_event(course_body(packaged("face_recognition/obama2.jpg").read_bytes()), **{"x-device-id": "b"})
    assert detection.handler(_signed_by(DEVICE_PREFIX + "cam-json", claimed), None)["statusCode"] == 403
