"""JSON frame uploads at the Function URL: the course workload generator's protocol.

`Content-Type: application/json`, body `{"request_id": UUID, "content": base64 image, "filename": str}`.
The decoded image gets the same byte, pixel and format checks as a raw upload (the 6 MB Function URL
limit bounds the JSON text); every malformed body is refused naming the field.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from pydantic import ValidationError

from cloud.functions.contracts import JsonUpload, is_valid_request_id


class BadJson(ValueError):
    """A JSON body we answer with 400; the message names the field."""


@dataclass(frozen=True)
class JsonFrame:
    request_id: str
    filename: str | None
    image: bytes


def is_json(content_type: str | None) -> bool:
    """True for `application/json` (any parameters, any case)."""
    return (content_type or "").split(";")[0].strip().lower() == "application/json"


def parse_json_upload(text: str) -> JsonFrame:
    """The frame in a JSON upload's body, or BadJson naming what is wrong."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadJson(f"body is not valid JSON ({exc.msg} at character {exc.pos})") from exc
    except RecursionError as exc:  # e.g. 100000 `[`: the decoder recurses per level
        raise BadJson("body is not valid JSON here (nested too deeply)") from exc
    if not isinstance(data, dict):
        raise BadJson('body must be a JSON object {"request_id", "content", "filename"}')
    try:
        upload = JsonUpload.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "body"
        raise BadJson(f"field {field}: {error['msg']}") from exc
    if not is_valid_request_id(upload.request_id):
        raise BadJson("field request_id: must be a canonical UUID (36 characters)")
    try:
        image = base64.b64decode(upload.content, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadJson("field content: not valid base64") from exc
    return JsonFrame(request_id=upload.request_id, filename=upload.filename, image=image)
