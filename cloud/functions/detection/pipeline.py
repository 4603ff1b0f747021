"""One frame through detection, whichever door it came in by (the Function URL: handler.py; the ingest queue:
ingest.py): check and decode the image, detect every face, queue the frame's message. The pieces both doors
share live here, below them, so neither door imports the other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from cloud.functions import aws
from cloud.functions.contracts import AnswerSchema, DetectAccepted
from cloud.functions.detection.detector import Detector
from cloud.functions.detection.enqueue import Frame, MessageTooLarge, send_frame
from cloud.functions.images import ImageRejected, open_checked
from cloud.functions.settings import get_settings

logger = Logger(service="facepipe-detection")
metrics = Metrics(namespace="facepipe", service="facepipe-detection")  # as the Logger


class Rejected(Exception):
    """A request we answer with `status` (4xx for bad input, 5xx for our own faults)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Upload:
    request_id: str
    device_id: str
    frame_timestamp: float | None
    reply_to: str | None
    body: bytes
    filename: str | None = None
    answer_schema: AnswerSchema = 1  # X-Answer-Schema: the answer's schema_version the client reads


@lru_cache(maxsize=1)
def get_detector() -> Detector:
    """The container's detector; tests call `get_detector.cache_clear()` after changing settings."""
    settings = get_settings()
    return Detector(
        min_probability=settings.min_face_probability,
        max_side=settings.detect_max_side,
        threads=settings.threads,
        engine=settings.engine,
        models_dir=Path(settings.models_dir) if settings.models_dir else None,
    )


def process(upload: Upload) -> DetectAccepted:
    """Check and decode the image, detect every face, queue the frame's message."""
    settings = get_settings()
    try:
        image = open_checked(upload.body, settings.max_body_bytes, settings.max_pixels)
    except ImageRejected as exc:
        raise Rejected(exc.status, str(exc)) from exc
    started, cpu_started = time.perf_counter(), time.process_time()
    detection = get_detector().detect_capped(image, settings.max_faces)
    faces = detection.faces
    detect_ms = (time.perf_counter() - started) * 1000
    detect_cpu_ms = (time.process_time() - cpu_started) * 1000
    frame = Frame(
        request_id=upload.request_id,
        device_id=upload.device_id,
        frame_timestamp=upload.frame_timestamp,
        reply_to=upload.reply_to,
        width=image.width,
        height=image.height,
        detect_ms=detect_ms,
        detected_at=time.time(),
        filename=upload.filename,
        faces_dropped=detection.dropped,
        answer_schema=upload.answer_schema,
    )
    try:
        sent = send_frame(frame, faces, sqs=aws.client("sqs"), s3=aws.client("s3"), settings=settings)
    except MessageTooLarge as exc:
        raise Rejected(413, str(exc)) from exc
    except (BotoCoreError, ClientError) as exc:
        logger.exception("request queue or bucket unavailable")
        raise Rejected(503, f"cannot queue the frame right now ({type(exc).__name__}); retry later") from exc
    metrics.add_metric(name="DetectMs", unit=MetricUnit.Milliseconds, value=detect_ms)
    metrics.add_metric(name="DetectCpuMs", unit=MetricUnit.Milliseconds, value=detect_cpu_ms)
    metrics.add_metric(name="Faces", unit=MetricUnit.Count, value=len(faces))
    metrics.add_metric(name="FacesDropped", unit=MetricUnit.Count, value=detection.dropped)
    metrics.add_metric(name="CropsInS3", unit=MetricUnit.Count, value=int(sent.crops_in_s3))
    logger.info(
        "frame queued",
        extra={"faces": len(faces), "faces_dropped": detection.dropped, "detect_ms": round(detect_ms, 1),
               "message_bytes": sent.message_bytes, "crops_in_s3": sent.crops_in_s3, "width": image.width,
               "height": image.height},
    )
    return DetectAccepted(request_id=upload.request_id, faces=len(faces), faces_dropped=detection.dropped,
                          detect_ms=round(detect_ms, 3))
