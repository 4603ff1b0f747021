"""Throttle: motion gating on real footage vs a still scene, the rate cap, the in-flight cap."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_client.camera import Camera
from edge_client.config import CameraConfig, ThrottleConfig
from edge_client.encode import encode_jpeg
from edge_client.throttle import Decision, InFlight, Throttle
from tests.edge.conftest import CLIP
from tests.photos import SHARED, packaged, requires_shared


def _decisions(source: Path, throttle: ThrottleConfig, limit: int = 10_000,
               tracking: Callable[[], bool] = lambda: False) -> Counter[Decision]:
    camera = Camera(CameraConfig(source=str(source), fps=0), threading.Event())
    gate = Throttle(throttle, InFlight(10**6), tracking)  # never busy: this measures the gates, not the cloud
    counts: Counter[Decision] = Counter()
    while sum(counts.values()) < limit and (frame := camera.read()) is not None:
        counts[gate.decide(frame.image, frame.media_time)] += 1
    return counts


@pytest.fixture(scope="module")
def still_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A still scene: one real photo written 90 times into a video (codec noise included)."""
    image = cv2.imread(str(packaged("matplotlib/grace_hopper.jpg")))
    path = tmp_path_factory.mktemp("still") / "still.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (image.shape[1], image.shape[0]))
    for _ in range(90):
        writer.write(image)
    writer.release()
    return path


@requires_shared
def test_motion_gating_sends_far_fewer_frames_for_a_still_scene(still_video: Path) -> None:
    config = ThrottleConfig(max_fps=30)
    clip = _decisions(SHARED / CLIP, config)
    still = _decisions(still_video, config)
    assert still[Decision.SEND] == 1 and still[Decision.STILL] == sum(still.values()) - 1
    assert clip[Decision.SEND] >= 20 * still[Decision.SEND]
    # Without motion gating the still scene is sent like anything else.
    ungated = _decisions(still_video, ThrottleConfig(max_fps=30, motion={"enabled": False}))
    assert ungated[Decision.SEND] == sum(ungated.values())


def test_keepalive_sends_a_still_scene_only_while_someone_is_tracked(still_video: Path) -> None:
    """3 s of a still scene at 30 fps: one frame, unless someone is tracked; then one per keepalive_s."""
    config = ThrottleConfig(max_fps=30, motion={"keepalive_s": 0.5})
    tracked = _decisions(still_video, config, tracking=lambda: True)
    assert tracked[Decision.SEND] == 6  # at 0 (motion: the first frame), 0.5, 1.0, 1.5, 2.0 and 2.5 s
    assert tracked[Decision.STILL] == 90 - 6
    assert _decisions(still_video, config)[Decision.SEND] == 1  # an empty still scene sends nothing more
    off = ThrottleConfig(max_fps=30, motion={"keepalive_s": None})
    assert _decisions(still_video, off, tracking=lambda: True)[Decision.SEND] == 1


def test_motion_threshold_and_area() -> None:
    image = cv2.imread(str(packaged("face_recognition/obama.jpg")))
    gate = Throttle(ThrottleConfig(max_fps=60, motion={"min_area_ratio": 0.05}), InFlight(100))
    assert gate.decide(image, 0.0) is Decision.SEND
    noisy = cv2.add(image, np.full_like(image, 5))  # brightness flicker well under the threshold
    assert gate.decide(noisy, 1.0) is Decision.STILL
    moved = image.copy()
    h, w = moved.shape[:2]
    moved[: h // 2, : w // 2] = 255 - moved[: h // 2, : w // 2]  # a quarter of the scene changes
    assert gate.decide(moved, 2.0) is Decision.SEND
    assert gate.decide(moved, 3.0) is Decision.STILL  # compared with the last frame sent


@requires_shared
def test_rate_cap_follows_media_time() -> None:
    counts = _decisions(SHARED / CLIP, ThrottleConfig(max_fps=2, motion={"enabled": False}))
    duration = sum(counts.values()) / 29.97
    assert counts[Decision.SEND] == pytest.approx(duration * 2, abs=1.5)
    assert counts[Decision.RATE] == sum(counts.values()) - counts[Decision.SEND]


def test_in_flight_cap_gates_until_released() -> None:
    image = cv2.imread(str(packaged("face_recognition/biden.jpg")))
    slots = InFlight(2)
    gate = Throttle(ThrottleConfig(max_fps=60, motion={"enabled": False}), slots)
    assert [gate.decide(image, t) for t in (0.0, 0.1, 0.2)] == [Decision.SEND, Decision.SEND, Decision.BUSY]
    slots.release()
    assert gate.decide(image, 0.3) is Decision.SEND
    assert slots.count == 2
    with pytest.raises(RuntimeError):
        InFlight(1).release()


def test_in_flight_acquire_waits_for_a_release() -> None:
    slots = InFlight(1)
    assert slots.try_acquire() and not slots.acquire(timeout=0.05)
    threading.Timer(0.1, slots.release).start()
    assert slots.acquire(timeout=2)


def test_encode_scales_down_only_and_keeps_aspect() -> None:
    image = cv2.imread(str(packaged("insightface/t1.jpg")))
    small = cv2.imdecode(np.frombuffer(encode_jpeg(image, 320, 80), np.uint8), cv2.IMREAD_COLOR)
    assert max(small.shape[:2]) == 320
    assert small.shape[1] / small.shape[0] == pytest.approx(image.shape[1] / image.shape[0], rel=0.01)
    same = cv2.imdecode(np.frombuffer(encode_jpeg(image, 8192, 80), np.uint8), cv2.IMREAD_COLOR)
    assert same.shape == image.shape
    assert len(encode_jpeg(image, 8192, 30)) < len(encode_jpeg(image, 8192, 95))
