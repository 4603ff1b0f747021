"""Capture: the real clip through a file camera, folders, looping, and reconnecting a lost source."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest

from edge_client.camera import Camera, source_kind
from edge_client.config import CameraConfig
from tests.edge.conftest import CLIP
from tests.http_server import QuietHandler, serving
from tests.photos import SHARED, packaged, requires_shared


def _read_all(camera: Camera, limit: int = 10_000) -> list:
    frames = []
    while len(frames) < limit and (frame := camera.read()) is not None:
        frames.append(frame)
    return frames


def test_source_kinds(tmp_path: Path) -> None:
    assert source_kind(0) == source_kind("2") == source_kind("/dev/video1") == "device"
    assert source_kind("rtsp://cam/1") == source_kind("https://cam/mjpeg") == "stream"
    assert source_kind(str(tmp_path)) == "folder"
    assert source_kind(str(tmp_path / "clip.mp4")) == "file"


@requires_shared
def test_real_clip_through_file_camera_ends_with_none() -> None:
    clip = SHARED / CLIP
    capture = cv2.VideoCapture(str(clip))
    expected = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    camera = Camera(CameraConfig(source=str(clip), fps=0), threading.Event())
    frames = _read_all(camera)
    assert abs(len(frames) - expected) <= 1  # container frame counts may be off by one
    assert frames[0].image.shape == (360, 640, 3)
    assert [f.seq for f in frames] == list(range(1, len(frames) + 1))
    # Media time follows the file's own clock whatever the playback speed.
    assert frames[-1].media_time == pytest.approx(len(frames) / fps, rel=1e-6)
    assert camera.read() is None  # still at the end: no restart without loop


@requires_shared
def test_file_loop_starts_again() -> None:
    camera = Camera(CameraConfig(source=str(SHARED / CLIP), fps=0, loop=True), threading.Event())
    frames = _read_all(camera, limit=400)
    assert len(frames) == 400  # more than the clip holds: it looped
    assert frames[-1].media_time > frames[0].media_time


def test_folder_in_name_order_skips_unreadable_images(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").symlink_to(packaged("face_recognition/obama.jpg"))
    (tmp_path / "b.jpg").write_bytes(b"not an image")
    (tmp_path / "c.png").symlink_to(packaged("skimage/astronaut.png"))
    (tmp_path / "notes.txt").write_text("ignored")
    camera = Camera(CameraConfig(source=str(tmp_path), fps=0), threading.Event())
    frames = _read_all(camera)
    shapes = [f.image.shape for f in frames]
    assert shapes == [cv2.imread(str(tmp_path / "a.jpg")).shape, (512, 512, 3)]


def test_folder_is_paced_at_the_configured_rate(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").symlink_to(packaged("face_recognition/obama.jpg"))
    camera = Camera(CameraConfig(source=str(tmp_path), fps=20, loop=True), threading.Event())
    start = time.monotonic()
    frames = _read_all(camera, limit=11)
    elapsed = time.monotonic() - start
    assert len(frames) == 11
    assert elapsed >= 0.45  # 10 intervals of 50 ms at least (the first frame is due at once)


def test_missing_source_retries_with_backoff_until_stopped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stop = threading.Event()
    config = CameraConfig(source=str(tmp_path / "later.mp4"), reconnect={"initial_s": 0.05, "max_s": 0.2})
    camera = Camera(config, stop)
    result: list = []
    reader = threading.Thread(target=lambda: result.append(camera.read()))
    reader.start()
    time.sleep(0.8)
    assert reader.is_alive()  # never gives up on its own
    stop.set()
    reader.join(timeout=2)
    assert not reader.is_alive() and result == [None]
    # 0.05 + 0.1 + 0.2 + 0.2 ... within 0.8 s: a handful of attempts, not a busy loop.
    assert 3 <= camera.reconnects <= 8
    assert "retrying in" in caplog.text


def test_source_appearing_later_is_picked_up(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    camera = Camera(CameraConfig(source=str(folder), fps=0, reconnect={"initial_s": 0.05, "max_s": 0.1}),
                    threading.Event())
    result: list = []
    reader = threading.Thread(target=lambda: result.append(camera.read()))
    reader.start()
    time.sleep(0.3)
    folder.mkdir()
    (folder / "a.jpg").symlink_to(packaged("face_recognition/biden.jpg"))
    reader.join(timeout=5)
    assert result and result[0] is not None and camera.reconnects >= 1


@pytest.fixture
def empty_stream(tmp_path: Path) -> Iterator[tuple[str, list[float]]]:
    """An HTTP "camera" that opens (a valid AVI header from a real photo) but never delivers a frame."""
    image = cv2.imread(str(packaged("face_recognition/obama.jpg")))
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (image.shape[1], image.shape[0]))
    writer.write(image)
    writer.release()
    data = clip.read_bytes()
    header = data[: data.index(b"movi") + 4]  # everything up to the first frame
    opened: list[float] = []

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802
            opened.append(time.monotonic())
            self.send_response(200)
            self.send_header("Content-Type", "video/x-msvideo")
            self.send_header("Content-Length", str(len(header)))
            self.end_headers()
            self.wfile.write(header)

    with serving(Handler) as url:
        yield f"{url}/camera.avi", opened


def test_stream_that_opens_but_delivers_nothing_backs_off(empty_stream: tuple[str, list[float]]) -> None:
    url, opened = empty_stream
    stop = threading.Event()
    camera = Camera(CameraConfig(source=url, reconnect={"initial_s": 0.05, "max_s": 0.4}), stop)
    result: list = []
    reader = threading.Thread(target=lambda: result.append(camera.read()))
    reader.start()
    time.sleep(1.5)
    stop.set()
    reader.join(timeout=5)
    assert not reader.is_alive() and result == [None]
    # Waits 0.05, 0.1, 0.2, 0.4, 0.4 ... between reopenings: about 6 in 1.5 s, not 30 (a fixed 0.05 s).
    gaps = [later - earlier for earlier, later in zip(opened, opened[1:], strict=False)]
    assert 3 <= len(opened) <= 10, opened
    assert max(gaps) >= 0.35
