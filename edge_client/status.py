"""What the status page shows that no counter holds: the latest answered frame and the last events.

Bounded: one frame (its JPEG and faces; annotated only when the page asks) and the last
`EVENTS_KEPT` events, each with its annotated best picture (~50 kB each). Thread-safe.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from cloud.contracts import RecognisedFace
from edge_client.annotate import annotated_jpeg

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
        self._events: OrderedDict[str, tuple[dict[str, Any], bytes | None]] = OrderedDict()
        self._kept = events_kept

    def frame(self, at: float, jpeg: bytes, faces: list[RecognisedFace]) -> None:
        with self._lock:
            if self._frame is None or at >= self._frame.at:  # answers may arrive out of order
                self._frame = LatestFrame(at, jpeg, faces)

    def latest_frame_jpeg(self) -> tuple[float, bytes] | None:
        """(capture time, the latest answered frame annotated), or None before the first answer."""
        with self._lock:
            frame = self._frame
        if frame is None:
            return None
        picture = annotated_jpeg(frame.jpeg, frame.faces)
        return None if picture is None else (frame.at, picture)

    def event(self, record: dict[str, Any], picture: bytes | None) -> None:
        """An event's record; its start, update and end share `event_id` and one entry (the newest wins)."""
        event_id = str(record["event_id"])
        with self._lock:
            previous = self._events.pop(event_id, None)
            if picture is None and previous is not None:
                picture = previous[1]
            self._events[event_id] = (record, picture)
            while len(self._events) > self._kept:
                self._events.popitem(last=False)

    def events(self) -> list[dict[str, Any]]:
        """Newest first; `picture` says whether /api/events/<event_id>.jpg has one."""
        with self._lock:
            items = list(self._events.values())
        return [{**record, "picture": picture is not None} for record, picture in reversed(items)]

    def picture(self, event_id: str) -> bytes | None:
        with self._lock:
            item = self._events.get(event_id)
        return None if item is None else item[1]
