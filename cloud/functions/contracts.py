"""Wire formats that cross process boundaries: edge <-> Function URL, detection -> request queue,
recognition -> response queue.

Imports nothing heavier than pydantic, so the edge daemon (no torch) shares these definitions
with the Lambda functions. Every queue message carries `schema_version`; a consumer rejects a
version it does not know instead of guessing.

Answers go to clients that upgrade on their own schedule, so they change in two ways only: a new
schema_version, sent only to a client that asks for it (X-Answer-Schema), and fields added within a
version, which readers of answers ignore when they do not know them. Request queue messages are read
the same way (a recognizer still on the old code during an update ignores a field the new detector adds).
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION: Literal[1] = 1

# HTTP headers of a frame upload (Function URL events carry them lower-cased).
HEADER_REQUEST_ID = "X-Request-Id"
HEADER_DEVICE_ID = "X-Device-Id"
HEADER_FRAME_TIMESTAMP = "X-Frame-Timestamp"  # seconds since the epoch, float, capture time
HEADER_REPLY_TO = "X-Reply-To"  # optional response queue *name*, must match the configured prefix
HEADER_ANSWER_SCHEMA = "X-Answer-Schema"  # optional: the answer schema_version the client reads (ANSWER_SCHEMAS)

# Limits shared by both sides.
MAX_REQUEST_BODY_BYTES = 6 * 1024 * 1024  # Function URL BUFFERED mode: 6 MB request payload
MAX_QUEUE_MESSAGE_BYTES = 256 * 1024  # we keep SQS's classic 256 KiB (template sets MaximumMessageSize)
CROP_SIZE = 160  # face crops on the request queue are CROP_SIZE x CROP_SIZE: InceptionResnetV1's input
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
QUEUE_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,80}$"
MAX_FILENAME_CHARS = 255
# Most faces one frame's message may carry (FACEPIPE_MAX_FACES, at most this, picks the deployed limit). Measured:
# a face with its crop in S3 adds ~241 bytes to the message, so 256 KiB would hold ~1,000 of them; in the
# recognizer a crop costs ~11-13 ms of InceptionResnetV1 on ONNX Runtime (1 thread; ~20-90 ms on torch) and a batch
# is up to 10 messages, so 10 x 64 crops take ~7-8 s (~13-58 s on torch): within the recognition timeout (60 s). Memory
# does not grow with it (the recognizer embeds in chunks of FACEPIPE_EMBED_CHUNK crops).
MAX_FACES_PER_FRAME = 64
AnswerSchema = Literal[1, 2]
ANSWER_SCHEMAS: tuple[AnswerSchema, ...] = (1, 2)
EVIDENCE_SCHEMA = 2  # schema 1 plus each face's candidates and quality; sent only to a client that asks for it

Box = Annotated[list[float], Field(min_length=4, max_length=4, description="x1, y1, x2, y2 in pixels")]
Point = Annotated[list[float], Field(min_length=2, max_length=2)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Tolerant(BaseModel):
    """A message whose reader may be older than its writer (a client of answers; a recognizer during an update): a
    field it does not know, added later within its schema_version, is ignored, not refused."""

    model_config = ConfigDict(extra="ignore", frozen=True)


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


def reply_to_refusal(name: str, prefix: str) -> str | None:
    """Why a request's reply_to queue name is refused under the configured prefix; None if allowed.
    The detector answers it with a 400, the recognizer fails such a message (never sends to it)."""
    if re.fullmatch(QUEUE_NAME_PATTERN, name) is None:
        return "reply_to must be a queue name (1-80 characters [A-Za-z0-9_-])"
    if not prefix:
        return f"reply_to {name!r} refused: reply_to is disabled (FACEPIPE_REPLY_TO_PREFIX empty)"
    if not name.startswith(prefix):
        return f"reply_to {name!r} refused: it does not start with {prefix!r}"
    return None


def crop_key(device_id: str, request_id: str, index: int) -> str:
    """Where face `index` of a request's crops lives in the bucket when they do not fit the message. The client
    chooses its request id, so the device (bound to the caller where devices are identities) scopes it: a device
    reusing another's request id cannot overwrite that device's crops."""
    return f"{crops_prefix(device_id, request_id)}{index}.jpg"


def crops_prefix(device_id: str, request_id: str) -> str:
    return f"crops/{device_id}/{request_id}/"


# --- HTTP: Function URL responses -------------------------------------------------------------


class DetectAccepted(_Strict):
    """Body of the 202 answer to a frame upload."""

    request_id: str
    faces: int = Field(ge=0)
    faces_dropped: int = Field(default=0, ge=0, description="faces beyond FACEPIPE_MAX_FACES: found, not queued")
    detect_ms: float = Field(ge=0)


class ErrorBody(_Strict):
    """Body of every 4xx/5xx answer."""

    error: str
    request_id: str | None = None


# --- Request queue: detection -> recognition --------------------------------------------------


class FaceQuality(_Tolerant):
    """How much a face can be trusted, measured in detection (cloud/functions/detection/quality.py): optional in
    a request (older detectors sent none), and part of each face in an answer of EVIDENCE_SCHEMA."""

    width_px: float = Field(ge=0, description="the face box's width in the original frame, pixels")
    sharpness: float = Field(ge=0, description="variance of the Laplacian of the aligned grey crop (blur lowers it)")
    probability: float = Field(ge=0, le=1, description="the detector's face probability")


class DetectedFace(_Tolerant):
    box: Box
    probability: float = Field(ge=0, le=1)
    quality: FaceQuality | None = None
    landmarks: list[Point] = Field(min_length=5, max_length=5, description="eyes, nose, mouth corners")
    # Exactly one of the two: the aligned CROP_SIZE x CROP_SIZE crop inline (JPEG, base64) or a pointer to it in S3
    # when the frame's message would exceed MAX_QUEUE_MESSAGE_BYTES.
    crop_jpeg_b64: str | None = None
    crop_s3_key: str | None = None


class RequestMessage(_Tolerant):
    schema_version: Literal[1] = SCHEMA_VERSION
    request_id: str
    device_id: str
    frame_timestamp: float | None = None
    detected_at: float = Field(description="epoch seconds when detection finished")
    detect_ms: float = Field(ge=0)
    image_width: int = Field(gt=0)
    image_height: int = Field(gt=0)
    reply_to: str | None = Field(default=None, pattern=QUEUE_NAME_PATTERN)
    faces: list[DetectedFace] = Field(max_length=MAX_FACES_PER_FRAME)
    faces_dropped: int = Field(default=0, ge=0, description="faces beyond the detector's limit, not in `faces`")
    filename: str | None = Field(default=None, max_length=MAX_FILENAME_CHARS, description="a JSON upload's filename")
    answer_schema: AnswerSchema = Field(default=1, description="the schema_version of the answer the client reads")

    @model_validator(mode="after")
    def _crops_are_this_requests(self) -> Self:
        """A crop in S3 must be one of this request's (crops/<device_id>/<request_id>/<i>.jpg): a message can never
        make the recognizer read another request's or device's crop, or any other object."""
        prefix = crop_key(self.device_id, self.request_id, 0).removesuffix("0.jpg")
        for i, face in enumerate(self.faces):
            key = face.crop_s3_key
            if key is not None and not (key.startswith(prefix) and re.fullmatch(r"[0-9]{1,4}\.jpg", key[len(prefix):])):
                raise ValueError(f"face {i}: crop_s3_key {key[:120]!r} is not under {prefix}")
        return self


# --- Response queue: recognition -> edge ------------------------------------------------------


MAX_CANDIDATES = 3


class Candidate(_Tolerant):
    name: str
    distance: float = Field(ge=0, description="L2 distance to this name's nearest enrolled embedding")


class RecognisedFace(_Tolerant):
    box: Box
    name: str = Field(description="enrolled name, or 'unknown'")
    distance: float | None = Field(
        description="L2 distance to the nearest enrolled embedding; None if the gallery is empty"
    )
    probability: float = Field(ge=0, le=1)
    # The evidence (EVIDENCE_SCHEMA; empty in a schema 1 answer): the nearest distinct names whatever the threshold,
    # nearest first, and the detection's quality record.
    candidates: list[Candidate] = Field(default_factory=list, max_length=MAX_CANDIDATES)
    quality: FaceQuality | None = None


class Timings(_Tolerant):
    detect_ms: float = Field(ge=0)
    queue_wait_ms: float = Field(ge=0)
    recognise_ms: float = Field(ge=0)


class ResponseMessage(_Tolerant):
    schema_version: AnswerSchema = SCHEMA_VERSION
    request_id: str
    device_id: str
    frame_timestamp: float | None = None
    faces: list[RecognisedFace] = Field(max_length=MAX_FACES_PER_FRAME)
    faces_dropped: int = Field(default=0, ge=0, description="faces the detector found beyond its limit, unrecognised")
    timings: Timings
    model: str = Field(description="embedding model tag the gallery was matched with")
    filename: str | None = Field(default=None, max_length=MAX_FILENAME_CHARS, description="a JSON upload's filename")
    result: str = Field(default="", description="names of the faces left to right, joined by ','; '' for none")

    @model_validator(mode="before")
    @classmethod
    def _fill_result(cls, data: object) -> object:
        """`result` is derived from `faces`: filled in when absent (older producers), checked when present."""
        if isinstance(data, dict) and "result" not in data:
            try:
                faces = [f if isinstance(f, RecognisedFace) else RecognisedFace.model_validate(f)
                         for f in data.get("faces", [])]
            except (ValueError, TypeError):
                return data  # the faces' own validation reports it
            data = {**data, "result": result_of(faces)}
        return data

    @model_validator(mode="after")
    def _check_result(self) -> ResponseMessage:
        if self.result != result_of(self.faces):
            raise ValueError(f"result {self.result!r} does not match the faces ({result_of(self.faces)!r})")
        return self


# What a schema 1 answer carries: its readers before schema 2 (this project's edge among them) refuse any other field.
SCHEMA_1_ANSWER_FIELDS = frozenset({"schema_version", "request_id", "device_id", "frame_timestamp", "faces",
                                    "faces_dropped", "timings", "model", "filename", "result"})
SCHEMA_1_FACE_FIELDS = frozenset({"box", "name", "distance", "probability"})


def answer_json(answer: ResponseMessage) -> str:
    """The answer as sent: a schema 1 answer carries schema 1's fields and no other, whatever is added later."""
    if answer.schema_version >= EVIDENCE_SCHEMA:
        return answer.model_dump_json()
    return answer.model_dump_json(include={**{name: True for name in SCHEMA_1_ANSWER_FIELDS - {"faces"}},
                                           "faces": {"__all__": set(SCHEMA_1_FACE_FIELDS)}})


def result_of(faces: list[RecognisedFace]) -> str:
    """The answer in one string, for clients that want names only (the course workload generator
    compares `result == "Alice"`): every face's name, ordered by the box's left edge, joined by ','."""
    return ",".join(face.name for face in sorted(faces, key=lambda face: face.box[0]))


UNKNOWN_NAME = "unknown"
NAME_MAX_CHARS = 64
NAME_PUNCTUATION = " _-.'"


def name_refusal(name: str) -> str | None:
    """Why `name` cannot be enrolled, or None when it can.

    Allowed: Unicode letters, combining marks and digits, plus space, `_`, `-`, `.` and `'`; 1-64
    characters, starting with a letter or digit, not ending with a space, not `unknown`. So a name never
    holds `/` (a path), NUL or control characters (files, terminals) or `,` (the `result` separator)."""
    if not name:
        return "a name is empty"
    if len(name) > NAME_MAX_CHARS:
        return f"{name!r} is longer than {NAME_MAX_CHARS} characters"
    if name == UNKNOWN_NAME:
        return f"{name!r} is reserved for faces that match no one"
    if not _allowed(name[0], punctuation="") or unicodedata.category(name[0])[0] == "M":
        return f"{name!r} must start with a letter or a digit"
    if name.endswith(" "):
        return f"{name!r} ends with a space"
    bad = sorted({c for c in name if not _allowed(c, NAME_PUNCTUATION)})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        return f"{name!r} holds {shown}: use letters, digits, combining marks, spaces and _ - . ' only"
    return None


def _allowed(char: str, punctuation: str) -> bool:
    category = unicodedata.category(char)
    return category[0] in "LM" or category == "Nd" or char in punctuation


# --- Function URL: JSON uploads (the course workload generator's protocol) ---------------------

JSON_DEVICE_ID = "json-client"  # device id of a JSON upload without X-Device-Id


class JsonUpload(BaseModel):
    """`Content-Type: application/json` body: one image, base64. Answered 200 (not 202) with DetectAccepted."""

    model_config = ConfigDict(extra="ignore", frozen=True)  # clients may add fields of their own

    request_id: str = Field(description="canonical UUID; the answer on the response queue carries it")
    content: str = Field(min_length=1, description="the JPEG or PNG image, base64")
    filename: str | None = Field(default=None, max_length=MAX_FILENAME_CHARS)


# --- Ingest queue: image events (producers -> detection) ----------------------------------------

UPLOADS_PREFIX = "uploads/"  # the only keys of the stack's bucket that detection reads images from
DEVICE_ID_METADATA = "device-id"  # x-amz-meta-device-id of an object under uploads/
REPLY_TO_METADATA = "reply-to"  # x-amz-meta-reply-to: the answer's queue, as X-Reply-To
S3_DEVICE_ID = "s3"  # device id of an uploads/ object without that metadata
# x-amz-meta-image-event: the object is the image of an ImageEvent (image_s3) with this request id, so
# its own S3 notification is not detected a second time.
IMAGE_EVENT_METADATA = "image-event"
S3_REQUEST_NAMESPACE = uuid.NAMESPACE_URL


def s3_request_id(bucket: str, key: str, version_or_etag: str) -> str:
    """The request id of an object put under uploads/: uuid5(NAMESPACE_URL, "<bucket>/<key>/<v>") where
    <v> is the object's version id (the stack's bucket is versioned), or its ETag without quotes in an
    unversioned bucket. The uploader computes it from PutObject's answer (VersionId, else ETag), so it
    can find its answer; a re-delivered notification gives the same id."""
    return str(uuid.uuid5(S3_REQUEST_NAMESPACE, f"{bucket}/{key}/{version_or_etag.strip(chr(34))}"))


class S3ImageRef(_Strict):
    bucket: str = Field(min_length=3, max_length=63)
    key: str = Field(min_length=1, max_length=1024)
    version_id: str | None = Field(default=None, max_length=1024)


class ImageEvent(_Strict):
    """One image on the ingest queue: inline (base64, within the 256 KiB message) or in the stack's
    bucket under uploads/. Answered on the response queue (or `reply_to`) like a Function URL upload."""

    schema_version: Literal[1] = SCHEMA_VERSION
    request_id: str
    device_id: str = Field(pattern=DEVICE_ID_PATTERN)
    frame_timestamp: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    reply_to: str | None = Field(default=None, pattern=QUEUE_NAME_PATTERN)
    filename: str | None = Field(default=None, max_length=MAX_FILENAME_CHARS)
    image_b64: str | None = Field(default=None, min_length=1, max_length=MAX_QUEUE_MESSAGE_BYTES)
    image_s3: S3ImageRef | None = None

    @model_validator(mode="after")
    def _one_image(self) -> ImageEvent:
        if (self.image_b64 is None) == (self.image_s3 is None):
            raise ValueError("exactly one of image_b64 and image_s3 must be set")
        if not is_valid_request_id(self.request_id):
            raise ValueError("request_id must be a canonical UUID (36 characters)")
        return self
