"""Who was seen where: each person's newest sighting on any camera, the state every daemon shares.

A `PersonState` is what the retained `<topic_prefix>/people/<id>` topic holds: the last camera, when, the
best distance of that passage and its event id. Each daemon keeps the newest it knows per person in a
`People` cache and merges every state it sees, its own and the broker's, by time: the newer wins (ties go
to the camera name, so every daemon picks the same one). A removal (`facepipe-edge forget`) is a state too,
`removed` at the time of removal, so a sighting made before it (an answer still on its way) cannot bring the
person back while one made after it (the person enrolled again) can.

Pure: no threads, no I/O; thread-safe.
"""

from __future__ import annotations

import threading
import unicodedata
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, computed_field, field_validator

from cloud.functions.contracts import DEVICE_ID_PATTERN, NAME_MAX_CHARS, UNKNOWN_NAME

MAX_PEOPLE = 1000  # names a cache holds: the gallery's size bounds it; a flood on the broker cannot grow memory
MAX_PICTURE_BYTES = 2 * 1024 * 1024
JPEG_START = b"\xff\xd8"


def presence_refusal(name: str) -> str | None:
    """Why presence cannot carry `name`, or None when it can. Looser than enrollment's `name_refusal`: a
    gallery name from before names were checked is still someone's presence (and can still be forgotten)."""
    if not 1 <= len(name) <= NAME_MAX_CHARS:
        return f"{name!r} is not 1-{NAME_MAX_CHARS} characters long"
    if name == UNKNOWN_NAME:
        return f"{name!r} is no one's name"
    if any(unicodedata.category(c)[0] == "C" for c in name):
        return f"{name!r} holds control characters"
    return None


class PersonState(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)  # ignore: a newer daemon may add fields

    name: str
    camera: str = Field(pattern=DEVICE_ID_PATTERN, description="the device that saw them (or removed them)")
    at: float = Field(ge=0, allow_inf_nan=False, description="the sighting (or removal), epoch seconds")
    best_distance: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    event_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    removed: bool = False

    @field_validator("name")
    @classmethod
    def _carried(cls, value: str) -> str:
        refusal = presence_refusal(value)
        if refusal is not None:
            raise ValueError(refusal)
        return value

    @computed_field  # type: ignore[prop-decorator]
    @property
    def time(self) -> str:
        """`at` for people (Home Assistant shows it as an attribute): ISO 8601, UTC."""
        return datetime.fromtimestamp(self.at, UTC).isoformat(timespec="seconds")

    def key(self) -> tuple[float, bool, str]:
        """Newer is greater; at the same time a removal wins, then the camera name decides."""
        return (self.at, self.removed, self.camera)

    def home(self, now: float, away_after_s: float) -> bool:
        return not self.removed and now < self.at + away_after_s

    def payload(self) -> bytes:
        return self.model_dump_json().encode()


def parse_state(payload: bytes) -> PersonState | None:
    """A state from the broker, or None when it is not one (anyone with publish rights can write there)."""
    try:
        return PersonState.model_validate_json(payload)
    except ValidationError:
        return None


class People:
    """The newest state per person (by object id) and the best picture of that passage.

    Sightings and removals are held apart, each at most MAX_PEOPLE: removals pile up over the years (and
    anyone with publish rights can flood them), so they must not take the room of the people still enrolled;
    the longest-held removal goes first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, PersonState] = {}  # an object id is in one of the two, never both
        self._removed: dict[str, PersonState] = {}  # in the order taken (the first is the longest held)
        self._pictures: dict[str, bytes] = {}

    def merge(self, oid: str, state: PersonState, passage_start: float | None = None) -> PersonState | None:
        """Take `state` when it is newer than the one held; returns the one held before it (None when it was
        the first). Raises `Stale` with the held state when that one is newer (the sender needs it), or is a
        removal made since `passage_start` (a track open since before it is still the removed person's);
        `Full` when a new sighting finds MAX_PEOPLE people held."""
        with self._lock:
            held = self._held(oid)
            if held is not None and (held.key() >= state.key() or _removed_since(held, passage_start)):
                raise Stale(held)
            if state.removed:
                self._seen.pop(oid, None)
                self._pictures.pop(oid, None)
                self._removed.pop(oid, None)  # taken again: now the newest removal
                if len(self._removed) >= MAX_PEOPLE:
                    del self._removed[next(iter(self._removed))]
                self._removed[oid] = state
            else:
                if oid not in self._seen and len(self._seen) >= MAX_PEOPLE:
                    raise Full(oid)
                self._removed.pop(oid, None)
                self._seen[oid] = state
            return held

    def get(self, oid: str) -> PersonState | None:
        with self._lock:
            return self._held(oid)

    def removed_since(self, oid: str, at: float) -> bool:
        """Whether the person was removed at `at` or later."""
        with self._lock:
            return _removed_since(self._held(oid), at)

    def _held(self, oid: str) -> PersonState | None:
        seen = self._seen.get(oid)
        return seen if seen is not None else self._removed.get(oid)

    def states(self) -> dict[str, PersonState]:
        with self._lock:
            return {**self._removed, **self._seen}

    def set_picture(self, oid: str, jpeg: bytes) -> bool:
        """Keep `jpeg` as the person's picture; False when it is no JPEG, too large, or of no one present."""
        if not jpeg.startswith(JPEG_START) or len(jpeg) > MAX_PICTURE_BYTES:
            return False
        with self._lock:
            if oid not in self._seen:
                return False
            self._pictures[oid] = jpeg
            return True

    def picture(self, oid: str) -> bytes | None:
        with self._lock:
            return self._pictures.get(oid)

    def listing(self, now: float, away_after_s: float) -> list[dict[str, Any]]:
        """Everyone not removed, the most recently seen first (the status page and /api/status)."""
        with self._lock:
            items = [(oid, s, oid in self._pictures) for oid, s in self._seen.items()]
        items.sort(key=lambda item: -item[1].at)
        return [{"id": oid, "name": s.name, "home": s.home(now, away_after_s), "camera": s.camera,
                 "at": round(s.at, 3), "best_distance": s.best_distance, "event_id": s.event_id, "picture": picture}
                for oid, s, picture in items]


def _removed_since(held: PersonState | None, at: float | None) -> bool:
    return held is not None and held.removed and at is not None and held.at >= at


class Stale(Exception):
    """The state offered is not newer than the one held (`held`)."""

    def __init__(self, held: PersonState) -> None:
        super().__init__(held.name)
        self.held = held


class Full(Exception):
    """The cache holds MAX_PEOPLE people already."""
