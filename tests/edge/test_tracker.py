"""The tracker on answer sequences recorded from the real local stack (tests/edge/data/answers_*.jsonl:
the daemon's per-frame JSONL for the clips of tests/edge/clips.py, played at 2 frames/s):

- one: barack_obama (a real photo's head, 110 px face) walks across a real no-face photo for 5 s;
- two: barack_obama, then joe_biden (overlapping for a second), in their own lanes;
- small, small_biden: a 30 -> 48 px face, motion-blurred and out of focus, walks across the shared real
  video (whose own audience faces are strangers to the gallery);
- demo: `make demo`'s clip (cloud/emulator/demo_clip.py, packaged photos): obama2.jpg panned across, then a
  group photo of six strangers, then obama3.jpg, each cut in where the one before left (3 frames/s, motion on).

These answers predate the evidence per face (answer schema 1: no candidates, no quality record), as a stack older
than schema 2 sends them: under the default "evidence" decision such tracks are named by votes, which these tests
check; tests/edge/test_track_decision.py tests the evidence itself.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from cloud.functions.contracts import UNKNOWN_NAME, RecognisedFace
from edge_client.config import EventsConfig
from edge_client.tracker import Event, Tracker

DATA = Path(__file__).parent / "data"
CONFIG = EventsConfig()


def recorded(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / f"answers_{name}.jsonl").read_text().splitlines()]


def faces(answer: dict[str, Any]) -> list[RecognisedFace]:
    return [RecognisedFace.model_validate(face) for face in answer["faces"]]


def replay(answers: Iterable[dict[str, Any]], config: EventsConfig = CONFIG, device: str = "test-edge") -> list[Event]:
    """Feed answers in the given order, ending tracks as the daemon does (horizon = the newest capture)."""
    tracker = Tracker(config, device)
    events: list[Event] = []
    newest = 0.0
    for answer in answers:
        events += tracker.observe(answer["frame_timestamp"], faces(answer), b"jpeg")
        newest = max(newest, answer["frame_timestamp"])
        events += tracker.expire(newest)
    return events + tracker.close()


def by_id(events: list[Event]) -> dict[str, list[Event]]:
    grouped: dict[str, list[Event]] = {}
    for event in events:
        grouped.setdefault(event.event_id, []).append(event)
    return grouped


def in_lane(face: dict[str, Any]) -> bool:
    """The pasted walker of the small-face clips (its lane is y 215-290; the video's faces are elsewhere)."""
    return 200 <= face["box"][1] <= 240 and face["box"][3] <= 300


def test_one_person_passage_is_one_event_with_the_best_picture() -> None:
    answers = recorded("one")
    per_frame = sum(len(a["faces"]) for a in answers)
    events = replay(answers)
    assert per_frame >= 8  # before: one line per answered frame with a face
    assert [(e.type, e.name) for e in events] == [("start", "barack_obama"), ("end", "barack_obama")]
    end = events[-1]
    assert end.frames == per_frame and end.end is not None and end.end - end.start >= 4.0
    largest = max((f for a in answers for f in a["faces"]), key=lambda f: (f["box"][2] - f["box"][0]) * (
        f["box"][3] - f["box"][1]))
    assert list(end.best.face.box) == largest["box"]
    assert end.best_distance == min(f["distance"] for a in answers for f in a["faces"])


def test_two_people_are_two_events() -> None:
    events = replay(recorded("two"))
    grouped = by_id(events)
    assert sorted(group[0].name for group in grouped.values()) == ["barack_obama", "joe_biden"]
    for group in grouped.values():
        assert [e.type for e in group] == ["start", "end"] and group[0].name == group[1].name


@pytest.mark.parametrize(("clip", "person", "other"), [("small", "barack_obama", "joe_biden"),
                                                       ("small_biden", "joe_biden", "barack_obama")])
def test_small_blurred_face_named_by_the_track_where_frames_say_unknown(clip: str, person: str, other: str) -> None:
    answers = recorded(clip)
    walker = [f for a in answers for f in a["faces"] if in_lane(f)]
    named = [f for f in walker if f["name"] == person]
    assert len(walker) == len(answers)  # found in every frame...
    assert 1 <= len(named) <= len(walker) // 2  # ...but named in a minority of them
    assert not [f for a in answers for f in a["faces"] if f["name"] == other]  # the backend never misnames
    events = replay(answers)
    walker_events = [e for e in events if 200 <= e.best.face.box[1] <= 240]
    assert {e.event_id for e in walker_events} == {walker_events[0].event_id}  # one track for the passage
    assert walker_events[-1].type == "end" and walker_events[-1].name == person
    assert walker_events[-1].frames == len(walker)
    assert not [e for e in events if e.name == other]  # never a wrong name
    # the others (the video's audience) stay unknown
    assert {e.name for e in events if e not in walker_events} <= {UNKNOWN_NAME}


def test_unknown_upgraded_to_a_name_while_the_track_lasts() -> None:
    events = [e for e in replay(recorded("small")) if 200 <= e.best.face.box[1] <= 240]
    assert [(e.type, e.name) for e in events] == [("start", UNKNOWN_NAME), ("update", "barack_obama"),
                                                  ("end", "barack_obama")]


def test_answers_out_of_order_give_the_same_events() -> None:
    answers = recorded("two")
    shuffled = list(answers)
    for index in range(0, len(shuffled) - 1, 2):  # up to 4 frames are in flight: neighbours swap places
        shuffled[index], shuffled[index + 1] = shuffled[index + 1], shuffled[index]
    in_order = [(e.type, e.name, e.frames) for e in replay(answers) if e.type == "end"]
    swapped = [(e.type, e.name, e.frames) for e in replay(shuffled) if e.type == "end"]
    assert sorted(swapped) == sorted(in_order)


def test_a_single_wrong_frame_is_outvoted() -> None:
    answers = recorded("one")
    middle = next(a for a in answers[4:] if a["faces"])
    middle["faces"][0]["name"] = "joe_biden"
    events = replay(answers)
    assert {e.event_id for e in events} == {events[0].event_id}
    assert events[0].name == "barack_obama" and events[-1].name == "barack_obama"


def test_name_needs_a_mean_distance_under_the_threshold() -> None:
    strict = EventsConfig(max_distance=0.7)  # every frame of the clip says barack_obama at 0.75-0.78
    events = replay(recorded("one"), strict)
    assert [(e.type, e.name) for e in events] == [("start", UNKNOWN_NAME), ("end", UNKNOWN_NAME)]


def test_a_passage_then_a_return_after_the_gap_is_two_events() -> None:
    answers = recorded("one")
    later = [{**a, "frame_timestamp": a["frame_timestamp"] + 60} for a in answers]
    events = replay(answers + later)
    assert len(by_id(events)) == 2 and {e.name for e in events} == {"barack_obama"}


def test_track_ends_only_once_every_earlier_frame_is_answered() -> None:
    answers = [a for a in recorded("one") if a["faces"]]
    tracker = Tracker(CONFIG, "test-edge")
    for answer in answers:
        tracker.observe(answer["frame_timestamp"], faces(answer))
    last = answers[-1]["frame_timestamp"]
    assert tracker.expire(last + CONFIG.max_gap_s - 0.1) == []  # a frame within the gap may still be answered
    assert [e.type for e in tracker.expire(last + CONFIG.max_gap_s + 0.1)] == ["end"]
    assert tracker.open_tracks == []


def test_stray_unknown_detection_makes_no_event() -> None:
    answers = recorded("small")
    stray = next(f for f in answers[0]["faces"] if not in_lane(f) and f["box"][1] > 150)  # seen in one frame only
    tracker = Tracker(CONFIG, "test-edge")
    assert tracker.observe(answers[0]["frame_timestamp"], [RecognisedFace.model_validate(stray)]) == []
    assert tracker.close() == []


def test_unknown_reported_once_it_lasted_unknown_after_s() -> None:
    face = RecognisedFace(box=[100, 100, 140, 150], name=UNKNOWN_NAME, distance=1.3, probability=0.99)
    tracker = Tracker(EventsConfig(unknown_after_s=2.0), "test-edge")
    times = [1000.0 + 0.5 * i for i in range(6)]
    events = [e for t in times for e in tracker.observe(t, [face])]
    assert [(e.type, e.start) for e in events] == [("start", 1000.0)]  # at 1002.0, not before
    assert tracker.observe(1003.0, [face]) == []


def test_random_order_never_changes_the_name() -> None:
    answers = recorded("small_biden")
    rng = random.Random(7)
    for _ in range(5):
        shuffled = sorted(answers, key=lambda a: a["frame_timestamp"] + rng.uniform(0, 1.5))
        names = {e.name for e in replay(shuffled) if e.type == "end"}
        assert "barack_obama" not in names and "joe_biden" in names


def test_a_face_cut_in_where_others_were_heading_away_is_not_their_track() -> None:
    """The demo clip: the strangers leave to the right as Obama's next photo comes in at the left, within the
    gap and about a face width from where one of them was: he is not taken for one of them."""
    answers = recorded("demo")
    t0 = min(a["frame_timestamp"] for a in answers)
    events = replay(answers)
    spans = {e.event_id: (e.name, round(e.start - t0, 1), round((e.end or e.start) - t0, 1))
             for e in events if e.type == "end"}
    assert sorted(spans.values()) == [("barack_obama", 0.0, 2.8), ("barack_obama", 6.0, 8.8)] + [
        ("unknown", 3.2, 5.6)] * 5
    assert not [e for e in events if e.type == "update"]  # no stranger was renamed after him
