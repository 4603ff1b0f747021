"""What happens with an answer: counted, sent to the outputs that take frames, and fed to the tracker,
whose events go to the outputs that take events and to the status page.

The correlator thread delivers answers; the supervisor ends tracks (`expire`) once every frame
captured before a moment is answered. One lock keeps the tracker and event order consistent.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from cloud.functions.contracts import RecognisedFace, ResponseMessage
from edge_client.annotate import annotated_jpeg
from edge_client.correlator import CorrelatorEvents, Pending
from edge_client.metrics import EdgeMetrics
from edge_client.outputs import Outputs
from edge_client.presence import Presence
from edge_client.status import LiveStatus
from edge_client.throttle import InFlight
from edge_client.tracker import Event, Tracker

log = logging.getLogger(__name__)


class AnswerHandler:
    def __init__(self, in_flight: InFlight, metrics: EdgeMetrics, outputs: Outputs, tracker: Tracker,
                 status: LiveStatus, presence: Presence | None = None) -> None:
        self._in_flight = in_flight
        self._metrics = metrics
        self._outputs = outputs
        self._tracker = tracker
        self._status = status
        self._presence = presence
        self._lock = threading.Lock()

    def correlator_events(self) -> CorrelatorEvents:
        return CorrelatorEvents(self.answered, self.unanswered, self.duplicate, self.late)

    def answered(self, answer: ResponseMessage, item: Pending, latency_s: float) -> None:
        self._in_flight.release()
        self._metrics.frames_answered.inc()
        self._metrics.observe_latency(latency_s)
        for face in answer.faces:
            self._metrics.faces.labels(name=face.name).inc()
        try:
            self._outputs.frame(answer, item.jpeg, latency_s)
            if item.jpeg is not None:
                self._status.frame(item.captured_at, item.jpeg, answer.faces)
            with self._lock:
                self._publish(self._tracker.observe(item.captured_at, answer.faces, item.jpeg))
        except Exception:  # an output bug must not stop correlation
            log.exception("output failed for %s", answer.request_id)

    def unanswered(self, _item: Pending) -> None:
        self._in_flight.release()
        self._metrics.frames_unanswered.inc()

    def duplicate(self, _request_id: str) -> None:
        self._metrics.duplicates.inc()

    def late(self, _request_id: str) -> None:
        self._metrics.late_answers.inc()

    def expire(self, horizon: float | None = None) -> None:
        """End tracks not seen within max_gap_s of `horizon` (None: end them all, the daemon stops)."""
        with self._lock:
            events = self._tracker.close() if horizon is None else self._tracker.expire(horizon)
            self._publish(events)

    def tracking(self) -> bool:
        """Whether any track is open: someone is in view, or was within events.max_gap_s."""
        with self._lock:
            return bool(self._tracker.open_tracks)

    def open_tracks(self) -> list[dict[str, Any]]:
        with self._lock:
            tracks = self._tracker.open_tracks
            return [{"event_id": t.track_id, "name": t.reported or "(deciding)", "start": round(t.first_at, 3),
                     "last_seen": round(t.last_at, 3), "frames": t.frames,
                     "age_s": round(time.time() - t.first_at, 1)} for t in tracks]

    def _publish(self, events: list[Event]) -> None:
        for event in events:
            self._metrics.events.labels(type=event.type).inc()
            frame, faces = self._best_frame(event)
            # Annotating costs a JPEG decode and encode: only when an output sends the picture now (the
            # status page annotates when it is asked).
            wanted = frame is not None and (self._outputs.needs_picture(event.type) or (
                self._presence is not None and self._presence.wants_picture(event)))
            picture = annotated_jpeg(frame, faces) if wanted and frame is not None else None
            try:
                snapshot = self._outputs.event(event, picture)
            except Exception:  # one output's bug must not lose the event for the others
                log.exception("output failed for event %s", event.event_id)
                snapshot = None
            self._status.event(event.record(snapshot), frame, faces)
            if self._presence is not None:
                try:
                    self._presence.event(event, picture)
                except Exception:
                    log.exception("presence failed for event %s", event.event_id)

    @staticmethod
    def _best_frame(event: Event) -> tuple[bytes | None, list[RecognisedFace]]:
        """The event's best frame and its face, boxed and labelled with the event's name."""
        best = event.best
        distance = best.face.distance if best.face.name == event.name else None  # that frame's own match
        face = RecognisedFace(box=best.face.box, name=event.name, distance=distance, probability=best.face.probability)
        return best.frame, [face]
