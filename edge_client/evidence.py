"""A track's name from all the evidence of its sightings (events.decision "evidence").

Each sighting that votes brings a weight, from its quality record: the detector's probability times its size and
sharpness, each as a share of the size and sharpness that count fully (`full_weight_px`, `full_weight_sharpness`).
Faces narrower than `min_face_px` or less sharp than `min_sharpness` are kept in the track (its position, its
picture) but do not vote. A voting sighting gives each of its candidates (the cloud's nearest distinct names) a
score between 1 (distance up to `full_support_distance`) and 0 (from `no_support_distance` on), linear between,
times its weight. Both distances hold for faces `support_wide_px` wide or wider and rise by up to
`narrow_support_rise` as the face narrows to `support_narrow_px`: a small face of the right person lies farther from
its enrolled photo than a large one, while the nearest other person comes only a little nearer (docs/bench.md, "Why the
support distances depend on the face's width"). A candidate's support is its weighted score over the total weight
of every voting sighting: a sighting matching no one adds weight and no score, so it counts against every name.

A track is named when at least `min_faces` sightings voted, the best-supported name reaches `min_support`, and it
beats the runner-up by `min_margin`; a tie names no one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cloud.functions.contracts import UNKNOWN_NAME, RecognisedFace
from edge_client.config import EventsConfig


def weight(face: RecognisedFace, config: EventsConfig) -> float:
    """How much the sighting counts; 0 when it does not vote. A face without a quality record (an older backend)
    counts by its probability alone."""
    quality = face.quality
    if quality is None:
        return face.probability
    if quality.width_px < config.min_face_px or quality.sharpness < config.min_sharpness:
        return 0.0
    size = min(1.0, quality.width_px / config.full_weight_px)
    sharpness = min(1.0, quality.sharpness / config.full_weight_sharpness)
    return quality.probability * size * sharpness


def candidates(face: RecognisedFace) -> list[tuple[str, float]]:
    """The face's candidate names and distances; an older backend's answer has only its name (if any)."""
    if face.candidates:
        return [(c.name, c.distance) for c in face.candidates]
    if face.name != UNKNOWN_NAME and face.distance is not None:
        return [(face.name, face.distance)]
    return []


def ramp(width_px: float | None, config: EventsConfig) -> tuple[float, float]:
    """The full- and no-support distances for a face this wide: as configured from `support_wide_px` on, both raised
    by `narrow_support_rise` at `support_narrow_px` and below, linear between. A face without a quality record (its
    width unknown) is held to the tightest ramp."""
    rise = 0.0
    if width_px is not None:
        narrowness = (config.support_wide_px - width_px) / (config.support_wide_px - config.support_narrow_px)
        rise = config.narrow_support_rise * min(1.0, max(0.0, narrowness))
    return config.full_support_distance + rise, config.no_support_distance + rise


def score(distance: float, full: float, none: float) -> float:
    return min(1.0, max(0.0, (none - distance) / (none - full)))


@dataclass
class Evidence:
    voters: int = 0
    evidenced: int = 0  # sightings whose answer carried evidence (a quality record or candidates: schema 2)
    weight: float = 0.0
    support: dict[str, float] = field(default_factory=dict)  # name -> sum of weighted scores

    def add(self, face: RecognisedFace, config: EventsConfig) -> None:
        self.evidenced += face.quality is not None or bool(face.candidates)
        counted = weight(face, config)
        if counted <= 0:
            return
        self.voters += 1
        self.weight += counted
        full, none = ramp(face.quality.width_px if face.quality is not None else None, config)
        for name, distance in candidates(face):
            self.support[name] = self.support.get(name, 0.0) + counted * score(distance, full, none)

    def shares(self) -> list[tuple[str, float]]:
        """Each candidate's support over the total weight, best first."""
        if self.weight <= 0:
            return []
        return sorted(((n, s / self.weight) for n, s in self.support.items()), key=lambda item: (-item[1], item[0]))

    def name(self, config: EventsConfig) -> str:
        ranked = self.shares()
        if self.voters < config.min_faces or not ranked:
            return UNKNOWN_NAME
        winner, best = ranked[0]
        runner_up = ranked[1][1] if len(ranked) > 1 else 0.0
        if best < config.min_support or best - runner_up < config.min_margin or best == runner_up:
            return UNKNOWN_NAME
        return winner
