"""From a request and its matches to an answer on a response queue (and optionally in S3).

Redelivery: SQS delivers at least once, so the same request may be recognised twice. Everything in
the answer is a function of the request message and the gallery (distances rounded to 1e-4, queue
wait taken from the message's first receive), except `timings.recognise_ms`, which measures the
delivery that produced it. Clients deduplicate by `request_id`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from cloud.functions import aws
from cloud.functions.contracts import (
    EVIDENCE_SCHEMA,
    Candidate,
    RecognisedFace,
    RequestMessage,
    ResponseMessage,
    Timings,
    answer_json,
    reply_to_refusal,
)
from cloud.functions.recognition.face_records import day_of
from cloud.functions.recognition.gallery import Match

DISTANCE_DECIMALS = 4  # batch composition moves float32 embeddings by ~1e-6: round it away


class ReplyToRefused(ValueError):
    """A request names a reply_to queue this deployment does not allow."""


def queue_wait_ms(
    request: RequestMessage,
    sent_timestamp_ms: int | None,
    first_receive_ms: int | None,
    now: float | None = None,
) -> float:
    """Time the request spent in the queue. SQS's own timestamps when the event carries them (first
    receive minus sent is the same on every redelivery); otherwise now minus detection time."""
    if sent_timestamp_ms is not None and first_receive_ms is not None:
        return max(0.0, float(first_receive_ms - sent_timestamp_ms))
    now = time.time() if now is None else now
    start = sent_timestamp_ms / 1000 if sent_timestamp_ms is not None else request.detected_at
    return max(0.0, (now - start) * 1000)


def build_response(
    request: RequestMessage,
    matches: Sequence[Match],
    *,
    model_tag: str,
    queue_wait_ms: float,
    recognise_ms: float,
    candidates: Sequence[Sequence[tuple[str, float]]] | None = None,
) -> ResponseMessage:
    """The answer in the schema the request asked for; in EVIDENCE_SCHEMA each face also carries its evidence:
    `candidates` (per face, Gallery.candidates) and the request's quality record."""
    if len(matches) != len(request.faces):
        raise ValueError(f"{len(matches)} matches for {len(request.faces)} faces")
    evidence = request.answer_schema >= EVIDENCE_SCHEMA
    nearest = candidates if candidates is not None and evidence else [()] * len(matches)
    if len(nearest) != len(request.faces):
        raise ValueError(f"candidates for {len(nearest)} of {len(request.faces)} faces")
    faces = [
        RecognisedFace(
            box=face.box,
            name=name,
            distance=None if distance is None else round(distance, DISTANCE_DECIMALS),
            probability=face.probability,
            candidates=[Candidate(name=n, distance=round(d, DISTANCE_DECIMALS)) for n, d in ranked],
            quality=face.quality if evidence else None,
        )
        for face, (name, distance), ranked in zip(request.faces, matches, nearest, strict=True)
    ]
    return ResponseMessage(
        schema_version=request.answer_schema,
        request_id=request.request_id,
        device_id=request.device_id,
        frame_timestamp=request.frame_timestamp,
        faces=faces,
        timings=Timings(
            detect_ms=request.detect_ms,
            queue_wait_ms=round(queue_wait_ms, 1),
            recognise_ms=round(recognise_ms, 1),
        ),
        model=model_tag,
        filename=request.filename,
        faces_dropped=request.faces_dropped,
    )


class Router:
    """Picks the response queue: the configured default, or the request's reply_to when its name
    starts with the configured prefix (one queue per device, never an arbitrary queue)."""

    def __init__(self, default_queue_url: str, reply_to_prefix: str) -> None:
        self.default_queue_url = default_queue_url
        self.reply_to_prefix = reply_to_prefix
        self._urls: dict[str, str] = {}  # queue name -> URL; queue URLs never change

    def queue_url(self, request: RequestMessage) -> str:
        name = request.reply_to
        if name is None:
            if not self.default_queue_url:
                raise ReplyToRefused("no response queue configured (FACEPIPE_RESPONSE_QUEUE_URL) and no reply_to")
            return self.default_queue_url
        refusal = reply_to_refusal(name, self.reply_to_prefix)  # the detector refused these already: defence in depth
        if refusal:
            raise ReplyToRefused(refusal)
        if name not in self._urls:
            self._urls[name] = aws.client("sqs").get_queue_url(QueueName=name)["QueueUrl"]
        return self._urls[name]


def send_response(queue_url: str, response: ResponseMessage) -> str:
    """Put the answer on its queue; returns the SQS MessageId."""
    reply = aws.client("sqs").send_message(QueueUrl=queue_url, MessageBody=answer_json(response))
    return str(reply["MessageId"])


RESULTS_PREFIX = "results/"


def result_key(request: RequestMessage) -> str:
    """results/<device>/<YYYY-MM-DD>/<request_id>.json; the date is the detection date (UTC), so a
    redelivery on another day still overwrites the same object."""
    return result_key_of(request.device_id, day_of(request.detected_at), request.request_id)


def result_key_of(device_id: str, day: str, request_id: str) -> str:
    return f"{RESULTS_PREFIX}{device_id}/{day}/{request_id}.json"


def parse_result_key(key: str) -> tuple[str, str, str]:
    """(device, day, request id): result_key_of's inverse."""
    _, device_id, day, leaf = key.split("/")
    return device_id, day, leaf.removesuffix(".json")


def persist_response(bucket: str, request: RequestMessage, response: ResponseMessage) -> str:
    key = result_key(request)
    aws.client("s3").put_object(
        Bucket=bucket, Key=key, Body=answer_json(response).encode(), ContentType="application/json"
    )
    return key
