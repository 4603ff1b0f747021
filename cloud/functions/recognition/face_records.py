"""What the recognition function keeps of every face it answers, for the faces library (cloud/operator/faces/).

One S3 object per answered face, a JSON `FaceRecord` (the aligned crop inside, so one PutObject a face), at
- `faces/known/<name>/<device>/<YYYY-MM-DD>/<request_id>-<i>.json` for a face matched to `name`;
- `faces/unknown/<device>/<YYYY-MM-DD>/<request_id>-<i>.json` for a face that matched no one.
The two prefixes have their own lifecycle rules (template.yaml: KnownFacesRetentionDays,
UnknownFacesRetentionDays). Names are safe in a key: `name_refusal` admits no `/` and no control character.
The day is the detection day (UTC), so a redelivery overwrites the same object.
"""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cloud.functions import aws
from cloud.functions.contracts import UNKNOWN_NAME, Box, RequestMessage, ResponseMessage
from cloud.functions.images import encode_jpeg

FACES_PREFIX = "faces/"
KNOWN_PREFIX = f"{FACES_PREFIX}known/"
UNKNOWN_PREFIX = f"{FACES_PREFIX}unknown/"
PUT_THREADS = 8  # record writes at once (botocore keeps 10 connections per client)


class FaceRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    request_id: str
    device_id: str
    index: int = Field(ge=0, description="the face's position in the request")
    frame_timestamp: float | None = None
    detected_at: float
    name: str = Field(description="the name answered, or 'unknown'")
    distance: float | None
    box: Box
    probability: float
    model: str = Field(description="the embedding model tag")
    embedding_b64: str = Field(description="the face's float32 embedding (512), base64: for grouping unknowns")
    crop_jpeg_b64: str = Field(description="the aligned 160x160 crop the embedding was made from, JPEG, base64")
    assigned_by: str | None = Field(default=None, description="who named this face in the library, if anyone did")

    @property
    def face_id(self) -> str:
        return f"{self.request_id}-{self.index}"

    @property
    def day(self) -> str:
        return day_of(self.detected_at)

    @property
    def key(self) -> str:
        return record_key(self.name, self.device_id, self.day, self.face_id)

    def embedding(self) -> np.ndarray:
        return np.frombuffer(base64.b64decode(self.embedding_b64), dtype=np.float32)

    def crop_jpeg(self) -> bytes:
        return base64.b64decode(self.crop_jpeg_b64)


def day_of(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%d")


def record_key(name: str, device_id: str, day: str, face_id: str) -> str:
    if name == UNKNOWN_NAME:
        return f"{UNKNOWN_PREFIX}{device_id}/{day}/{face_id}.json"
    return f"{KNOWN_PREFIX}{name}/{device_id}/{day}/{face_id}.json"


@dataclass(frozen=True)
class RecordKey:
    """What a record's key says (record_key's inverse)."""

    name: str
    device_id: str
    day: str
    face_id: str  # <request_id>-<index>

    @property
    def request_id(self) -> str:
        return self.face_id.rsplit("-", 1)[0]


def parse_record_key(key: str) -> RecordKey:
    *head, device_id, day, leaf = key.split("/")
    name = head[2] if len(head) == 3 else UNKNOWN_NAME  # faces/known/<name>/... or faces/unknown/...
    return RecordKey(name, device_id, day, leaf.removesuffix(".json"))


def records_of(request: RequestMessage, response: ResponseMessage, crops: list[np.ndarray],
               embeddings: np.ndarray) -> list[FaceRecord]:
    return [
        FaceRecord(
            request_id=request.request_id, device_id=request.device_id, index=i,
            frame_timestamp=request.frame_timestamp, detected_at=request.detected_at, name=face.name,
            distance=face.distance, box=face.box, probability=face.probability, model=response.model,
            embedding_b64=base64.b64encode(np.asarray(embedding, np.float32).tobytes()).decode(),
            crop_jpeg_b64=base64.b64encode(encode_jpeg(crop)).decode(),
        )
        for i, (face, crop, embedding) in enumerate(zip(response.faces, crops, embeddings, strict=True))
    ]


def put_record(bucket: str, record: FaceRecord) -> str:
    aws.client("s3").put_object(Bucket=bucket, Key=record.key, Body=record.model_dump_json().encode(),
                                ContentType="application/json")
    return record.key


def keep_faces(bucket: str, records: list[FaceRecord]) -> list[str]:
    """Write every record (PUT_THREADS at once); returns their keys."""
    if not records:
        return []
    with ThreadPoolExecutor(max_workers=min(PUT_THREADS, len(records)), thread_name_prefix="face-put") as pool:
        return list(pool.map(lambda record: put_record(bucket, record), records))
