"""The wire models refuse what the pipeline must never carry: too many faces, crop keys of other requests."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from cloud.functions.contracts import MAX_FACES_PER_FRAME, RequestMessage, ResponseMessage, crop_key

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
