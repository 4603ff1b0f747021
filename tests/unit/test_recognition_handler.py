"""Recognition handler against a real moto server over HTTP, with real weights and real photos.

Request messages are real: faces detected in packaged photos, crops JPEG-encoded as the detection
side does, sent to a real request queue and received with every attribute, then handed to the
handler as the Lambda SQS event the event source mapping builds.
"""

from __future__ import annotations

import base64
import io
import json
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cloud.functions import aws
from cloud.functions.contracts import (
    CROP_SIZE,
    EVIDENCE_SCHEMA,
    MAX_QUEUE_MESSAGE_BYTES,
    UNKNOWN_NAME,
    DetectedFace,
    FaceQuality,
    RequestMessage,
    ResponseMessage,
    crop_key,
)
from cloud.functions.detection.detector import Detection, Detector
from cloud.functions.detection.enqueue import Frame, plan, upload_crops
from cloud.functions.enrollment import enroll_photos
from cloud.functions.images import encode_jpeg
from cloud.functions.recognition import handler as recognition
from cloud.functions.recognition.face_records import FaceRecord
from cloud.functions.recognition.gallery import GalleryModelMismatch, load_gallery, save_gallery
from cloud.functions.settings import Settings
from tests.answer_schema_1 import SCHEMA_1_ANSWER_FIELDS, SCHEMA_1_FACE_FIELDS
from tests.moto_env import moto_server, point_boto3_at
from tests.photos import packaged, weights_path

REGION = "us-east-1"
REPLY_PREFIX = "facepipe-reply-"
THRESHOLD = Settings.model_fields["match_threshold"].default


@dataclass
class Stack:
    sqs: Any
    s3: Any
    bucket: str
    request_queue: str
    response_queue: str
    device_queue: str  # allowed by the reply_to prefix
    other_queue: str  # not allowed
    gallery_uri: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with moto_server() as endpoint, pytest.MonkeyPatch.context() as mp:
        point_boto3_at(endpoint, mp.setenv, REGION)
        sqs, s3 = aws.client("sqs"), aws.client("s3")
        s3.create_bucket(Bucket="facepipe")
        s3.put_bucket_versioning(Bucket="facepipe", VersioningConfiguration={"Status": "Enabled"})
        queues = {name: sqs.create_queue(QueueName=name)["QueueUrl"]
                  for name in ("requests", "responses", f"{REPLY_PREFIX}cam1", "other-queue")}
        env = {
            "FACEPIPE_RESPONSE_QUEUE_URL": queues["responses"],
            "FACEPIPE_BUCKET": "facepipe",
            "FACEPIPE_GALLERY_URI": "s3://facepipe/gallery/gallery.npz",
            # The reference engine: the chunking test counts passes with a torch hook on the model. The default
            # engine (onnx) runs this handler in test_sample_events.py, test_lambda_filesystem.py and tests/integration.
            "FACEPIPE_ENGINE": "torch",
            "FACEPIPE_WEIGHTS_PATH": str(weights_path()),
            "FACEPIPE_REPLY_TO_PREFIX": REPLY_PREFIX,
            "FACEPIPE_THREADS": "2",
            "FACEPIPE_PERSIST_RESULTS": "false",
        }
        for name, value in env.items():
            mp.setenv(name, value)
        recognition.reset_caches()
        yield Stack(sqs, s3, "facepipe", queues["requests"], queues["responses"], queues[f"{REPLY_PREFIX}cam1"],
                    queues["other-queue"], env["FACEPIPE_GALLERY_URI"], env)
    recognition.reset_caches()
    aws.client.cache_clear()


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector()


@pytest.fixture(scope="module")
def enrolled(stack: Stack, detector: Detector) -> None:
    """Barack Obama and Joe Biden enrolled into the S3 gallery with the handler's own embedder."""
    settings = recognition.get_settings()
    embedder = recognition.get_embedder(settings.weights_path, settings.threads, settings.engine)
    report = enroll_photos(stack.gallery_uri, settings.weights_path,
                           {"barack_obama": [packaged("face_recognition/obama.jpg")],
                            "joe_biden": [packaged("face_recognition/biden.jpg")]},
                           detector=detector, embedder=embedder)
    assert report.enrolled == {"barack_obama": 1, "joe_biden": 1}


@pytest.fixture(autouse=True)
def fresh_settings(stack: Stack) -> Iterator[None]:
    """Each test may change FACEPIPE_* settings; the embedder stays loaded (same weights)."""
    yield
    recognition.get_settings.cache_clear()
    recognition.get_container.cache_clear()


@pytest.fixture(scope="module")
def crops(detector: Detector) -> dict[str, bytes]:
    """The single face of some packaged photos, as the JPEG the detection side would queue."""
    result = {}
    for key, photo in (("obama2", "face_recognition/obama2.jpg"), ("biden", "face_recognition/biden.jpg"),
                       ("hopper", "matplotlib/grace_hopper.jpg")):
        faces = detector.detect(Image.open(packaged(photo)).convert("RGB"))
        assert len(faces) == 1, photo
        result[key] = encode_jpeg(faces[0].crop)
    return result


def request(crops: list[bytes], *, reply_to: str | None = None, in_s3: bool = False) -> RequestMessage:
    """A request with these crops inline, or (in_s3) pointing at its own crop keys (upload them with `store`)."""
    request_id = str(uuid.uuid4())
    faces = [
        DetectedFace(box=[10.0 * i, 20.0, 10.0 * i + 100, 140.0], probability=0.99,
                     landmarks=[[1.0, 2.0]] * 5,
                     crop_jpeg_b64=None if in_s3 else base64.b64encode(jpeg).decode(),
                     crop_s3_key=crop_key("cam1", request_id, i) if in_s3 else None)
        for i, jpeg in enumerate(crops)
    ]
    return RequestMessage(request_id=request_id, device_id="cam1", frame_timestamp=time.time() - 0.5,
                          detected_at=time.time(), detect_ms=42.0, image_width=640, image_height=480,
                          reply_to=reply_to, faces=faces)


def store(stack: Stack, request_id: str, crops: list[bytes]) -> None:
    for i, jpeg in enumerate(crops):
        stack.s3.put_object(Bucket=stack.bucket, Key=crop_key("cam1", request_id, i), Body=jpeg)


def deliver(stack: Stack, bodies: list[str], visibility: int = 30) -> dict[str, Any]:
    """Send the bodies to the request queue and receive them back as one Lambda SQS event."""
    sent = {stack.sqs.send_message(QueueUrl=stack.request_queue, MessageBody=b)["MessageId"] for b in bodies}
    return receive_event(stack, sent, visibility)


def receive_event(stack: Stack, message_ids: set[str], visibility: int = 30) -> dict[str, Any]:
    records: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 10
    while set(records) != message_ids and time.monotonic() < deadline:
        reply = stack.sqs.receive_message(QueueUrl=stack.request_queue, MaxNumberOfMessages=10,
                                          AttributeNames=["All"], VisibilityTimeout=visibility, WaitTimeSeconds=1)
        for m in reply.get("Messages", []):
            if m["MessageId"] not in message_ids:  # an earlier test's failed record, visible again: done with
                stack.sqs.delete_message(QueueUrl=stack.request_queue, ReceiptHandle=m["ReceiptHandle"])
                continue
            records[m["MessageId"]] = {
                "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                "attributes": m["Attributes"], "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs", "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:requests",
                "awsRegion": REGION,
            }
    assert set(records) == message_ids
    return {"Records": list(records.values())}


def drain(stack: Stack, queue_url: str, expected: int) -> list[ResponseMessage]:
    answers: list[ResponseMessage] = []
    deadline = time.monotonic() + 10
    while len(answers) < expected and time.monotonic() < deadline:
        reply = stack.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for m in reply.get("Messages", []):
            answers.append(ResponseMessage.model_validate_json(m["Body"]))
            stack.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
    # nothing more than expected arrives
    extra = stack.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    assert not extra.get("Messages"), [m["Body"][:200] for m in extra["Messages"]]
    return answers


def failures(result: dict[str, Any]) -> set[str]:
    return {item["itemIdentifier"] for item in result["batchItemFailures"]}


# --- tests -------------------------------------------------------------------------------------------


def test_malformed_messages_fail_alone_and_good_ones_are_answered(
    stack: Stack, enrolled: None, crops: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a batch: two good frames (one with two faces), broken JSON, an unknown schema version,
    # and a message whose crop is not a JPEG
    known = request([crops["obama2"], crops["hopper"]])
    single = request([crops["biden"]])
    future = json.loads(request([crops["biden"]]).model_dump_json()) | {"schema_version": 2}
    not_jpeg = request([b"GIF89a definitely not a jpeg"])
    bodies = [known.model_dump_json(), "{not json", json.dumps(future), single.model_dump_json(),
              not_jpeg.model_dump_json()]
    event = deliver(stack, bodies)
    by_body = {r["body"]: r["messageId"] for r in event["Records"]}
    # ... and a spy on the (real) embedder that counts forward passes
    settings = recognition.get_settings()
    embedder = recognition.get_embedder(settings.weights_path, settings.threads, settings.engine)
    passes: list[int] = []
    real_embed = embedder.embed

    def counting_embed(batch: list[Any], **options: Any) -> Any:
        passes.append(len(batch))
        return real_embed(batch, **options)

    monkeypatch.setattr(embedder, "embed", counting_embed)

    # WHEN the handler runs
    result = recognition.handler(event, None)

    # THEN exactly the three bad records are reported, the batch's three crops went through one call
    assert failures(result) == {by_body[bodies[1]], by_body[bodies[2]], by_body[bodies[4]]}
    assert passes == [3]
    answers = {a.request_id: a for a in drain(stack, stack.response_queue, 2)}
    assert set(answers) == {known.request_id, single.request_id}
    two = answers[known.request_id]
    assert [f.name for f in two.faces] == ["barack_obama", UNKNOWN_NAME]
    assert two.faces[0].distance is not None and two.faces[0].distance <= THRESHOLD
    assert two.faces[1].distance is not None and two.faces[1].distance > THRESHOLD
    assert [f.box for f in two.faces] == [f.box for f in known.faces]
    assert two.device_id == "cam1" and two.timings.detect_ms == 42.0 and two.model == embedder.model_tag
    assert [f.name for f in answers[single.request_id].faces] == ["joe_biden"]


def test_every_record_bad_is_reported_not_raised(stack: Stack, enrolled: None) -> None:
    event = deliver(stack, ["[]", '{"schema_version": 1}'])
    result = recognition.handler(event, None)
    assert failures(result) == {r["messageId"] for r in event["Records"]}
    drain(stack, stack.response_queue, 0)


def _with_quality(sent: RequestMessage, measured: FaceQuality, schema: int) -> RequestMessage:
    """`sent` asking for answer `schema`, its first face with `measured` (the rest as an older detector sends them)."""
    faces = [sent.faces[0].model_copy(update={"quality": measured}), *sent.faces[1:]]
    return sent.model_copy(update={"faces": faces, "answer_schema": schema})


def test_each_face_carries_its_candidates_and_the_detection_quality(
    stack: Stack, enrolled: None, crops: dict[str, bytes]
) -> None:
    measured = FaceQuality(width_px=48.5, sharpness=12.3, probability=0.99)
    sent = _with_quality(request([crops["obama2"], crops["hopper"]]), measured, EVIDENCE_SCHEMA)
    recognition.handler(deliver(stack, [sent.model_dump_json()]), None)
    [answer] = drain(stack, stack.response_queue, 1)
    assert answer.schema_version == EVIDENCE_SCHEMA
    obama, hopper = answer.faces
    assert (obama.quality, hopper.quality) == (measured, None)
    # both enrolled people, nearest first, whatever the threshold; the nearest is the face's own match
    assert [c.name for c in obama.candidates] == ["barack_obama", "joe_biden"]
    assert obama.candidates[0].distance == obama.distance and obama.candidates[1].distance > THRESHOLD
    assert hopper.name == UNKNOWN_NAME and {c.name for c in hopper.candidates} == {"barack_obama", "joe_biden"}
    assert hopper.candidates[0].distance == hopper.distance
    assert answer.result == "barack_obama,unknown"


def test_a_client_that_asks_for_schema_1_gets_exactly_schema_1(
    stack: Stack, enrolled: None, crops: dict[str, bytes]
) -> None:
    """A client of the first contract (this project's edge before evidence refused unknown fields) is sent the
    same answer as before: the same names, and no field it does not know."""
    measured = FaceQuality(width_px=48.5, sharpness=12.3, probability=0.99)
    sent = _with_quality(request([crops["obama2"], crops["hopper"]]), measured, 1)
    recognition.handler(deliver(stack, [sent.model_dump_json()]), None)
    reply = stack.sqs.receive_message(QueueUrl=stack.response_queue, MaxNumberOfMessages=1, WaitTimeSeconds=5)
    [message] = reply["Messages"]
    body = json.loads(message["Body"])
    assert body["schema_version"] == 1 and body["result"] == "barack_obama,unknown"
    assert set(body) == SCHEMA_1_ANSWER_FIELDS
    assert [set(face) for face in body["faces"]] == [SCHEMA_1_FACE_FIELDS] * 2
    stack.sqs.delete_message(QueueUrl=stack.response_queue, ReceiptHandle=message["ReceiptHandle"])


def test_frame_without_faces_is_answered_with_an_empty_list(stack: Stack, enrolled: None) -> None:
    empty = request([])
    result = recognition.handler(deliver(stack, [empty.model_dump_json()]), None)
    assert result == {"batchItemFailures": []}
    [answer] = drain(stack, stack.response_queue, 1)
    assert (answer.request_id, answer.faces) == (empty.request_id, [])


def test_crops_from_s3(stack: Stack, enrolled: None, crops: dict[str, bytes]) -> None:
    # GIVEN a frame whose crop overflowed to S3, and one pointing at a crop that does not exist
    present = request([crops["obama2"]], in_s3=True)
    store(stack, present.request_id, [crops["obama2"]])
    absent = request([crops["obama2"]], in_s3=True)
    event = deliver(stack, [present.model_dump_json(), absent.model_dump_json()])
    result = recognition.handler(event, None)
    # THEN the missing crop fails its own record (redelivered, then the DLQ), the other is answered
    assert failures(result) == {r["messageId"] for r in event["Records"] if absent.request_id in r["body"]}
    [answer] = drain(stack, stack.response_queue, 1)
    assert (answer.request_id, [f.name for f in answer.faces]) == (present.request_id, ["barack_obama"])


def test_a_crop_key_outside_its_own_request_fails_its_record_and_is_never_read(
    stack: Stack, enrolled: None, crops: dict[str, bytes]
) -> None:
    # GIVEN another request's crop in the bucket, and messages pointing at it or at the gallery
    victim = request([crops["obama2"]], in_s3=True)
    store(stack, victim.request_id, [crops["obama2"]])
    bodies = []
    for target in (victim.faces[0].crop_s3_key, "gallery/gallery.npz"):
        forged = json.loads(request([crops["biden"]], in_s3=True).model_dump_json())
        forged["faces"][0]["crop_s3_key"] = target
        bodies.append(json.dumps(forged))
    good = request([crops["biden"]])
    event = deliver(stack, [*bodies, good.model_dump_json()])
    read: list[str] = []  # every GetObject the handler's S3 client makes, seen by botocore's own event hook
    s3 = aws.client("s3")
    s3.meta.events.register("before-parameter-build.s3.GetObject", lambda params, **_: read.append(params["Key"]))
    try:
        result = recognition.handler(event, None)
    finally:
        s3.meta.events.unregister("before-parameter-build.s3.GetObject")
    # THEN both forged records fail (redelivered, then the DLQ) without a read of the victim's crop
    assert failures(result) == {r["messageId"] for r in event["Records"] if r["body"] in bodies}
    assert victim.faces[0].crop_s3_key not in read
    [answer] = drain(stack, stack.response_queue, 1)
    assert answer.request_id == good.request_id


def crowded(detector: Detector, limit: int) -> Detection:
    """Six copies of a real group photo in one 3840x1772 frame (36 real faces), capped as the detector does."""
    with Image.open(packaged("insightface/t1.jpg")) as photo:
        tile = photo.convert("RGB")
    mosaic = Image.new("RGB", (tile.width * 3, tile.height * 2))
    for i in range(6):
        mosaic.paste(tile, (tile.width * (i % 3), tile.height * (i // 3)))
    return detector.detect_capped(mosaic, limit)


@pytest.mark.slow
def test_a_batch_of_crowded_frames_is_embedded_in_bounded_chunks_and_every_device_is_answered(
    stack: Stack, enrolled: None, detector: Detector, crops: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN two frames of a crowd at the default face limit (crops in S3, as the detector queues them) and,
    # in the same SQS batch, another device's frame
    limit = Settings.model_fields["max_faces"].default
    detection = crowded(detector, limit)
    assert len(detection.faces) == limit and detection.dropped > 0
    bodies = []
    for _ in range(2):
        frame = Frame(request_id=str(uuid.uuid4()), device_id="cam-crowd", frame_timestamp=None, reply_to=None,
                      width=3840, height=1772, detect_ms=1.0, detected_at=time.time(),
                      faces_dropped=detection.dropped)
        body, uploads = plan(frame, detection.faces, MAX_QUEUE_MESSAGE_BYTES)
        assert len(uploads) == limit
        upload_crops(stack.s3, stack.bucket, uploads)
        bodies.append(body)
    other = request([crops["biden"]])
    chunk = 8
    passes: list[int] = []  # crops per InceptionResnetV1 forward pass, seen by a torch hook on the real model

    def run_batch(embed_chunk: int) -> tuple[dict[str, Any], int]:
        """The crowded batch through the handler with this chunk size: its result, and how far the traced memory
        rose above where it stood while the batch was embedded."""
        monkeypatch.setenv("FACEPIPE_EMBED_CHUNK", str(embed_chunk))
        recognition.get_container.cache_clear()  # the settings anew; the model stays loaded
        recognition.get_settings.cache_clear()
        settings = recognition.get_settings()
        embedder = recognition.get_embedder(settings.weights_path, settings.threads, settings.engine)
        hook = embedder._network.model.register_forward_pre_hook(lambda _, args: passes.append(len(args[0])))
        rises: list[int] = []
        embed = embedder.embed

        def embed_traced(crops: Any, chunk_size: int = 32) -> Any:
            # The embedding's own rise: the handler's S3 reads, and the session's other threads in this process
            # (the moto server's among them), allocate outside this window.
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            try:
                return embed(crops, chunk_size)
            finally:
                rises.append(tracemalloc.get_traced_memory()[1] - before)

        monkeypatch.setattr(embedder, "embed", embed_traced)
        event = deliver(stack, [*bodies, other.model_dump_json()])
        tracemalloc.start()  # Python's and numpy's allocations
        try:
            result = recognition.handler(event, None)
        finally:
            tracemalloc.stop()
            monkeypatch.delattr(embedder, "embed")  # the class's own again
            hook.remove()
        [rise] = rises  # one embedding call for the whole batch
        return result, rise

    # The first batch pays for what a process does once (S3 client, thread pool, torch's first pass at this size):
    # out of the comparison.
    run_batch(chunk)
    drain(stack, stack.response_queue, 3)
    passes.clear()

    # WHEN the handler runs on the crowded batch
    result, rise = run_batch(chunk)

    # THEN every frame is answered, the other device's too, the crowd's saying how many faces were dropped
    assert result == {"batchItemFailures": []}
    answers = {a.request_id: a for a in drain(stack, stack.response_queue, 3)}
    assert [f.name for f in answers.pop(other.request_id).faces] == ["joe_biden"]
    assert [(len(a.faces), a.faces_dropped) for a in answers.values()] == [(limit, detection.dropped)] * 2
    # ... no forward pass took more than a chunk, and all 65 crops went through
    assert max(passes) <= chunk and sum(passes) == 2 * limit + 1
    # ... and memory holds about one chunk of float32 input, not the whole batch. Side by side with the same batch in
    # one pass (measured: the embedding raised traced memory by 7.5 MB in chunks of 8, 40 MB in one pass):
    # the chunked rise is lower by at least the float32 input of the crops beyond a chunk.
    passes.clear()
    one_pass_result, one_pass_rise = run_batch(2 * limit + 1)
    assert one_pass_result == {"batchItemFailures": []} and passes == [2 * limit + 1]
    drain(stack, stack.response_queue, 3)
    crop_bytes = CROP_SIZE * CROP_SIZE * 3
    assert one_pass_rise - rise > (2 * limit + 1 - chunk) * crop_bytes * 4, (one_pass_rise, rise)


def test_crops_are_size_checked_before_they_are_read_or_decoded(
    stack: Stack, enrolled: None, crops: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a whole photo in place of a 160x160 crop, inline, and one in S3 larger than any crop can be
    photo = packaged("matplotlib/grace_hopper.jpg").read_bytes()
    huge = packaged("face_recognition/obama.jpg").read_bytes()
    assert len(huge) > recognition.MAX_CROP_BYTES
    inline = request([photo])
    in_s3 = request([huge], in_s3=True)
    store(stack, in_s3.request_id, [huge])
    good = request([crops["biden"]])
    event = deliver(stack, [inline.model_dump_json(), in_s3.model_dump_json(), good.model_dump_json()])
    ids = {r["messageId"]: RequestMessage.model_validate_json(r["body"]).request_id for r in event["Records"]}
    log = io.StringIO()
    monkeypatch.setattr(recognition.logger.registered_handler, "stream", log)
    # WHEN the handler runs THEN both fail their own record, with the reason logged, and the good one is answered
    result = recognition.handler(event, None)
    assert {ids[m] for m in failures(result)} == {inline.request_id, in_s3.request_id}
    assert "expected 160x160" in log.getvalue()
    assert f"bytes; the limit is {recognition.MAX_CROP_BYTES}" in log.getvalue()
    [answer] = drain(stack, stack.response_queue, 1)
    assert (answer.request_id, [f.name for f in answer.faces]) == (good.request_id, ["joe_biden"])


def test_reply_to_with_the_prefix_is_honoured_and_others_refused(
    stack: Stack, enrolled: None, crops: dict[str, bytes]
) -> None:
    allowed = request([crops["biden"]], reply_to=f"{REPLY_PREFIX}cam1")
    refused = request([crops["biden"]], reply_to="other-queue")
    event = deliver(stack, [allowed.model_dump_json(), refused.model_dump_json()])
    result = recognition.handler(event, None)
    assert failures(result) == {r["messageId"] for r in event["Records"] if "other-queue" in r["body"]}
    [answer] = drain(stack, stack.device_queue, 1)
    assert answer.request_id == allowed.request_id
    drain(stack, stack.response_queue, 0)
    drain(stack, stack.other_queue, 0)


def test_reply_to_is_refused_when_no_prefix_is_configured(
    stack: Stack, enrolled: None, crops: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACEPIPE_REPLY_TO_PREFIX", "")
    recognition.get_settings.cache_clear()
    asked = request([crops["biden"]], reply_to=f"{REPLY_PREFIX}cam1")
    event = deliver(stack, [asked.model_dump_json()])
    assert failures(recognition.handler(event, None)) == {event["Records"][0]["messageId"]}
    drain(stack, stack.device_queue, 0)
    drain(stack, stack.response_queue, 0)


def test_redelivery_gives_the_same_answer(stack: Stack, enrolled: None, crops: dict[str, bytes]) -> None:
    # GIVEN a message handled once but never deleted (say the function timed out after sending)
    frame = request([crops["obama2"], crops["hopper"]])
    first_event = deliver(stack, [frame.model_dump_json()], visibility=0)
    recognition.handler(first_event, None)
    # WHEN SQS delivers it again, this time in a batch with another frame
    other = request([crops["biden"]])
    other_id = stack.sqs.send_message(QueueUrl=stack.request_queue, MessageBody=other.model_dump_json())["MessageId"]
    second_event = receive_event(stack, {first_event["Records"][0]["messageId"], other_id})
    recognition.handler(second_event, None)
    # THEN both answers for the frame are equal apart from the measured recognition time
    answers = [a for a in drain(stack, stack.response_queue, 3) if a.request_id == frame.request_id]
    assert len(answers) == 2
    first, second = (a.model_dump(exclude={"timings": {"recognise_ms"}}) for a in answers)
    assert first == second


def test_answers_are_persisted_to_s3_when_enabled(
    stack: Stack, enrolled: None, crops: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACEPIPE_PERSIST_RESULTS", "true")
    recognition.get_settings.cache_clear()
    frame = request([crops["obama2"]])
    recognition.handler(deliver(stack, [frame.model_dump_json()]), None)
    [answer] = drain(stack, stack.response_queue, 1)
    day = datetime.fromtimestamp(frame.detected_at, UTC).strftime("%Y-%m-%d")
    key = f"results/cam1/{day}/{frame.request_id}.json"
    stored = stack.s3.get_object(Bucket=stack.bucket, Key=key)
    assert stored["ContentType"] == "application/json"
    assert ResponseMessage.model_validate_json(stored["Body"].read()) == answer


def test_every_answered_face_is_kept_for_the_library_when_enabled(
    stack: Stack, enrolled: None, crops: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACEPIPE_KEEP_FACES", "true")
    recognition.get_settings.cache_clear()
    # GIVEN a frame with Obama (enrolled) and Grace Hopper (not)
    frame = request([crops["obama2"], crops["hopper"]])
    recognition.handler(deliver(stack, [frame.model_dump_json()]), None)
    [answer] = drain(stack, stack.response_queue, 1)
    day = datetime.fromtimestamp(frame.detected_at, UTC).strftime("%Y-%m-%d")
    # THEN each face has its record: Obama's under his name, the stranger's under unknown/
    keys = {"barack_obama": f"faces/known/barack_obama/cam1/{day}/{frame.request_id}-0.json",
            UNKNOWN_NAME: f"faces/unknown/cam1/{day}/{frame.request_id}-1.json"}
    embedder = recognition.get_container().embedder
    for index, (name, key) in enumerate(keys.items()):
        record = FaceRecord.model_validate_json(stack.s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read())
        face = answer.faces[index]
        assert (record.name, record.distance, record.box, record.device_id) == (name, face.distance, face.box, "cam1")
        assert record.model == answer.model and record.detected_at == frame.detected_at
        crop = Image.open(io.BytesIO(record.crop_jpeg()))
        assert crop.size == (160, 160)
        # the embedding kept is the recognizer's: the crop kept embeds to it again (JPEG re-encoding moves it a bit)
        again = embedder.embed([np.asarray(crop.convert("RGB"))])[0]
        assert record.embedding().shape == (512,) and float(np.linalg.norm(again - record.embedding())) < 0.1


def test_gallery_from_other_weights_stops_the_batch(
    stack: Stack, enrolled: None, crops: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # GIVEN a gallery whose model tag is not the embedder's
    gallery = load_gallery(stack.gallery_uri)
    gallery.model_tag = "inception_resnet_v1:0123456789abcdef"
    other = str(tmp_path / "other.npz")
    save_gallery(gallery, other)
    monkeypatch.setenv("FACEPIPE_GALLERY_URI", other)
    recognition.get_settings.cache_clear()
    event = deliver(stack, [request([crops["biden"]]).model_dump_json()])
    # THEN the handler refuses it: the whole batch returns to the queue, nothing is answered
    with pytest.raises(GalleryModelMismatch, match="0123456789abcdef"):
        recognition.handler(event, None)
    drain(stack, stack.response_queue, 0)


def test_emf_metrics_count_faces_and_unknowns(
    stack: Stack, enrolled: None, crops: dict[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a batch of two frames: Obama and a stranger, then Biden alone
    event = deliver(stack, [request([crops["obama2"], crops["hopper"]]).model_dump_json(),
                            request([crops["biden"]]).model_dump_json()])
    capsys.readouterr()
    recognition.handler(event, None)
    drain(stack, stack.response_queue, 2)
    # THEN one CloudWatch EMF document carries the batch's figures
    [emf] = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    [directive] = emf["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "facepipe" and emf["service"] == "facepipe-recognition"
    assert {m["Name"] for m in directive["Metrics"]} >= {"RecogniseMs", "Faces", "Unknowns", "QueueWaitMs"}
    # powertools writes each metric's values as a list: one per add_metric call (Unknowns: one per answer)
    assert emf["Faces"] == [3] and sorted(emf["Unknowns"]) == [0, 1]
    assert len(emf["RecogniseMs"]) == 1 and emf["RecogniseMs"][0] > 0
    # CPU time: decoding and embedding the crops and matching them, within the batch's, which also answered
    [recognise_cpu], [handler_cpu] = emf["RecogniseCpuMs"], emf["HandlerCpuMs"]
    assert 0 < recognise_cpu < handler_cpu


def test_one_embedder_per_model_file_whatever_the_engine_ignores(stack: Stack, tmp_path: Path) -> None:
    # A models dir set beside the torch engine (a shell with `facepipe local up`'s exports, a test session's stack)
    # must not load a second model: the handler's container and a caller's get_embedder would not be the same one.
    settings = recognition.get_settings()
    torch_embedder = recognition.get_embedder(settings.weights_path, settings.threads, "torch")
    assert recognition.get_embedder(settings.weights_path, settings.threads, "torch", str(tmp_path)) is torch_embedder
