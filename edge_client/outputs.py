"""Where answers and events go: a log line, a JSONL record, a webhook POST, an annotated snapshot, MQTT.

Each output takes events (a person arrived / left; the default) or frames (one record per answered
frame; the JSONL default), `outputs.<name>.on`. The log line and the JSONL record are written inline
(cheap). The webhook runs on one worker thread behind a small bounded queue, and MQTT on paho's own
network thread, so a slow or dead receiver costs the pipeline nothing: when a queue is full or the
broker is away the message is dropped and counted (`facepipe_edge_output_errors_total`). Snapshots
are bounded too: only the newest `snapshots.keep` files are kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import requests

from cloud.functions.contracts import ResponseMessage
from edge_client.annotate import annotated_jpeg
from edge_client.config import OutputsConfig
from edge_client.metrics import EdgeMetrics
from edge_client.redact import redact_url, scrub
from edge_client.tracker import Event

if TYPE_CHECKING:
    from edge_client.presence import Presence

log = logging.getLogger(__name__)

WEBHOOK_QUEUE_SIZE = 64
WEBHOOK_TIMEOUT_S = (2.0, 5.0)  # (connect, read): a receiver slower than this is counted as failed
_STOP = object()

ErrorFn = Callable[..., None]  # (kind, log message, *args)
_NOT_IN_FILE_NAMES = re.compile(r"[^\w.-]")
FILE_LABEL_BYTES = 200  # with the time prefix and `.jpg`, within the 255-byte file names allow


def printable(text: str) -> str:
    """`text` without control and format characters (ESC, NUL, newlines, bidi overrides): names reach
    terminals and log files through these lines, and a gallery written before names were checked may
    hold anything."""
    return "".join(c for c in text if unicodedata.category(c)[0] != "C")


def file_label(text: str) -> str:
    """`text` as part of a file name: word characters, `.` and `-` kept, anything else (`/`, NUL, spaces) `_`."""
    return _NOT_IN_FILE_NAMES.sub("_", text).encode()[:FILE_LABEL_BYTES].decode(errors="ignore")


def answer_line(device_id: str, answer: ResponseMessage) -> str:
    """'front-door: alice 0.42, unknown 1.31' ('front-door: no faces' for an empty frame)."""
    if not answer.faces:
        return f"{device_id}: no faces"
    parts = [printable(face.name) if face.distance is None else f"{printable(face.name)} {face.distance:.2f}"
             for face in answer.faces]
    return f"{device_id}: " + ", ".join(parts)


def answer_record(answer: ResponseMessage, latency_s: float) -> dict[str, Any]:
    """The JSONL / webhook document: the answer as received plus when and how late it arrived."""
    record = answer.model_dump(mode="json")
    record["answered_at"] = time.time()
    record["latency_s"] = round(latency_s, 4)
    return record


class _Webhook:
    """POSTs records from a bounded queue on one daemon thread."""

    def __init__(self, url: str, count_error: ErrorFn) -> None:
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
            self._count_error("queue_full", "webhook queue full (receiver too slow); %s not posted",
                              record.get("event_id") or record.get("request_id"))

    def _run(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            self._post(item)  # type: ignore[arg-type]

    def _post(self, record: dict[str, Any]) -> None:
        try:
            # No redirects: a 307/308 would re-post the names elsewhere, any other a blind request from the camera.
            response = self._session.post(self.url, json=record, timeout=WEBHOOK_TIMEOUT_S, allow_redirects=False)
        except requests.Timeout:
            self._count_error("timeout", "webhook %s timed out", redact_url(self.url))
        except requests.RequestException as exc:
            self._count_error("connection", "webhook %s failed: %s", redact_url(self.url), scrub(str(exc), self.url))
        else:
            if response.is_redirect:
                self._count_error("redirect", "webhook %s answered %d (redirects are not followed)",
                                  redact_url(self.url), response.status_code)
            elif response.ok:
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


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at).strftime("%H:%M:%S")


def event_line(event: Event, snapshot: str | None) -> str:
    """'front-door: barack_obama arrived at 10:42:05 (distance 0.58)' and '... left at 10:42:15 after 10.2 s ...'."""
    distance = "" if event.best_distance is None else f", best distance {event.best_distance:.2f}"
    name = printable(event.name)
    if event.type == "start":
        return f"{event.device_id}: {name} arrived at {_clock(event.start)} ({event.frames} frame(s){distance})"
    if event.type == "update":
        return f"{event.device_id}: the person who arrived at {_clock(event.start)} is {name}{distance}"
    duration = (event.end or event.start) - event.start
    return (f"{event.device_id}: {name} left at {_clock(event.end or event.start)} after {duration:.1f} s "
            f"({event.frames} frame(s){distance})" + (f"; best picture {snapshot}" if snapshot else ""))


class _Snapshots:
    """Annotated JPEGs in a folder, newest `keep` kept (names start with the UTC time: sorted = age order)."""

    def __init__(self, directory: Path, keep: int) -> None:
        self.directory = directory
        self._keep = keep
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        self._files: deque[Path] = deque(sorted(directory.glob("*.jpg")))  # survives restarts

    def write(self, taken: float, label: str, jpeg: bytes) -> Path | None:
        path = self.directory / f"{datetime.fromtimestamp(taken, UTC):%Y%m%dT%H%M%S.%fZ}_{file_label(label)}.jpg"
        tmp = path.with_suffix(".part")
        try:
            tmp.write_bytes(jpeg)
            os.replace(tmp, path)  # readers never see half a JPEG
        except OSError as exc:
            log.warning("snapshot %s not written: %s", path, exc)
            return None
        with self._lock:
            self._files.append(path)
            while len(self._files) > self._keep:
                self._files.popleft().unlink(missing_ok=True)
        return path


class Outputs:
    """Fans answers (`frame`) and events (`event`) out to the configured outputs; never raises for an
    output's failure."""

    def __init__(self, config: OutputsConfig, device_id: str, metrics: EdgeMetrics | None = None,
                 presence: Presence | None = None) -> None:
        self.config = config
        self.device_id = device_id
        self.metrics = metrics or EdgeMetrics()
        self._lock = threading.Lock()
        self._closed = False
        self._jsonl: TextIO | None = None
        if config.jsonl.path is not None:
            config.jsonl.path.parent.mkdir(parents=True, exist_ok=True)
            self._jsonl = config.jsonl.path.open("a", encoding="utf-8")
        snapshots = config.snapshots
        self._snapshots = _Snapshots(snapshots.directory, snapshots.keep) if snapshots.directory else None
        self._webhook = _Webhook(config.webhook.url, self._error_fn("webhook")) if config.webhook.url else None
        self._mqtt: Any = None
        if config.mqtt.host:
            from edge_client.mqtt import MqttOutput  # paho only when MQTT is configured

            self._mqtt = MqttOutput(config.mqtt, device_id, self._error_fn("mqtt"), presence)

    @property
    def webhooks_sent(self) -> int:
        return self._webhook.sent if self._webhook else 0

    def _wants(self, on: str) -> dict[str, bool]:
        c = self.config
        return {"log": c.log.enabled and c.log.on == on, "jsonl": self._jsonl is not None and c.jsonl.on == on,
                "webhook": self._webhook is not None and c.webhook.on == on,
                "snapshots": self._snapshots is not None and c.snapshots.on == on,
                "mqtt": self._mqtt is not None and c.mqtt.on == on}

    def needs_picture(self, event_type: str) -> bool:
        """Whether `event` sends an annotated picture for an event of this type: snapshots write the end's,
        MQTT publishes the start's and the end's."""
        wants = self._wants("events")
        return (wants["snapshots"] and event_type == "end") or (wants["mqtt"] and event_type != "update")

    def frame(self, answer: ResponseMessage, frame_jpeg: bytes | None, latency_s: float) -> None:
        """One answered frame, to the outputs that take frames."""
        wants = self._wants("frames")
        if wants["log"]:
            log.info("%s", answer_line(self.device_id, answer))
        if wants["jsonl"] or wants["webhook"] or wants["mqtt"]:
            record = answer_record(answer, latency_s)
            self._write(wants, record)
            if wants["mqtt"]:
                self._mqtt.publish_frame(record)
        # A frame without faces has nothing to annotate: no snapshot.
        if wants["snapshots"] and self._snapshots is not None and frame_jpeg is not None and answer.faces:
            picture = annotated_jpeg(frame_jpeg, answer.faces)
            if picture is None:
                log.warning("snapshot skipped: frame of %s does not decode", answer.request_id)
            else:
                self._snapshots.write(answer.frame_timestamp or time.time(), answer.request_id, picture)

    def event(self, event: Event, picture: bytes | None) -> str | None:
        """One event, to the outputs that take events; `picture` is its annotated best frame. The picture
        is written once, on `end`; returns its path then."""
        wants = self._wants("events")
        snapshot = None
        if wants["snapshots"] and self._snapshots is not None and event.type == "end" and picture is not None:
            written = self._snapshots.write(event.start, f"{event.name}_{event.event_id}", picture)
            snapshot = str(written) if written else None
        if wants["log"]:
            log.info("%s", event_line(event, snapshot))
        record = event.record(snapshot)
        self._write(wants, record)
        if wants["mqtt"]:
            self._mqtt.publish_event(event, record, picture)
        return snapshot

    def _write(self, wants: dict[str, bool], record: dict[str, Any]) -> None:
        if wants["jsonl"] and self._jsonl is not None:
            with self._lock:
                self._jsonl.write(json.dumps(record, separators=(",", ":")) + "\n")
                self._jsonl.flush()
        if wants["webhook"] and self._webhook is not None:
            self._webhook.submit(record)

    def _error_fn(self, output: str) -> ErrorFn:
        def count(kind: str, message: str, *args: Any) -> None:
            log.warning(message, *args)
            self.metrics.output_errors.labels(output=output, kind=kind).inc()

        return count

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush and stop; queued webhook posts get up to `timeout_s`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._mqtt is not None:
            self._mqtt.close()
        if self._webhook is not None:
            self._webhook.close(timeout_s)
        if self._jsonl is not None:
            self._jsonl.close()
