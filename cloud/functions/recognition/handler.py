"""Recognition Lambda (SQS trigger): a batch of request messages -> one embedding call over every
crop of the batch (in forward passes of at most FACEPIPE_EMBED_CHUNK crops) -> gallery match -> one
answer per request on its response queue.

Two phases, so the embedding happens once per batch while powertools still owns the partial
batch response:
1. `recognise_batch` parses every record, loads its crops and routes it; records that fail here
   keep their exception (a crop key outside crops/<device_id>/<request_id>/ fails parsing: nothing is read).
   All good crops are embedded in one call and matched.
2. powertools' BatchProcessor walks the records: `Batch.respond` re-raises a record's exception
   (-> batchItemFailures, redelivered, DLQ after maxReceiveCount) or sends its answer.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from cloud.functions import aws
from cloud.functions.contracts import (
    CROP_SIZE,
    EVIDENCE_SCHEMA,
    MAX_CANDIDATES,
    MAX_QUEUE_MESSAGE_BYTES,
    UNKNOWN_NAME,
    RequestMessage,
    is_valid_device_id,
    is_valid_request_id,
)
from cloud.functions.images import ImageRejected, decode_jpeg
from cloud.functions.memory import keep_freed_memory
from cloud.functions.recognition.embedder import Embedder, Engine
from cloud.functions.recognition.face_records import keep_faces, records_of
from cloud.functions.recognition.gallery import EMBEDDING_SIZE, Gallery, GalleryCache, Match
from cloud.functions.recognition.respond import Router, build_response, persist_response, queue_wait_ms, send_response
from cloud.functions.settings import Settings, get_settings

# An inline crop is bounded by the message size; one in S3 gets the same bound (a 160x160 JPEG is ~10 KB).
MAX_CROP_BYTES = MAX_QUEUE_MESSAGE_BYTES
FETCH_THREADS = 8  # S3 crop reads at once (botocore keeps 10 connections per client)

logger = Logger(service="facepipe-recognition")
metrics = Metrics(namespace="facepipe", service="facepipe-recognition")
# A batch where every record fails is reported record by record, like any partial failure.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


# --- per-container state -------------------------------------------------------------------------


def get_embedder(weights_path: str, threads: int, engine: Engine, models_dir: str = "") -> Embedder:
    """The container's embedder, one per model file: keyed by the files `engine` reads (the weights for torch, the
    models dir for onnx), so a setting the engine ignores never loads a second copy of the model."""
    if engine == "torch":
        return _embedder(weights_path, threads, engine, "")
    return _embedder("", threads, engine, models_dir)


@cache
def _embedder(weights_path: str, threads: int, engine: Engine, models_dir: str) -> Embedder:
    # by model file: tests change settings, not the model
    return Embedder(weights_path, threads=threads, engine=engine, models_dir=models_dir)


@dataclass
class Container:
    """What a warm execution environment keeps between batches, in one place; built once, in the init phase."""

    settings: Settings
    embedder: Embedder
    router: Router  # holds the reply_to queue URL cache
    galleries: GalleryCache  # the gallery, rechecked every settings.gallery_refresh_s


@cache
def get_container() -> Container:
    settings = get_settings()
    embedder = get_embedder(settings.weights_path, settings.threads, settings.engine, settings.models_dir)
    return Container(settings=settings, embedder=embedder,
                     router=Router(settings.response_queue_url, settings.reply_to_prefix),
                     galleries=GalleryCache(settings.gallery_refresh_s))


def reset_caches() -> None:
    """Forget the container, its model and the settings (tests change the environment)."""
    get_container.cache_clear()
    _embedder.cache_clear()
    get_settings.cache_clear()


# --- phase 1: parse, load crops, embed once, match -----------------------------------------------


@dataclass
class Outcome:
    """What phase 1 concluded about one record."""

    error: Exception | None = None
    request: RequestMessage | None = None
    queue_url: str = ""
    crops: list[np.ndarray] = field(default_factory=list)
    matches: list[Match] = field(default_factory=list)
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, EMBEDDING_SIZE), np.float32))
    candidates: list[list[tuple[str, float]]] = field(default_factory=list)  # per crop: the nearest distinct names


class BadRequest(ValueError):
    """The record is not a usable request message (it will not get better on redelivery)."""


def parse_request(body: str) -> RequestMessage:
    request = RequestMessage.model_validate_json(body)  # unknown schema_version fails here too
    if not is_valid_request_id(request.request_id):
        raise BadRequest(f"request_id {request.request_id[:80]!r} is not a canonical UUID")
    if not is_valid_device_id(request.device_id):
        raise BadRequest(f"device_id {request.device_id[:80]!r} is not a valid device id")
    return request


def load_crops(request: RequestMessage, bucket: str) -> list[np.ndarray]:
    """Every face's 160x160 RGB crop, inline (base64 JPEG) or from S3 (FETCH_THREADS reads at once)."""
    in_s3 = []
    for i, face in enumerate(request.faces):
        if (face.crop_jpeg_b64 is None) == (face.crop_s3_key is None):
            raise BadRequest(f"face {i}: exactly one of crop_jpeg_b64 and crop_s3_key must be set")
        if face.crop_s3_key is not None:
            in_s3.append(i)
    if in_s3 and not bucket:
        raise BadRequest(f"face {in_s3[0]}: crop in S3 but FACEPIPE_BUCKET is not set")
    jpegs: dict[int, bytes] = {}
    if in_s3:
        with ThreadPoolExecutor(max_workers=min(FETCH_THREADS, len(in_s3)), thread_name_prefix="crop-fetch") as pool:
            jpegs = dict(zip(in_s3, pool.map(lambda i: _fetch_crop(bucket, i, request.faces[i].crop_s3_key), in_s3),
                             strict=True))
    crops = []
    for i, face in enumerate(request.faces):
        if face.crop_jpeg_b64 is not None:
            try:
                jpegs[i] = base64.b64decode(face.crop_jpeg_b64, validate=True)
            except binascii.Error as exc:
                raise BadRequest(f"face {i}: crop_jpeg_b64 is not base64: {exc}") from exc
        try:
            crops.append(decode_jpeg(jpegs[i], (CROP_SIZE, CROP_SIZE)))
        except ImageRejected as exc:
            raise BadRequest(f"face {i}: {exc}") from exc
    return crops


def _fetch_crop(bucket: str, index: int, key: str | None) -> bytes:
    """One crop object, its size checked before its body is read. The key is the request's own
    (RequestMessage checks it is under crops/<device_id>/<request_id>/)."""
    stored = aws.client("s3").get_object(Bucket=bucket, Key=key)
    if stored["ContentLength"] > MAX_CROP_BYTES:
        stored["Body"].close()
        raise BadRequest(f"face {index}: crop object is {stored['ContentLength']} bytes; the limit is {MAX_CROP_BYTES}")
    return bytes(stored["Body"].read())


def prepare_record(record: SQSRecord, container: Container) -> Outcome:
    try:
        request = parse_request(record.body)
        queue_url = container.router.queue_url(request)
        return Outcome(request=request, queue_url=queue_url, crops=load_crops(request, container.settings.bucket))
    except Exception as exc:  # kept for phase 2, where powertools reports it for this record only
        return Outcome(error=exc)


def embed_and_match(outcomes: list[Outcome], embedder: Embedder, gallery: Gallery, settings: Settings) -> None:
    """One embedding call for every crop of the batch (chunked forward passes, so memory stays bounded
    whatever the batch holds); the matches are dealt back to their records."""
    good = [o for o in outcomes if o.error is None]
    embeddings = embedder.embed([crop for o in good for crop in o.crops], chunk_size=settings.embed_chunk)
    matches = gallery.match(embeddings, settings.match_threshold)
    asked = any(o.request is not None and o.request.answer_schema >= EVIDENCE_SCHEMA for o in good)
    candidates = gallery.candidates(embeddings, MAX_CANDIDATES) if asked else [[] for _ in range(len(embeddings))]
    start = 0
    for outcome in good:
        outcome.matches = matches[start : start + len(outcome.crops)]
        outcome.embeddings = embeddings[start : start + len(outcome.crops)]
        outcome.candidates = candidates[start : start + len(outcome.crops)]
        start += len(outcome.crops)


@dataclass
class Batch:
    outcomes: dict[str, Outcome]
    model_tag: str
    recognise_ms: float
    settings: Settings

    def respond(self, record: SQSRecord) -> str:
        """powertools' record handler: answer one request, or raise its phase-1 error."""
        outcome = self.outcomes[record.message_id]
        if outcome.error is not None or outcome.request is None:
            logger.warning(
                "message %s not answered (receive count %s): %s: %s", record.message_id,
                record.attributes.get("ApproximateReceiveCount"), type(outcome.error).__name__, outcome.error,
            )
            raise outcome.error or BadRequest("no request")
        request = outcome.request
        logger.set_correlation_id(request.request_id)
        try:
            attributes = record.attributes
            wait = queue_wait_ms(request, _int(attributes.get("SentTimestamp")),
                                 _int(attributes.get("ApproximateFirstReceiveTimestamp")))
            response = build_response(request, outcome.matches, model_tag=self.model_tag,
                                      queue_wait_ms=wait, recognise_ms=self.recognise_ms,
                                      candidates=outcome.candidates)
            if self.settings.persist_results:
                persist_response(self.settings.bucket, request, response)
            if self.settings.keep_faces:  # before the answer: a face answered is a face the library lists
                keep_faces(self.settings.bucket, records_of(request, response, outcome.crops, outcome.embeddings))
            send_response(outcome.queue_url, response)
            unknowns = sum(face.name == UNKNOWN_NAME for face in response.faces)
            metrics.add_metric(name="QueueWaitMs", unit=MetricUnit.Milliseconds, value=wait)
            metrics.add_metric(name="Unknowns", unit=MetricUnit.Count, value=unknowns)
            logger.info("answered", extra={"device_id": request.device_id, "faces": len(response.faces),
                                           "names": [face.name for face in response.faces]})
            return request.request_id
        except Exception:
            logger.exception("could not answer message %s; it returns to the queue", record.message_id)
            raise
        finally:
            logger.set_correlation_id(None)


def recognise_batch(records: list[SQSRecord], container: Container) -> Batch:
    """Phase 1 for the whole event. Embedder and gallery failures (missing weights, a gallery built
    with other weights) raise: the whole batch returns to the queue, and the log says why."""
    settings, embedder = container.settings, container.embedder
    gallery = container.galleries.get(settings.gallery_uri, embedder.model_tag)
    start, cpu_started = time.perf_counter(), time.process_time()
    outcomes = [prepare_record(record, container) for record in records]
    embed_and_match(outcomes, embedder, gallery, settings)
    recognise_ms = (time.perf_counter() - start) * 1000
    faces = sum(len(o.crops) for o in outcomes if o.error is None)
    metrics.add_metric(name="RecogniseMs", unit=MetricUnit.Milliseconds, value=recognise_ms)
    metrics.add_metric(name="RecogniseCpuMs", unit=MetricUnit.Milliseconds,
                       value=(time.process_time() - cpu_started) * 1000)
    metrics.add_metric(name="Faces", unit=MetricUnit.Count, value=faces)
    return Batch({r.message_id: o for r, o in zip(records, outcomes, strict=True)},
                 embedder.model_tag, recognise_ms, settings)


# --- the Lambda entry point ------------------------------------------------------------------------


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    cpu_started = time.process_time()
    try:
        records = [SQSRecord(raw) for raw in event["Records"]]
        batch = recognise_batch(records, get_container())
        _test_only_delay(records, batch)
        result = process_partial_response(event=event, record_handler=batch.respond, processor=processor,
                                          context=context)
        return dict(result)
    finally:
        # The batch's CPU time: beside RecogniseCpuMs, what answering costs (SQS sends, logs).
        metrics.add_metric(name="HandlerCpuMs", unit=MetricUnit.Milliseconds,
                           value=(time.process_time() - cpu_started) * 1000)
        metrics.flush_metrics()


def _test_only_delay(records: list[SQSRecord], batch: Batch) -> None:
    """TEST ONLY (tests/reliability/test_timeouts.py): FACEPIPE_TEST_DELAY="<device_id>:<seconds>" holds a
    batch carrying a first delivery from that device, to push it past the function's timeout. Never set
    in a deployment: unset, this does nothing."""
    hook = os.environ.get("FACEPIPE_TEST_DELAY")
    if not hook:
        return
    device, _, seconds = hook.rpartition(":")
    if any((outcome := batch.outcomes[r.message_id]).request is not None and outcome.request.device_id == device
           and r.attributes.get("ApproximateReceiveCount") == "1" for r in records):
        time.sleep(float(seconds))


def _int(value: str | None) -> int | None:
    return int(value) if value else None


if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    get_container()  # load the model during Lambda's init phase, not in the first batch
    # Then keep freed memory for the next request (cloud/functions/memory.py). After the load, not before: with freed
    # memory
    # kept, the load's own discarded copies of the weights would all stay resident at once (recognition's peak
    # 351 MB instead of 325 MB).
    keep_freed_memory()
