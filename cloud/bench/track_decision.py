"""Track decision benchmark: today's vote ("votes") and the evidence-weighted decision ("evidence") side by side on
people walking across the shared real video (cloud/bench/passages.py), at 20-32, 28-44, 32-48, 40-64 and 56-96 px,
motion-blurred.
Prints figures; asserts nothing.

Run: `make bench` or `.venv/bin/python -m cloud.bench.track_decision [--models-dir D] [--held-out] [--calibrate]`.

Galleries: "all" enrolls the 1.jpg of every shared person with two photos (21); the people with one photo (8) walk
as strangers. "one" enrolls one of those 21 at a time (21 runs, summed): the other 28 walk as strangers. In every
clip the video's own faces (a performer and the audience, none enrolled) are strangers too. Per decision: passages of
enrolled people named right, wrong or left unknown; passages of strangers named; video faces' tracks named.
The recognizer's answer per face is built as the functions build it (Gallery.match at the default threshold and
Gallery.candidates), so the tracker sees what it would see from the local stack.

`--calibrate` replays a grid of the evidence decision's settings and prints the best (the defaults in
edge_client/config.py were chosen with it, on these same passages; docs/edge.md "Naming a track"). `--held-out`
adds a row measured on passages its settings were not chosen on: two folds of walkers, each replayed with the grid
point best on the other.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cloud.bench.passages import CACHE, SIZES, Models, Passage, gallery_embeddings, passages
from cloud.functions.contracts import MAX_CANDIDATES, UNKNOWN_NAME, Candidate, RecognisedFace
from cloud.functions.recognition.gallery import Gallery
from cloud.functions.settings import Settings
from edge_client.config import EventsConfig
from edge_client.evidence import Evidence
from edge_client.tracker import Track, Tracker, reported_name

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODELS = REPO / ".cache" / "models"
Answers = list[tuple[float, list[RecognisedFace], list[bool]]]  # per frame: time, faces, which are the walker's


@dataclass
class Tally:
    right: int = 0
    wrong: int = 0
    unknown: int = 0  # enrolled walkers' passages
    strangers_named: int = 0  # passages of walkers not enrolled that got a name
    strangers: int = 0
    video_named: int = 0  # tracks of the video's own faces that got a name
    video_tracks: int = 0
    wrong_names: list[str] = field(default_factory=list)
    strangers_as: list[str] = field(default_factory=list)  # "<stranger> as <name> (<sizes>)"

    def add(self, other: Tally) -> None:
        for name, value in other.__dict__.items():
            setattr(self, name, getattr(self, name) + value)

    def row(self) -> list[str]:
        enrolled = self.right + self.wrong + self.unknown
        return [f"{self.right}/{enrolled}", str(self.wrong), str(self.unknown),
                f"{self.strangers_named}/{self.strangers}", f"{self.video_named}/{self.video_tracks}"]


@dataclass(frozen=True)
class Run:
    gallery: str  # "all" or "one"
    sizes: str
    enrolled: frozenset[str]
    passage: Passage
    answers: Answers


def answers(passage: Passage, gallery: Gallery, threshold: float) -> Answers:
    """The recognizer's answer for every frame of the passage, as cloud/functions/recognition/respond.py builds it."""
    seen = [face for _, faces in passage.frames for face in faces]
    embeddings = np.array([face.embedding for face in seen]).reshape(-1, 512)
    matches = gallery.match(embeddings, threshold)
    nearest = gallery.candidates(embeddings, MAX_CANDIDATES)
    result: Answers = []
    row = 0
    for at, faces in passage.frames:
        recognised = []
        for face in faces:
            name, distance = matches[row]
            recognised.append(RecognisedFace(
                box=list(face.box), name=name, distance=None if distance is None else round(distance, 4),
                probability=face.quality.probability, quality=face.quality,
                candidates=[Candidate(name=n, distance=round(d, 4)) for n, d in nearest[row]]))
            row += 1
        result.append((at, recognised, [face.walker for face in faces]))
    return result


def replay(run: Run, config: EventsConfig, tally: Tally) -> None:
    """The passage's answers through the tracker (capture times: seconds from the clip's start), counted."""
    tracker = Tracker(config, "bench")
    walker_boxes = _walker_boxes(run)
    events = []
    for at, faces, _ in run.answers:
        events += tracker.observe(at, faces)
        events += tracker.expire(at)
    events += tracker.close()
    walker_names, video_names = set(), []
    for event in events:
        if event.type != "end":
            continue
        if (event.best.at, tuple(event.best.face.box)) in walker_boxes:
            walker_names.add(event.name)
        else:
            video_names.append(event.name)
    _count(run, walker_names, video_names, tally)


@dataclass(frozen=True)
class LinkedTrack:
    walker: bool  # its best (largest) sighting is the walker's face, as replay() attributes an event
    seconds: float  # from its first sighting to its last
    faces: list[RecognisedFace]  # in the order the tracker took them


def link(run: Run, config: EventsConfig) -> list[LinkedTrack]:
    """The run's faces linked into tracks by the tracker once: linking does not depend on the decision's settings,
    so a grid of them is replayed over these (decide) instead of through the whole tracker."""
    tracker = Tracker(config, "bench")
    tracks: dict[str, tuple[Track, list[RecognisedFace]]] = {}
    for at, faces, _ in run.answers:
        for track, sighting in tracker.link(at, faces):
            tracks.setdefault(track.track_id, (track, []))[1].append(sighting.face)
        tracker.expire(at)
    walker_boxes = _walker_boxes(run)
    return [LinkedTrack((t.best.at, tuple(t.best.face.box)) in walker_boxes, t.last_at - t.first_at, faces)
            for t, faces in tracks.values()]


def decide(track: LinkedTrack, config: EventsConfig) -> str | None:
    """The name the track ends with under the evidence decision (as the tracker reports it after each sighting),
    or None when it makes no event (never named, and shorter than unknown_after_s)."""
    if config.decision != "evidence":
        raise ValueError("the linked replay is the evidence decision's; replay() runs any decision")
    evidence, reported = Evidence(), None
    for face in track.faces:
        evidence.add(face, config)
        reported = reported_name(evidence.name(config), reported)
    if reported in (None, UNKNOWN_NAME):
        return UNKNOWN_NAME if track.seconds >= config.unknown_after_s else None
    return reported


def replay_linked(run: Run, tracks: list[LinkedTrack], config: EventsConfig, tally: Tally) -> None:
    """replay() over tracks linked once (link), counted the same."""
    named = [(track.walker, decide(track, config)) for track in tracks]
    _count(run, {n for walker, n in named if walker and n is not None},
           [n for walker, n in named if not walker and n is not None], tally)


def _walker_boxes(run: Run) -> set[tuple[float, tuple[float, ...]]]:
    return {(at, tuple(f.box)) for at, faces, walker in run.answers for f, w in zip(faces, walker, strict=True) if w}


def _count(run: Run, walker_names: set[str], video_names: list[str], tally: Tally) -> None:
    """One run's ended tracks, by name: the walker's and the video's own faces'."""
    tally.video_tracks += len(video_names)
    tally.video_named += sum(name != UNKNOWN_NAME for name in video_names)
    named = walker_names - {UNKNOWN_NAME}
    person = run.passage.person
    if person not in run.enrolled:
        tally.strangers += 1
        tally.strangers_named += bool(named)
        if named:
            tally.strangers_as.append(f"{person} as {','.join(sorted(named))} ({run.sizes})")
    elif named - {person}:
        tally.wrong += 1
        tally.wrong_names.append(f"{person} as {','.join(sorted(named - {person}))} ({run.sizes})")
    elif person in named:
        tally.right += 1
    else:
        tally.unknown += 1


def runs(models: Models, all_passages: Sequence[Passage], threshold: float) -> list[Run]:
    embeddings = gallery_embeddings(models)
    names = sorted(embeddings)
    galleries = [("all", frozenset(names))] + [("one", frozenset([name])) for name in names]
    result = []
    for label, enrolled in galleries:
        gallery = Gallery(models.tag, sorted(enrolled), np.array([embeddings[n] for n in sorted(enrolled)]))
        for passage in all_passages:
            result.append(Run(label, passage.sizes, enrolled, passage, answers(passage, gallery, threshold)))
    return result


def tallies(all_runs: Iterable[Run], config: EventsConfig) -> dict[tuple[str, str], Tally]:
    result: dict[tuple[str, str], Tally] = {}
    for run in all_runs:
        replay(run, config, result.setdefault((run.gallery, run.sizes), Tally()))
    return result


Linked = list[tuple[Run, list[LinkedTrack]]]


def linked_tallies(linked: Linked, config: EventsConfig) -> dict[tuple[str, str], Tally]:
    result: dict[tuple[str, str], Tally] = {}
    for run, tracks in linked:
        replay_linked(run, tracks, config, result.setdefault((run.gallery, run.sizes), Tally()))
    return result


def table(per_decision: dict[str, dict[tuple[str, str], Tally]]) -> tuple[str, dict[str, Any]]:
    header = ["gallery", "faces", "decision", "named right", "wrong", "unknown", "strangers named", "video faces named"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    figures: dict[str, Any] = {}
    for gallery, sizes in itertools.product(("all", "one"), SIZES):
        for decision, result in per_decision.items():
            tally = result[(gallery, sizes)]
            lines.append("| " + " | ".join([gallery, sizes, decision, *tally.row()]) + " |")
            figures[f"{gallery} {sizes} {decision}"] = {**tally.__dict__}
    return "\n".join(lines), figures


# --- calibration -------------------------------------------------------------------------------------

# Around the defaults (earlier, wider grids chose the region: docs/edge.md "Naming a track").
GRID: dict[str, list[float]] = {
    "min_faces": [1],
    "min_face_px": [0.0],
    "min_sharpness": [3.0],
    "full_weight_sharpness": [8.0],
    "full_support_distance": [1.0, 1.02, 1.05, 1.08],
    "no_support_distance": [1.1, 1.12, 1.15, 1.2],
    "support_narrow_px": [28.0],
    "support_wide_px": [48.0, 56.0],
    "narrow_support_rise": [0.025, 0.05, 0.075, 0.1, 0.125],
    "min_support": [0.1, 0.2, 0.3, 0.4, 0.5],
    "min_margin": [0.1],
}


@dataclass(frozen=True)
class Scored:
    nearby_errors: int  # the most errors at this point or a neighbour (one grid step in one setting): a point at the
    # edge of a cliff of errors is passed over for one with room around it
    errors: int  # wrong + strangers named + video faces named
    right: int
    centrality: int  # each setting's distance (in grid steps) from its grid's ends, summed: a middle choice is sturdier
    settings: dict[str, float]
    per: dict[str, tuple[int, int, int, int]]  # per gallery and size: right, wrong, strangers named, video named


def ranked(linked: Linked, base: EventsConfig) -> list[Scored]:
    """Every grid point, best first: fewest errors around it, then at it, then most passages named right, then the
    most central."""
    keys = list(GRID)
    points: dict[tuple[int, ...], tuple[dict[str, float], dict[tuple[str, str], Tally]]] = {}
    for index in itertools.product(*(range(len(GRID[k])) for k in keys)):
        settings = {k: GRID[k][i] for k, i in zip(keys, index, strict=True)}
        if settings["no_support_distance"] <= settings["full_support_distance"]:
            continue
        points[index] = settings, linked_tallies(linked, base.model_copy(update=settings))
    errors = {index: sum(t.wrong + t.strangers_named + t.video_named for t in result.values())
              for index, (_, result) in points.items()}
    scored = []
    for index, (settings, result) in points.items():
        around = [index[:d] + (index[d] + step,) + index[d + 1:] for d in range(len(keys)) for step in (-1, 1)]
        scored.append(Scored(
            nearby_errors=max([errors[index]] + [errors[n] for n in around if n in errors]), errors=errors[index],
            right=sum(t.right for t in result.values()),
            centrality=sum(min(i, len(GRID[k]) - 1 - i) for k, i in zip(keys, index, strict=True)), settings=settings,
            per={f"{g} {s}": (t.right, t.wrong, t.strangers_named, t.video_named) for (g, s), t in result.items()}))
    return sorted(scored, key=lambda p: (p.nearby_errors, p.errors, -p.right, -p.centrality))


def calibrate(linked: Linked, base: EventsConfig, top: int = 15) -> None:
    for point in ranked(linked, base)[:top]:
        print(f"errors nearby {point.nearby_errors} here {point.errors} right {point.right} "
              f"{json.dumps(point.settings)} {point.per}")


def held_out(linked: Linked, base: EventsConfig, folds: int = 2) -> tuple[dict[tuple[str, str], Tally], list[str]]:
    """The evidence decision with settings it was not tuned on: the walkers are dealt into `folds` folds (every
    `folds`-th name); each fold's passages are replayed with the grid point ranked best on the other folds' alone.
    Returns the tallies summed over the folds and each fold's chosen settings."""
    people = sorted({run.passage.person for run, _ in linked})
    fold_of = {person: index % folds for index, person in enumerate(people)}
    result: dict[tuple[str, str], Tally] = {}
    chosen = []
    for fold in range(folds):
        best = ranked([(r, t) for r, t in linked if fold_of[r.passage.person] != fold], base)[0]
        chosen.append(f"fold {fold + 1}: {json.dumps(best.settings)}")
        tested = [(r, t) for r, t in linked if fold_of[r.passage.person] == fold]
        for key, tally in linked_tallies(tested, base.model_copy(update=best.settings)).items():
            result.setdefault(key, Tally()).add(tally)
    return result, chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS)
    parser.add_argument("--calibrate", action="store_true", help="replay the evidence settings' grid, print the best")
    parser.add_argument("--held-out", action="store_true",
                        help="add the evidence decision tuned on half the walkers and measured on the other half")
    parser.add_argument("--json", type=Path, default=CACHE.parent / "track_decision.json")
    args = parser.parse_args(argv)
    models = Models(args.models_dir)
    all_passages = list(passages(models))
    all_runs = runs(models, all_passages, Settings().match_threshold)
    linked = [(run, link(run, EventsConfig())) for run in all_runs]
    evidence = tallies(all_runs, EventsConfig())
    if linked_tallies(linked, EventsConfig()) != evidence:  # the grid's fast replay is the tracker's
        raise RuntimeError("the decision replayed over linked tracks differs from the tracker's: calibration is off")
    if args.calibrate:
        calibrate(linked, EventsConfig())
        return 0
    per_decision = {"votes": tallies(all_runs, EventsConfig(decision="votes")), "evidence": evidence}
    chosen: list[str] = []
    if args.held_out:
        per_decision["evidence, held out"], chosen = held_out(linked, EventsConfig())
    text, figures = table(per_decision)
    print(f"Track decision on {len(all_passages)} passages ({len(SIZES)} sizes), ONNX engine, match threshold "
          f"{Settings().match_threshold}; 'one' sums 21 one-person galleries")
    print(text)
    for line in chosen:
        print(f"held out, settings tuned on the other walkers: {line}")
    for key, tally in figures.items():
        if tally["wrong_names"]:
            print(f"{key}: wrong: {'; '.join(tally['wrong_names'])}")
        if tally["strangers_as"]:
            print(f"{key}: strangers named: {'; '.join(tally['strangers_as'])}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
