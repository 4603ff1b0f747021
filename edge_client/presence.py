"""This camera's part in presence across cameras: its sightings into the shared people state, who is here now
(the names of its open tracks), the last unknown face, and each person home until `presence.away_after_s`
after their last sighting on any camera.

Fed the tracker's events (`event`) and the broker's people states (`remote`, from MQTT). A thread ticks a few
times a second: while a named track stays open its last sighting is refreshed every `refresh_s` (someone
sitting in view for an hour makes one event, and stays home), and each person's home/away is offered to the
link, which publishes a change. Every daemon on the broker does the same from the same retained states, so
the person goes away on time whichever camera saw them last and whichever daemons are still up.
Without a link (no MQTT) the facts are this camera's own, on the status page.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import ValidationError

from cloud.functions.contracts import UNKNOWN_NAME
from edge_client.config import PresenceConfig
from edge_client.mqtt import object_id
from edge_client.people import MAX_PEOPLE, Full, People, PersonState, Stale
from edge_client.tracker import Event

log = logging.getLogger(__name__)

REFRESH_MAX_S = 60.0
# A state further ahead of this clock is refused: it would win every merge (pinning the person home and
# beating `facepipe-edge forget`'s removal at now). Clocks agree within this with NTP.
MAX_AHEAD_S = 60.0
OpenTracks = Callable[[], list[dict[str, Any]]]  # AnswerHandler.open_tracks: event_id, last_seen, ...


class PresenceLink(Protocol):
    """What carries presence to the broker (`mqtt.MqttOutput`)."""

    def person(self, oid: str, state: PersonState, picture: bytes | None) -> None: ...
    def presence(self, oid: str, home: bool) -> None: ...  # publishes a change only
    def removed(self, oid: str, state: PersonState) -> None: ...
    def here(self, names: list[str]) -> None: ...
    def unknown_face(self, record: dict[str, Any], picture: bytes | None) -> None: ...


def sighting_time(event: Event) -> float:
    """The newest sighting an event tells of: its end, else its best picture's (at least its start)."""
    return event.end if event.end is not None else max(event.start, event.best.at)


def _ahead(state: PersonState) -> bool:
    ahead_s = state.at - time.time()
    if ahead_s <= MAX_AHEAD_S:
        return False
    log.warning("presence: a state of %r from %s is %.0f s ahead of this clock: ignored (do the clocks agree?)",
                state.name, state.camera, ahead_s)
    return True


class Presence:
    def __init__(self, config: PresenceConfig, device_id: str) -> None:
        self.away_after_s = config.away_after_s
        self.refresh_s = min(config.away_after_s / 3, REFRESH_MAX_S)
        self._tick_s = min(0.5, config.away_after_s / 10)
        self.device_id = device_id
        self.people = People()
        self._lock = threading.Lock()
        self._open: dict[str, tuple[Event, bytes | None]] = {}  # event_id -> an open track's last event, picture
        self._unknown: dict[str, Any] | None = None
        self._link: PresenceLink | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._open_tracks: OpenTracks = list

    def link(self, link: PresenceLink) -> None:
        self._link = link

    def start(self, open_tracks: OpenTracks) -> None:
        """Tick on a thread of its own; `open_tracks` tells when each open track was last seen."""
        self._open_tracks = open_tracks
        self._thread = threading.Thread(target=self._run, name="presence", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._tick_s):
            try:
                self.tick(time.time())
            except Exception:  # a bug here must not end presence for the rest of the run
                log.exception("presence tick failed")

    # --- this camera's events -----------------------------------------------------------------

    @staticmethod
    def wants_picture(event: Event) -> bool:
        """A named event's picture is the person's; an unknown track's start is the unknown face's."""
        return event.name != UNKNOWN_NAME or event.type == "start"

    def event(self, event: Event, picture: bytes | None) -> None:
        with self._lock:
            before = self._here()
            if event.type == "end":
                self._open.pop(event.event_id, None)
            else:
                kept = self._open.get(event.event_id)
                if picture is None and kept is not None:
                    picture = kept[1]  # an update without one keeps the passage's picture
                self._open[event.event_id] = (event, picture)
            here = self._here()
            if event.type == "start" and event.name == UNKNOWN_NAME:
                self._unknown = {"event_type": "unknown_face", "event_id": event.event_id, "camera": self.device_id,
                                 "at": round(sighting_time(event), 3), "best_distance": event.best_distance}
                unknown = dict(self._unknown)
            else:
                unknown = None
        if self._link is not None and here != before:
            self._link.here(here)
        if self._link is not None and unknown is not None:
            self._link.unknown_face(unknown, picture)
        if event.name != UNKNOWN_NAME:
            self._sighting(event, sighting_time(event), picture)

    def forgotten(self, name: str, since: float) -> bool:
        """Whether `name` was removed at `since` (a track's start) or later: the tracker keeps a track's name
        (and the person's frames, unknown since, keep the track going), but the passage is theirs no more."""
        return self.people.removed_since(object_id(name), since)

    def _here(self) -> list[str]:
        return sorted(event.name for event, _ in self._open.values() if not self.forgotten(event.name, event.start))

    def _sighting(self, event: Event, at: float, picture: bytes | None) -> None:
        try:
            state = PersonState(name=event.name, camera=self.device_id, at=at, best_distance=event.best_distance,
                                event_id=event.event_id)
        except ValidationError:  # a gallery name from before names were checked (control characters)
            log.warning("presence: %r is no name presence can carry", event.name)
            return
        oid = object_id(state.name)
        if _ahead(state):
            return
        try:
            self.people.merge(oid, state, passage_start=event.start)
        except Stale:  # another camera saw them later, or they were removed since (this passage began)
            return
        except Full:
            log.warning("presence: already %d people; %r not kept", MAX_PEOPLE, state.name)
            return
        if picture is not None:
            self.people.set_picture(oid, picture)
        if self._link is not None:
            self._link.person(oid, state, picture)
            self._link.presence(oid, state.home(time.time(), self.away_after_s))

    # --- the broker's states ------------------------------------------------------------------

    def remote(self, oid: str, state: PersonState) -> None:
        """A state on `people/<oid>` (every daemon's, this one's echo included)."""
        if object_id(state.name) != oid or _ahead(state):
            return  # a state under another person's topic, or from the future
        try:
            self.people.merge(oid, state)
        except Stale as stale:
            if stale.held.key() > state.key() and self._link is not None:  # the broker holds an older one: repair
                self._repair(oid, stale.held)
            return
        except Full:
            return
        if self._link is None:
            return
        if state.removed:
            self._link.removed(oid, state)
            with self._lock:
                in_view = any(object_id(event.name) == oid for event, _ in self._open.values())
                here = self._here()
            if in_view:
                self._link.here(here)
        else:
            self._link.presence(oid, state.home(time.time(), self.away_after_s))

    def _repair(self, oid: str, held: PersonState) -> None:
        assert self._link is not None
        if held.removed:
            self._link.removed(oid, held)
        self._link.person(oid, held, None if held.removed else self.people.picture(oid))

    def remote_picture(self, oid: str, jpeg: bytes) -> None:
        self.people.set_picture(oid, jpeg)

    # --- the clock ----------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Refresh the open named tracks' sightings, then offer everyone's home/away to the link."""
        last_seen = {track["event_id"]: float(track["last_seen"]) for track in self._open_tracks()}
        with self._lock:
            named = [(event, picture) for event, picture in self._open.values() if event.name != UNKNOWN_NAME]
        for event, picture in named:
            at = last_seen.get(event.event_id)
            held = self.people.get(object_id(event.name))
            if at is None or (held is not None and at < held.at + self.refresh_s):
                continue
            same_passage = held is not None and held.event_id == event.event_id
            self._sighting(event, at, None if same_passage else picture)
        if self._link is not None:
            for oid, state in self.people.states().items():
                if not state.removed:
                    self._link.presence(oid, state.home(now, self.away_after_s))

    # --- what the status page shows -----------------------------------------------------------

    def status(self, now: float | None = None) -> dict[str, Any]:
        with self._lock:
            here, unknown = self._here(), self._unknown
        return {"away_after_s": self.away_after_s, "here": here, "unknown_face": unknown,
                "people": self.people.listing(time.time() if now is None else now, self.away_after_s)}
