"""Wire formats that cross process boundaries: edge <-> Function URL, detection -> request queue,
recognition -> response queue.

Imports nothing heavier than pydantic, so the edge daemon (no torch) shares these definitions
with the Lambda functions. Every queue message carries `schema_version`; a consumer rejects a
version it does not know instead of guessing.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION: Literal[1] = 1

# HTTP headers of a frame upload (Function URL events carry them lower-cased).
HEADER_REQUEST_ID = "X-Request-Id"
HEADER_DEVICE_ID = "X-Device-Id"
HEADER_FRAME_TIMESTAMP = "X-Frame-Timestamp"  # seconds since the epoch, float, capture time
HEADER_REPLY_TO = "X-Reply-To"  # optional response queue *name*, must match the configured prefix

# Limits shared by both sides.
MAX_REQUEST_BODY_BYTES = 6 * 1024 * 1024  # Function URL BUFFERED mode: 6 MB request payload
MAX_QUEUE_MESSAGE_BYTES = 256 * 1024  # we keep SQS's classic 256 KiB (template sets MaximumMessageSize)
CROP_SIZE = 160  # face crops on the request queue are CROP_SIZE x CROP_SIZE: InceptionResnetV1's input
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
QUEUE_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,80}$"

Box = Annotated[list[float], Field(min_length=4, max_length=4, description="x1, y1, x2, y2 in pixels")]
Point = Annotated[list[float], Field(min_length=2, max_length=2)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def is_valid_request_id(value: str) -> bool:
    """A request id is a canonical UUID string (what the edge generates)."""
    if len(value) != 36:
        return False
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def is_valid_device_id(value: str) -> bool:
    return re.fullmatch(DEVICE_ID_PATTERN, value) is not None


# --- HTTP: Function URL responses -------------------------------------------------------------


class DetectAccepted(_Strict):
    """Body of the 202 answer to a frame upload."""

    request_id: str
    faces: int = Field(ge=0)
    detect_ms: float = Field(ge=0)


class ErrorBody(_Strict):
    """Body of every 4xx/5xx answer."""

    error: str
    request_id: str | None = None


# --- Request queue: detection -> recognition --------------------------------------------------


class DetectedFace(_Strict):
    box: Box
    probability: float = Field(ge=0, le=1)
    landmarks: list[Point] = Field(min_length=5, max_length=5, description="eyes, nose, mouth corners")
    # Exactly one of the two: the aligned CROP_SIZE x CROP_SIZE crop inline (JPEG, base64) or a pointer to it in S3
    # when the frame's message would exceed MAX_QUEUE_MESSAGE_BYTES.
    crop_jpeg_b64: str | None = None
    crop_s3_key: str | None = None


class RequestMessage(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    request_id: str
    device_id: str
    frame_timestamp: float | None = None
    detected_at: float = Field(description="epoch seconds when detection finished")
    detect_ms: float = Field(ge=0)
    image_width: int = Field(gt=0)
    image_height: int = Field(gt=0)
    reply_to: str | None = Field(default=None, pattern=QUEUE_NAME_PATTERN)
    faces: list[DetectedFace]


# --- Response queue: recognition -> edge ------------------------------------------------------


class RecognisedFace(_Strict):
    box: Box
    name: str = Field(description="enrolled name, or 'unknown'")
    distance: float | None = Field(
        description="L2 distance to the nearest enrolled embedding; None if the gallery is empty"
    )
    probability: float = Field(ge=0, le=1)


class Timings(_Strict):
    detect_ms: float = Field(ge=0)
    queue_wait_ms: float = Field(ge=0)
    recognise_ms: float = Field(ge=0)


class ResponseMessage(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    request_id: str
    device_id: str
    frame_timestamp: float | None = None
    faces: list[RecognisedFace]
    timings: Timings
    model: str = Field(description="embedding model tag the gallery was matched with")


UNKNOWN_NAME = "unknown"
