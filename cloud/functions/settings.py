"""Handler settings, read from environment variables (the template and `facepipe local up` set them).

Every variable is prefixed `FACEPIPE_`; AWS endpoints and region come from boto3's own standard
variables (`AWS_ENDPOINT_URL`, `AWS_REGION`/`AWS_DEFAULT_REGION`), so the same code path runs on
AWS and against the local stack.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cloud.functions.contracts import (
    MAX_FACES_PER_FRAME,
    MAX_QUEUE_MESSAGE_BYTES,
    MAX_REQUEST_BODY_BYTES,
    QUEUE_NAME_PATTERN,
)

LAMBDA_MB_PER_VCPU = 1769  # Lambda gives 1 vCPU per 1769 MB of memory ...
LAMBDA_MAX_VCPUS = 6  # ... up to 6 at 10240 MB


def default_threads(lambda_memory_mb: int | None, cpu_count: int | None) -> int:
    """The engine's intra-op threads (ONNX Runtime's or torch's) for the CPU share this process has: in Lambda,
    the vCPUs its memory size buys (AWS_LAMBDA_FUNCTION_MEMORY_SIZE); elsewhere 2. Never more than the CPUs the
    machine shows."""
    wanted = 2 if lambda_memory_mb is None else round(lambda_memory_mb / LAMBDA_MB_PER_VCPU)
    return max(1, min(wanted, LAMBDA_MAX_VCPUS, cpu_count or 1))


def _threads() -> int:
    memory = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")  # set by Lambda in every function
    return default_threads(int(memory) if memory else None, os.cpu_count())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACEPIPE_", extra="ignore")

    request_queue_url: str = Field(default="", description="SQS queue the detector sends faces to")
    response_queue_url: str = Field(default="", description="default SQS queue for answers")
    bucket: str = Field(default="", description="S3 bucket: oversized crops, persisted results, gallery")
    gallery_uri: str = Field(default="", description="s3://bucket/key or a local file path")
    weights_path: str = Field(default="", description="local InceptionResnetV1 state_dict file (engine torch)")
    # Which runtime runs the networks: "onnx" (the exported files in models_dir, no torch) or "torch"
    # (facenet-pytorch's own forward passes, the reference the exports are checked against).
    engine: Literal["onnx", "torch"] = Field(default="onnx", description="network runtime: onnx or torch")
    models_dir: str = Field(default="", description="folder of the exported .onnx networks (engine onnx)")
    match_threshold: float = Field(default=1.02, gt=0, description="max L2 distance for a named match")
    reply_to_prefix: str = Field(
        default="", pattern=r"^(|" + QUEUE_NAME_PATTERN[1:-1] + ")$",  # empty, or a queue name
        description="queue-name prefix a request's reply_to must match; empty disables reply_to",
    )
    threads: int = Field(
        default_factory=_threads, ge=1, le=64,
        description="the engine's intra-op threads; default: the vCPU share (AWS_LAMBDA_FUNCTION_MEMORY_SIZE)",
    )
    min_face_probability: float = Field(default=0.9, ge=0, le=1)
    max_pixels: int = Field(default=16_000_000, gt=0, description="width*height limit read from the header")
    max_body_bytes: int = Field(default=MAX_REQUEST_BODY_BYTES, gt=0)
    detect_max_side: int = Field(default=1280, ge=0, description="downscale longer side before MTCNN; 0 = off")
    max_message_bytes: int = Field(default=MAX_QUEUE_MESSAGE_BYTES, gt=1024)
    # Most faces queued per frame (the most probable; the rest are counted as faces_dropped). 32: a frame's
    # message stays ~8 KB with crops in S3 (~241 bytes a face; inline crops, ~8.8 KB each, fit up to ~29), a
    # frame's uploads are 4 rounds of the detector's 8 upload threads, and a batch of 10 such frames is 320
    # crops, ~4 s in the recognizer on ONNX Runtime (~11-13 ms a crop; 6-29 s on torch), well inside its 60 s
    # timeout. Contract ceiling: 64.
    max_faces: int = Field(default=32, ge=1, le=MAX_FACES_PER_FRAME)
    # Most crops per InceptionResnetV1 forward pass. On ONNX Runtime, one thread: 10.8-10.9 ms a face at 8, 16 or 32
    # crops a pass, and ~4 MB of activations a crop (a session at 149 MB resident after loading: 214 MB after a pass
    # of 16, 271 MB after 32). 16 keeps a loaded recognition worker's peak under its load-time peak (~330 MB with
    # the handler's imports) at no cost in speed; a whole batch in one pass (up to 10 x 64 crops) would need ~2.5 GB.
    embed_chunk: int = Field(default=16, ge=1, le=256)
    persist_results: bool = Field(default=False, description="also write each answer to s3://bucket/results/")
    keep_faces: bool = Field(default=False, description="also write each answered face (crop, name, embedding) to "
                                                        "s3://bucket/faces/ for the faces library")
    # Answer schema 2 tells a caller the nearest enrolled names of any face it sends, matched or not: only callers the
    # URL has identified get it (the template sets this false for a public URL, FunctionUrlAuthType NONE).
    evidence_answers: bool = Field(default=False, description="answer X-Answer-Schema 2 (each face's candidates and "
                                                              "quality) on the Function URL; else schema 1")
    gallery_refresh_s: float = Field(
        default=30.0, ge=0, description="how often a warm recognizer rechecks the gallery's version; 0 = every batch")
    # Devices as identities (cloud/operator/devices.py): a Function URL caller may send only as the device its IAM user
    # name says, and its answers go only to that device's queue. Needs AWS_IAM auth and a reply_to prefix.
    bind_devices: bool = Field(default=False, description="bind X-Device-Id and reply_to to the caller's IAM user")
    device_user_prefix: str = Field(default="", description="IAM user names of devices: <prefix><device id>")
    device_role_name: str = Field(default="", description="the device role: its sessions named <device id> are devices")
    device_account: str = Field(default="", description="the stack's account: devices are its users and sessions")

    @model_validator(mode="after")
    def _binding_has_what_it_needs(self) -> Settings:
        if self.bind_devices and not (self.reply_to_prefix and self.device_user_prefix and self.device_account):
            raise ValueError("FACEPIPE_BIND_DEVICES needs FACEPIPE_REPLY_TO_PREFIX, FACEPIPE_DEVICE_USER_PREFIX and "
                             "FACEPIPE_DEVICE_ACCOUNT")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process (one per Lambda container); tests call `get_settings.cache_clear()`."""
    return Settings()
