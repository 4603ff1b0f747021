"""Events end to end: clips built from real photos (tests/edge/clips.py) played by the daemon against the
real local stack (moto over HTTP, real detection and recognition). A passage is one event, not a line per
frame; its best picture is written once; a small blurred face is named by its track."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import cv2
import pytest

from edge_client.daemon import Daemon
from edge_client.metrics import total
from tests.edge.clips import Walker, head, passage_clip, small_face_clip, still_background, write_clip
from tests.edge.conftest import CLIP, make_config
from tests.photos import SHARED, requires_shared

pytestmark = requires_shared
OBAMA, BIDEN = SHARED / "identities/barack_obama/2.jpg", SHARED / "identities/joe_biden/2.jpg"  # not enrolled photos
BACKGROUND = SHARED / "noface/skimage_coffee.jpg"


def _run(local_stack: Any, reply_queue: str, tmp_path: Path, video: Path,
         motion: dict[str, Any] | None = None) -> tuple[Daemon, list[dict[str, Any]]]:
    config = make_config(
        tmp_path,
        camera={"source": str(video), "fps": None},
        throttle={"max_fps": 2, "motion": motion or {"enabled": False}},
        endpoint={"url": local_stack.function_url, "auth": "aws_iam", "region": local_stack.region},
        responses={"queue_url": reply_queue, "endpoint_url": local_stack.endpoint_url,
                   "reply_to": reply_queue.rsplit("/", 1)[-1], "wait_s": 1, "answer_timeout_s": 60},
        outputs={"jsonl": {"path": str(tmp_path / "events.jsonl"), "on": "events"},
                 "log": {"on": "frames"}, "snapshots": {"directory": str(tmp_path / "snapshots")}},
    )
    # These tests time the edge (a keep-alive a second, frames per passage): every worker the session's stack may
    # have is started first, so no answer waits behind a new worker's cold start (3-4 s). Two frames in flight
    # can otherwise find the one warm recognition worker busy and start a second.
    local_stack.start_every_worker()
    daemon = Daemon(config)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive()
    lines = (tmp_path / "events.jsonl").read_text().splitlines() if (tmp_path / "events.jsonl").exists() else []
    return daemon, [json.loads(line) for line in lines]


def test_one_person_is_one_event_with_one_best_picture(
    local_stack: Any, reply_queue: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    video = tmp_path / "one.avi"
    passage_clip([(OBAMA, 0.5, 5.5)], BACKGROUND, video)
    with caplog.at_level(logging.INFO, logger="edge_client.outputs"):
        daemon, events = _run(local_stack, reply_queue, tmp_path, video)
    frame_lines = [r.getMessage() for r in caplog.records if "barack_obama 0." in r.getMessage()]
    assert len(frame_lines) >= 8  # what a per-frame output says about this passage
    assert [(e["type"], e["name"]) for e in events] == [("start", "barack_obama"), ("end", "barack_obama")]
    end = events[-1]
    assert end["event_id"] == events[0]["event_id"] and end["frames"] == len(frame_lines)
    assert end["end"] - end["start"] >= 4.0 and 0 < end["best_distance"] < 1.02
    pictures = list((tmp_path / "snapshots").iterdir())
    assert [str(p) for p in pictures] == [end["best_snapshot"]]  # written once, at the end
    picture = cv2.imread(end["best_snapshot"])
    assert picture is not None and picture.shape[:2] == (480, 640)
    assert daemon.summary()["events"] == 2


@pytest.mark.parametrize("keepalive_s", [1.0, None], ids=["keep-alive", "no keep-alive"])
def test_someone_standing_still_is_one_event_with_the_keepalive(
    local_stack: Any, reply_queue: str, tmp_path: Path, keepalive_s: float | None
) -> None:
    """Motion gating on (the default): a person appears at 0.5 s, stands still, leaves at 7.5 s. The keep-alive
    sends a still frame every second while they are tracked, so their track outlives events.max_gap_s (3 s);
    without it nothing is sent between the arrival and the leaving: the track ends 3 s after its one sighting,
    while they stand there (and had they moved again in view, they would have been a second event)."""
    video = tmp_path / "standing.avi"
    write_clip(still_background(BACKGROUND, 640, 480, 45), [Walker(head(OBAMA, 110), 0.5, 7.5, 320, 320, 240)],
               video, fps=5.0)
    daemon, events = _run(local_stack, reply_queue, tmp_path, video, {"keepalive_s": keepalive_s})
    named = [e for e in events if e["name"] == "barack_obama"]
    ends = [e for e in named if e["type"] == "end"]
    assert [e["type"] for e in named] == ["start", "end"] and len(ends) == 1
    if keepalive_s is None:  # the limit the keep-alive removes: seen once, on arrival
        assert ends[0]["frames"] == 1 and ends[0]["end"] - ends[0]["start"] < 0.5
        return
    # Seen about once a second while standing still, from the first frame sent (0.6 s) to within 1 s of leaving.
    assert ends[0]["frames"] >= 6 and ends[0]["end"] - ends[0]["start"] >= 5.5
    summary = daemon.summary()
    assert summary["gated_still"] > 0 and summary["sent"] <= 12  # still frames were gated between keep-alives


def test_two_people_are_two_events(local_stack: Any, reply_queue: str, tmp_path: Path) -> None:
    video = tmp_path / "two.avi"
    passage_clip([(OBAMA, 0.3, 3.5), (BIDEN, 2.5, 5.8)], BACKGROUND, video)
    _, events = _run(local_stack, reply_queue, tmp_path, video)
    ends = [e for e in events if e["type"] == "end"]
    assert sorted(e["name"] for e in ends) == ["barack_obama", "joe_biden"]
    assert len({e["event_id"] for e in events}) == 2
    assert len(list((tmp_path / "snapshots").iterdir())) == 2


def test_small_blurred_face_named_by_the_event(local_stack: Any, reply_queue: str, tmp_path: Path) -> None:
    video = tmp_path / "small.avi"
    small_face_clip(OBAMA, SHARED / CLIP, video)
    daemon, events = _run(local_stack, reply_queue, tmp_path, video)
    named = total(daemon.metrics.faces, name="barack_obama")
    answered = daemon.summary()["answered"]
    print(f"\nsmall face: named in {named} of {answered} frames; events {[(e['type'], e['name']) for e in events]}")
    assert 1 <= named < answered  # single frames: mostly unknown
    assert total(daemon.metrics.faces, name="joe_biden") == 0
    ends = [e for e in events if e["type"] == "end"]
    assert "barack_obama" in {e["name"] for e in ends}  # the passage is named
    assert {e["name"] for e in events} <= {"barack_obama", "unknown"}  # never a wrong name
