"""Handler settings, read from environment variables (the template and `facepipe local up` set them).

Every variable is prefixed `FACEPIPE_`; AWS endpoints and region come from boto3's own standard
variables (`AWS_ENDPOINT_URL`, `AWS_REGION`/`AWS_DEFAULT_REGION`), so the same code path runs on
AWS and against the local stack.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from cloud.contracts import MAX_QUEUE_MESSAGE_BYTES, MAX_REQUEST_BODY_BYTES, QUEUE_NAME_PATTERN


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACEPIPE_", extra="ignore")

    request_queue_url: str = Field(default="", description="SQS queue the detector sends faces to")
    response_queue_url: str = Field(default="", description="default SQS queue for answers")
    bucket: str = Field(default="", description="S3 bucket: oversized crops, persisted results, gallery")
    gallery_uri: str = Field(default="", description="s3://bucket/key or a local file path")
    weights_path: str = Field(default="", description="local InceptionResnetV1 state_dict file")
    match_threshold: float = Field(default=1.02, gt=0, description="max L2 distance for a named match")
    reply_to_prefix: str = Field(
        default="", pattern=r"^(|" + QUEUE_NAME_PATTERN[1:-1] + ")$",  # empty, or a queue name
        description="queue-name prefix a request's reply_to must match; empty disables reply_to",
    )
    torch_threads: int = Field(default=2, ge=1, le=64)
    min_face_probability: float = Field(default=0.9, ge=0, le=1)
    max_pixels: int = Field(default=16_000_000, gt=0, description="width*height limit read from the header")
    max_body_bytes: int = Field(default=MAX_REQUEST_BODY_BYTES, gt=0)
    detect_max_side: int = Field(default=1280, ge=0, description="downscale longer side before MTCNN; 0 = off")
    max_message_bytes: int = Field(default=MAX_QUEUE_MESSAGE_BYTES, gt=1024)
    persist_results: bool = Field(default=False, description="also write each answer to s3://bucket/results/")
    gallery_refresh_s: float = Field(
        default=30.0, ge=0, description="how often a warm recognizer rechecks the gallery's version; 0 = every batch")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process (one per Lambda container); tests call `get_settings.cache_clear()`."""
    return Settings()
