"""What the status page shows that no counter holds: the latest answered frame and the last events.

Bounded: one frame and the last `EVENTS_KEPT` events with their best frames (JPEGs of ~50 kB each),
annotated only when the page asks. Thread-safe.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from cloud.functions.contracts import RecognisedFace
from edge_client.annotate import annotated_jpeg
from edge_client.config import EdgeConfig
from edge_client.redact import redact_url

EVENTS_KEPT = 50


@dataclass(frozen=True)
class LatestFrame:
    at: float
    jpeg: bytes
    faces: list[RecognisedFace]


class LiveStatus:
    def __init__(self, events_kept: int = EVENTS_KEPT) -> None:
        self._lock = threading.Lock()
        self._frame: LatestFrame | None = None
        self._events: OrderedDict[str, tuple[dict[str, Any], bytes | None, list[RecognisedFace]]] = OrderedDict()
        self._kept = events_kept

    def frame(self, at: float, jpeg: bytes, faces: list[RecognisedFace]) -> None:
        with self._lock:
            if self._frame is None or at >= self._frame.at:  # answers may arrive out of order
                self._frame = LatestFrame(at, jpeg, faces)

    def latest_frame_at(self) -> float | None:
        with self._lock:
            return None if self._frame is None else self._frame.at

    def latest_frame_jpeg(self) -> bytes | None:
        """The latest answered frame, annotated (on request: the page polls, the pipeline does not pay)."""
        with self._lock:
            frame = self._frame
        return None if frame is None else annotated_jpeg(frame.jpeg, frame.faces)

    def event(self, record: dict[str, Any], frame: bytes | None, faces: list[RecognisedFace]) -> None:
        """An event's record and its best frame with the face to draw; start, update and end share
        `event_id` and one entry (the newest wins)."""
        event_id = str(record["event_id"])
        with self._lock:
            self._events.pop(event_id, None)
            self._events[event_id] = (record, frame, faces)
            while len(self._events) > self._kept:
                self._events.popitem(last=False)

    def events(self) -> list[dict[str, Any]]:
        """Newest first; `picture` says whether /api/events/<event_id>.jpg has one."""
        with self._lock:
            items = list(self._events.values())
        return [{**record, "picture": frame is not None} for record, frame, _ in reversed(items)]

    def picture(self, event_id: str) -> bytes | None:
        """An event's best picture, annotated now (the page asks for few; the pipeline never pays)."""
        with self._lock:
            item = self._events.get(event_id)
        if item is None or item[1] is None:
            return None
        return annotated_jpeg(item[1], item[2])


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _redact(item) for key, item in value.items()}
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    return value


def public_config(config: EdgeConfig) -> dict[str, Any]:
    """The config in force as JSON, with URL credentials and query strings redacted (camera stream
    passwords, webhook tokens). Credentials themselves never are in the config."""
    redacted: dict[str, Any] = _redact(config.model_dump(mode="json"))
    return redacted
