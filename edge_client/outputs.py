"""What happens with each answer: a log line, a JSONL record, a webhook POST, an annotated snapshot.

The log line and the JSONL record are written inline (cheap). The webhook runs on one worker
thread behind a small bounded queue, so a slow or dead receiver costs the pipeline nothing: when
the queue is full the post is dropped and counted. Snapshots are bounded too: only the newest
`snapshots_keep` files are kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np
import requests

from cloud.contracts import UNKNOWN_NAME, ResponseMessage
from edge_client.config import OutputsConfig
from edge_client.metrics import EdgeMetrics
from edge_client.redact import redact_url, scrub

log = logging.getLogger(__name__)

WEBHOOK_QUEUE_SIZE = 64
WEBHOOK_TIMEOUT_S = (2.0, 5.0)  # (connect, read): a receiver slower than this is counted as failed
SNAPSHOTS_KEEP = 500  # ~30 MB of 640x480 JPEGs
_STOP = object()


def answer_line(device_id: str, answer: ResponseMessage) -> str:
    """'front-door: alice 0.42, unknown 1.31' ('front-door: no faces' for an empty frame)."""
    if not answer.faces:
        return f"{device_id}: no faces"
    parts = [face.name if face.distance is None else f"{face.name} {face.distance:.2f}" for face in answer.faces]
    return f"{device_id}: " + ", ".join(parts)


def answer_record(answer: ResponseMessage, latency_s: float) -> dict[str, Any]:
    """The JSONL / webhook document: the answer as received plus when and how late it arrived."""
    record = answer.model_dump(mode="json")
    record["answered_at"] = time.time()
    record["latency_s"] = round(latency_s, 4)
    return record


def annotate(frame_jpeg: bytes, answer: ResponseMessage) -> np.ndarray | None:
    """The frame with a box and 'name distance' label per face; None when the JPEG does not decode."""
    image = cv2.imdecode(np.frombuffer(frame_jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None
    scale = max(image.shape[:2]) / 640  # line width and font grow with the frame
    thickness = max(1, round(2 * scale))
    for face in answer.faces:
        x1, y1, x2, y2 = (round(v) for v in face.box)
        color = (0, 0, 255) if face.name == UNKNOWN_NAME else (0, 200, 0)  # BGR: red unknown, green known
        cv2.rectangle(image, (x1, y1), (x2, y2), color, thickness)
        label = face.name if face.distance is None else f"{face.name} {face.distance:.2f}"
        font_scale = 0.6 * scale
        (w, h), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        top = max(0, y1 - h - base - 2)
        cv2.rectangle(image, (x1, top), (x1 + w + 2, top + h + base + 2), color, cv2.FILLED)
        cv2.putText(image, label, (x1 + 1, top + h + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255),
                    thickness, cv2.LINE_AA)
    return image


class _Webhook:
    """POSTs records from a bounded queue on one daemon thread."""

    def __init__(self, url: str, count_error: Any) -> None:
        self.url = url
        self._count_error = count_error
        self._queue: queue.Queue[object] = queue.Queue(maxsize=WEBHOOK_QUEUE_SIZE)
        self._session = requests.Session()
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self._thread.start()

    def submit(self, record: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._count_error("queue_full", "webhook queue full (receiver too slow); answer %s not posted",
                              record.get("request_id"))

    def _run(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            self._post(item)  # type: ignore[arg-type]

    def _post(self, record: dict[str, Any]) -> None:
        try:
            response = self._session.post(self.url, json=record, timeout=WEBHOOK_TIMEOUT_S)
        except requests.Timeout:
            self._count_error("timeout", "webhook %s timed out", redact_url(self.url))
        except requests.RequestException as exc:
            self._count_error("connection", "webhook %s failed: %s", redact_url(self.url), scrub(str(exc), self.url))
        else:
            if response.ok:
                self.sent += 1
            else:
                self._count_error("http", "webhook %s answered %d", redact_url(self.url), response.status_code)

    def close(self, timeout_s: float) -> None:
        """Let queued posts finish for up to `timeout_s`, then give up on the rest (daemon thread)."""
        deadline = time.monotonic() + timeout_s
        with contextlib.suppress(queue.Full):  # still full at the deadline: the join below gives up too
            self._queue.put(_STOP, timeout=timeout_s)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self._session.close()


class Outputs:
    """Fans one answer out to the configured outputs; `emit` never raises for an output's failure."""

    def __init__(self, config: OutputsConfig, device_id: str, metrics: EdgeMetrics | None = None,
                 snapshots_keep: int = SNAPSHOTS_KEEP) -> None:
        self.config = config
        self.device_id = device_id
        self.metrics = metrics
        self.errors: dict[str, int] = {}  # webhook failures by kind, also without Prometheus
        self._lock = threading.Lock()
        self._closed = False
        self._jsonl: TextIO | None = None
        if config.jsonl is not None:
            config.jsonl.parent.mkdir(parents=True, exist_ok=True)
            self._jsonl = config.jsonl.open("a", encoding="utf-8")
        self._snapshots: deque[Path] = deque()
        self._snapshots_keep = snapshots_keep
        if config.snapshots_dir is not None:
            config.snapshots_dir.mkdir(parents=True, exist_ok=True)
            # Names start with the UTC capture time, so sorted order is age order (survives restarts).
            self._snapshots.extend(sorted(config.snapshots_dir.glob("*.jpg")))
        self._webhook = _Webhook(config.webhook_url, self._webhook_error) if config.webhook_url else None

    @property
    def webhooks_sent(self) -> int:
        return self._webhook.sent if self._webhook else 0

    def emit(self, answer: ResponseMessage, frame_jpeg: bytes | None, latency_s: float) -> None:
        if self.config.log:
            log.info("%s", answer_line(self.device_id, answer))
        if self._jsonl is not None or self._webhook is not None:
            record = answer_record(answer, latency_s)
            if self._jsonl is not None:
                with self._lock:
                    self._jsonl.write(json.dumps(record, separators=(",", ":")) + "\n")
                    self._jsonl.flush()
            if self._webhook is not None:
                self._webhook.submit(record)
        # A frame without faces has nothing to annotate: no snapshot.
        if self.config.snapshots_dir is not None and frame_jpeg is not None and answer.faces:
            self._snapshot(self.config.snapshots_dir, answer, frame_jpeg)

    def _snapshot(self, directory: Path, answer: ResponseMessage, frame_jpeg: bytes) -> None:
        image = annotate(frame_jpeg, answer)
        if image is None:
            log.warning("snapshot skipped: frame of %s does not decode", answer.request_id)
            return
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            log.warning("snapshot skipped: JPEG encoding failed for %s", answer.request_id)
            return
        taken = datetime.fromtimestamp(answer.frame_timestamp or time.time(), UTC)
        path = directory / f"{taken:%Y%m%dT%H%M%S.%fZ}_{answer.request_id}.jpg"
        tmp = path.with_suffix(".part")
        try:
            tmp.write_bytes(encoded.tobytes())
            os.replace(tmp, path)  # readers never see half a JPEG
        except OSError as exc:
            log.warning("snapshot %s not written: %s", path, exc)
            return
        with self._lock:
            self._snapshots.append(path)
            while len(self._snapshots) > self._snapshots_keep:
                self._snapshots.popleft().unlink(missing_ok=True)

    def _webhook_error(self, kind: str, message: str, *args: Any) -> None:
        log.warning(message, *args)
        with self._lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1
        if self.metrics is not None:
            self.metrics.webhook_errors.labels(kind=kind).inc()

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush and stop; queued webhook posts get up to `timeout_s`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._webhook is not None:
            self._webhook.close(timeout_s)
        if self._jsonl is not None:
            self._jsonl.close()
