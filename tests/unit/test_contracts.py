"""The wire models refuse what the pipeline must never carry (too many faces, crop keys of other requests) and keep
answers readable by clients older and newer than them."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from cloud.functions.contracts import (
    EVIDENCE_SCHEMA,
    MAX_FACES_PER_FRAME,
    Candidate,
    FaceQuality,
    RequestMessage,
    ResponseMessage,
    answer_json,
    crop_key,
)
from tests.answer_schema_1 import SCHEMA_1_ANSWER_FIELDS, SCHEMA_1_FACE_FIELDS

REQUEST_ID = str(uuid.uuid4())
DEVICE = "cam-1"


def _face(key: str | None = None) -> dict[str, Any]:
    return {"box": [1.0, 2.0, 30.0, 40.0], "probability": 0.99, "landmarks": [[1.0, 2.0]] * 5,
            "crop_s3_key": key, "crop_jpeg_b64": None if key else "AAAA"}


def _request(faces: list[dict[str, Any]], request_id: str = REQUEST_ID) -> str:
    return json.dumps({"schema_version": 1, "request_id": request_id, "device_id": DEVICE, "detected_at": 1.0,
                       "detect_ms": 1.0, "image_width": 640, "image_height": 480, "faces": faces})


def test_crop_keys_of_the_request_itself_are_accepted() -> None:
    message = RequestMessage.model_validate_json(_request([_face(crop_key(DEVICE, REQUEST_ID, i)) for i in range(3)]))
    assert [f.crop_s3_key for f in message.faces] == [f"crops/cam-1/{REQUEST_ID}/{i}.jpg" for i in range(3)]


@pytest.mark.parametrize("key", [
    crop_key(DEVICE, str(uuid.uuid4()), 0),  # another request's crop
    crop_key("cam-2", REQUEST_ID, 0),  # another device's crop of the same request id
    f"crops/{REQUEST_ID}/0.jpg",  # the old layout, unscoped
    "gallery/gallery.npz",
    f"results/cam-1/2026-01-01/{REQUEST_ID}.json",
    f"crops/cam-1/{REQUEST_ID}/../{uuid.uuid4()}/0.jpg",
    f"crops/cam-1/{REQUEST_ID}/0.jpg/../../other/0.jpg",
    f"crops/cam-1/{REQUEST_ID}/",
    f"crops/cam-1/{REQUEST_ID}0.jpg",
    f"/crops/cam-1/{REQUEST_ID}/0.jpg",
])
def test_a_crop_key_outside_crops_of_its_request_is_refused(key: str) -> None:
    with pytest.raises(ValidationError, match="crop_s3_key"):
        RequestMessage.model_validate_json(_request([_face(crop_key(DEVICE, REQUEST_ID, 0)), _face(key)]))


def test_face_lists_are_bounded() -> None:
    faces = [_face(crop_key(DEVICE, REQUEST_ID, i)) for i in range(MAX_FACES_PER_FRAME)]
    assert len(RequestMessage.model_validate_json(_request(faces)).faces) == MAX_FACES_PER_FRAME
    with pytest.raises(ValidationError, match="faces"):
        RequestMessage.model_validate_json(_request([*faces, _face(crop_key(DEVICE, REQUEST_ID, MAX_FACES_PER_FRAME))]))
    answer = {"schema_version": 1, "request_id": REQUEST_ID, "device_id": "cam-1", "model": "m",
              "timings": {"detect_ms": 1, "queue_wait_ms": 1, "recognise_ms": 1},
              "faces": [{"box": [1, 2, 3, 4], "name": "unknown", "distance": None, "probability": 0.9}]}
    assert ResponseMessage.model_validate(answer).faces_dropped == 0
    with pytest.raises(ValidationError, match="faces"):
        ResponseMessage.model_validate(answer | {"faces": answer["faces"] * (MAX_FACES_PER_FRAME + 1)})


# --- evidence per face: answer schema 2, sent to a client that asks for it ---------------------------------

OLD_ANSWER = {"schema_version": 1, "request_id": REQUEST_ID, "device_id": DEVICE, "frame_timestamp": 1.0,
              "faces": [{"box": [60.0, 2.0, 90.0, 40.0], "name": "alice", "distance": 0.61, "probability": 0.99},
                        {"box": [1.0, 2.0, 30.0, 40.0], "name": "unknown", "distance": 1.31, "probability": 0.97}],
              "timings": {"detect_ms": 1.0, "queue_wait_ms": 2.0, "recognise_ms": 3.0}, "model": "m"}
QUALITY = {"width_px": 29.0, "sharpness": 41.5, "probability": 0.97}
CANDIDATES = [{"name": "bob", "distance": 1.05}, {"name": "alice", "distance": 1.2}]


def test_an_answer_without_evidence_still_parses() -> None:
    answer = ResponseMessage.model_validate_json(json.dumps(OLD_ANSWER))
    assert [(f.candidates, f.quality) for f in answer.faces] == [([], None), ([], None)]
    assert answer.result == "unknown,alice"


def test_evidence_round_trips_and_leaves_what_a_course_client_reads_unchanged() -> None:
    with_evidence = json.loads(json.dumps(OLD_ANSWER)) | {"schema_version": EVIDENCE_SCHEMA}
    with_evidence["faces"][1] |= {"candidates": CANDIDATES, "quality": QUALITY}
    answer = ResponseMessage.model_validate(with_evidence)
    again = ResponseMessage.model_validate_json(answer_json(answer))
    assert again == answer
    assert again.faces[1].quality is not None and again.faces[1].quality.model_dump() == QUALITY
    assert [c.model_dump() for c in again.faces[1].candidates] == CANDIDATES
    # tests/course_client.py reads request_id and result; each face's name, distance and box are as before
    old = ResponseMessage.model_validate(OLD_ANSWER)
    sent = json.loads(answer_json(answer))
    assert (sent["request_id"], sent["result"]) == (old.request_id, old.result)
    assert [(f["name"], f["distance"], f["box"]) for f in sent["faces"]] == [
        (f.name, f.distance, f.box) for f in old.faces]


def test_a_schema_1_answer_is_sent_with_schema_1_fields_only() -> None:
    """What a reader of the first contract (which refused unknown fields) is sent: nothing it does not know."""
    answer = ResponseMessage.model_validate(OLD_ANSWER)
    assert answer.schema_version == 1
    sent = json.loads(answer_json(answer))
    assert set(sent) == SCHEMA_1_ANSWER_FIELDS
    assert [set(face) for face in sent["faces"]] == [SCHEMA_1_FACE_FIELDS] * 2
    assert {k: sent[k] for k in OLD_ANSWER if k != "faces"} == {k: v for k, v in OLD_ANSWER.items() if k != "faces"}


def test_a_reader_ignores_fields_added_later_and_refuses_a_schema_it_does_not_know() -> None:
    later = json.loads(json.dumps(OLD_ANSWER)) | {"schema_version": EVIDENCE_SCHEMA, "added_later": {"x": 1}}
    later["timings"] |= {"gpu_ms": 1.0}
    later["faces"][0] |= {"quality": QUALITY | {"added_later": 1}, "age": 30}
    later["faces"][0]["candidates"] = [CANDIDATES[0] | {"added_later": True}]
    answer = ResponseMessage.model_validate_json(json.dumps(later))
    assert answer.result == "unknown,alice"
    assert answer.faces[1].quality is None and answer.faces[0].quality == FaceQuality.model_validate(QUALITY)
    assert answer.faces[0].candidates == [Candidate(name="bob", distance=1.05)]
    with pytest.raises(ValidationError, match="schema_version"):
        ResponseMessage.model_validate(later | {"schema_version": 3})


def test_a_request_carries_the_quality_record_and_older_requests_have_none() -> None:
    face = _face() | {"quality": QUALITY}
    message = RequestMessage.model_validate_json(_request([face, _face()]))
    assert [f.quality.model_dump() if f.quality else None for f in message.faces] == [QUALITY, None]
    assert message.answer_schema == 1  # what a request queued before X-Answer-Schema asks for
    later = json.loads(_request([face | {"added_later": 1}])) | {"added_later": {"x": 1}}  # a newer detector's
    assert RequestMessage.model_validate_json(json.dumps(later)).faces[0].quality == FaceQuality.model_validate(QUALITY)
    with pytest.raises(ValidationError, match="answer_schema"):
        RequestMessage.model_validate_json(json.dumps(json.loads(_request([face])) | {"answer_schema": 3}))


@pytest.mark.parametrize("bad", [
    {"candidates": CANDIDATES * 2},  # at most MAX_CANDIDATES
    {"candidates": [{"name": "bob", "distance": -0.1}]},
    {"quality": QUALITY | {"probability": 1.5}},
    {"quality": QUALITY | {"sharpness": -1.0}},
])
def test_evidence_outside_its_bounds_is_refused(bad: dict[str, Any]) -> None:
    answer = json.loads(json.dumps(OLD_ANSWER))
    answer["faces"][0] |= bad
    with pytest.raises(ValidationError):
        ResponseMessage.model_validate(answer)
