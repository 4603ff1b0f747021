"""Tracks and events: the faces of consecutive answers, linked into one track per person passing by.

A face is linked to an open track when it was seen within `max_gap_s` of the track's last sighting
and near it: its box overlaps the last one, or its centre is near where the track was heading (the last
position moved on at the speed of its last two sightings: within the narrower face's width, plus two per second of
gap), and it is not much wider or narrower than the last one (MAX_GROWTH): the large face of someone near the camera
is never a small passer-by's next sighting. A track's name comes from all its sightings (`events.decision`):
"evidence" (the default) weighs every candidate of every sighting by its quality, unknown sightings counting against
every name (edge_client/evidence.py; a track whose answers carry no evidence, from a stack before answer schema 2, is
named by votes); "votes" takes the name with the most (non-unknown) votes, ties to the lower mean distance, if its
mean distance is under `max_distance`. Until a name wins the track is 'unknown'. Single frames of a small, blurred
face are often 'unknown' while some frames of the passage are named, or name the person as their nearest candidate:
the track then is named.

Events: `start` when a track is first named (or has stayed unknown for `unknown_after_s`), `update`
when its name changes after that (unknown -> a name; a vote overturned), `end` when no sighting came
for `max_gap_s` (given by the caller's horizon: the capture time up to which every answer is in).
A track that ends unnamed before `unknown_after_s` (a stray detection) makes no event.

Pure: no threads, no I/O; the caller passes times (frame capture times, epoch seconds) and locks.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from cloud.functions.contracts import UNKNOWN_NAME, RecognisedFace
from edge_client.config import EventsConfig
from edge_client.evidence import Evidence

EventType = Literal["start", "update", "end"]


@dataclass(frozen=True)
class Sighting:
    """One face of one answered frame."""

    at: float  # the frame's capture time, epoch seconds
    face: RecognisedFace
    frame: bytes | None = None  # the frame's JPEG, kept for the track's best picture

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.face.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


@dataclass(frozen=True)
class Event:
    type: EventType
    event_id: str
    device_id: str
    name: str
    start: float
    end: float | None  # set on `end` events
    frames: int
    best_distance: float | None
    best: Sighting  # the sighting with the largest face so far (the best picture)

    def record(self, best_snapshot: str | None = None) -> dict[str, Any]:
        """The JSON document outputs send (`best_snapshot`: where the annotated picture was written)."""
        return {
            "type": self.type, "event_id": self.event_id, "device_id": self.device_id, "name": self.name,
            "start": round(self.start, 3), "end": None if self.end is None else round(self.end, 3),
            "frames": self.frames,
            "best_distance": None if self.best_distance is None else round(self.best_distance, 4),
            "best_snapshot": best_snapshot,
        }


@dataclass
class Track:
    track_id: str
    first_at: float
    last_at: float
    last_box: tuple[float, float, float, float]
    best: Sighting
    velocity: tuple[float, float] | None = None  # centre pixels per second, from the last two sightings
    frames: int = 0
    votes: Counter[str] = field(default_factory=Counter)  # non-unknown names -> sightings
    distance_sums: dict[str, float] = field(default_factory=dict)
    min_distance: dict[str, float] = field(default_factory=dict)  # per name or candidate, 'unknown' included
    evidence: Evidence = field(default_factory=Evidence)
    reported: str | None = None  # the name last reported in an event; None before `start`

    def add(self, sighting: Sighting, config: EventsConfig) -> None:
        face = sighting.face
        self.frames += 1
        if sighting.at >= self.last_at:  # answers may arrive out of order: the box follows the newest frame
            dt = sighting.at - self.last_at
            if dt > 0.05:
                (x0, y0), (x1, y1) = _centre(self.last_box), _centre(_box(face))
                self.velocity = ((x1 - x0) / dt, (y1 - y0) / dt)
            self.last_at, self.last_box = sighting.at, _box(face)
        self.first_at = min(self.first_at, sighting.at)
        if sighting.area > self.best.area or (sighting.frame is not None and self.best.frame is None):
            self.best = sighting
        if face.distance is not None:
            self.min_distance[face.name] = min(self.min_distance.get(face.name, math.inf), face.distance)
        for candidate in face.candidates:
            self.min_distance[candidate.name] = min(self.min_distance.get(candidate.name, math.inf), candidate.distance)
        self.evidence.add(face, config)
        if face.name != UNKNOWN_NAME:
            self.votes[face.name] += 1
            self.distance_sums[face.name] = self.distance_sums.get(face.name, 0.0) + (face.distance or 0.0)

    def name(self, config: EventsConfig) -> str:
        # Answers from a stack older than answer schema 2 carry no evidence: they are named as before, by votes.
        if config.decision == "evidence" and self.evidence.evidenced:
            return self.evidence.name(config)
        if not self.votes:
            return UNKNOWN_NAME
        winner = min(self.votes, key=lambda n: (-self.votes[n], self.distance_sums[n] / self.votes[n], n))
        return winner if self.distance_sums[winner] / self.votes[winner] < config.max_distance else UNKNOWN_NAME

    def best_distance(self, name: str) -> float | None:
        if name == UNKNOWN_NAME:
            return min(self.min_distance.values(), default=None)
        return self.min_distance.get(name)


def _box(face: RecognisedFace) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = face.box
    return (x1, y1, x2, y2)


def _centre(box: Sequence[float]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# How much wider (or narrower) a face may be than its track's last one, plus GROWTH_PER_S per second of gap:
# detection boxes jitter by up to a quarter between frames, and a person walking towards the camera grows by a few
# tenths a second. The video's faces beside a walker's are twice its width and more.
MAX_GROWTH, GROWTH_PER_S = 1.5, 0.5


def _link_cost(track: Track, face: RecognisedFace, at: float, config: EventsConfig) -> float | None:
    """Lower is closer; None when the face cannot be this track's."""
    gap = abs(at - track.last_at)
    if gap > config.max_gap_s:
        return None
    box = _box(face)
    widths = (max(track.last_box[2] - track.last_box[0], 1.0), max(box[2] - box[0], 1.0))
    if max(widths) / min(widths) > MAX_GROWTH + GROWTH_PER_S * gap:
        return None  # a face this much wider or narrower than the track's last is someone else's
    overlap = iou(track.last_box, box)
    width = min(widths)
    expected = _centre(track.last_box)
    if track.velocity is not None:  # where the face was heading (a person crossing keeps on walking)
        expected = (expected[0] + track.velocity[0] * (at - track.last_at),
                    expected[1] + track.velocity[1] * (at - track.last_at))
    off = math.dist(_centre(box), expected)
    # One face width, plus two per second of gap (a change of pace or direction; frames are sent a few times
    # a second, fewer while the cloud is busy). Another face appearing where this one was is not linked
    # when this one was on its way elsewhere.
    if overlap < config.min_iou and off > width * (1.0 + 2.0 * gap):
        return None
    return off / width - overlap


def reported_name(decided: str, reported: str | None) -> str:
    """The name a track reports once its decision says `decided`, having reported `reported` (None: nothing yet):
    a named track is never downgraded to unknown; only another name can win."""
    if decided == UNKNOWN_NAME and reported not in (None, UNKNOWN_NAME):
        return reported
    return decided


class Tracker:
    """Links the faces of one device's answers into tracks and reports events."""

    def __init__(self, config: EventsConfig, device_id: str,
                 new_id: Callable[[], str] = lambda: uuid.uuid4().hex) -> None:
        self._config = config
        self._device_id = device_id
        self._new_id = new_id
        self._open: list[Track] = []

    @property
    def open_tracks(self) -> list[Track]:
        return list(self._open)

    def observe(self, at: float, faces: Sequence[RecognisedFace], frame: bytes | None = None) -> list[Event]:
        """One answered frame (captured at `at`): link its faces, return the events it causes."""
        events: list[Event] = []
        for track, _ in self.link(at, faces, frame):
            events += self._report(track)
        return events

    def link(self, at: float, faces: Sequence[RecognisedFace],
             frame: bytes | None = None) -> list[tuple[Track, Sighting]]:
        """Add each face of one answered frame to its track (a new one where none is near) without reporting
        anything: per face, in order, the track it joined and its sighting."""
        pairs = sorted(
            (cost, t_index, f_index)
            for t_index, track in enumerate(self._open)
            for f_index, face in enumerate(faces)
            if (cost := _link_cost(track, face, at, self._config)) is not None
        )
        linked: dict[int, Track] = {}
        used: set[int] = set()
        for _, t_index, f_index in pairs:
            if f_index not in linked and t_index not in used:
                linked[f_index] = self._open[t_index]
                used.add(t_index)
        joined: list[tuple[Track, Sighting]] = []
        for f_index, face in enumerate(faces):
            sighting = Sighting(at, face, frame)
            track = linked.get(f_index)
            if track is None:
                track = Track(self._new_id(), at, at, _box(face), sighting)
                self._open.append(track)
            track.add(sighting, self._config)
            joined.append((track, sighting))
        return joined

    def expire(self, horizon: float) -> list[Event]:
        """End the tracks not seen since `horizon - max_gap_s` (every frame captured before `horizon` is
        answered, so none of them can be extended any more)."""
        ended = [t for t in self._open if t.last_at < horizon - self._config.max_gap_s]
        return self._end(ended)

    def close(self) -> list[Event]:
        """End every open track (the daemon stops)."""
        return self._end(list(self._open))

    def _end(self, tracks: list[Track]) -> list[Event]:
        events: list[Event] = []
        for track in tracks:
            self._open.remove(track)
            events += self._report(track, ending=True)
        return events

    def _report(self, track: Track, ending: bool = False) -> list[Event]:
        name = reported_name(track.name(self._config), track.reported)
        events: list[Event] = []
        if track.reported is None:
            long_enough = track.last_at - track.first_at >= self._config.unknown_after_s
            if name != UNKNOWN_NAME or long_enough:
                events.append(self._event("start", track, name))
        elif name != track.reported:
            events.append(self._event("update", track, name))
        if ending and track.reported is not None:
            events.append(self._event("end", track, name))
        return events

    def _event(self, kind: EventType, track: Track, name: str) -> Event:
        track.reported = name
        return Event(kind, track.track_id, self._device_id, name, track.first_at,
                     track.last_at if kind == "end" else None, track.frames, track.best_distance(name), track.best)
