"""Capture: frames from a USB camera, an RTSP/HTTP stream, a video file or a folder of images.

A lost source is reopened with exponential backoff, logged, forever (until the stop event): a
camera unplugged for an hour must not end the daemon. Files and folders are played at a paced
rate (like a live camera) and either loop or report end-of-file with `None`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from edge_client.config import CameraConfig
from edge_client.redact import redact_url, scrub

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
_FOLDER_DEFAULT_FPS = 1.0


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # BGR, HxWx3
    captured_at: float  # epoch seconds (X-Frame-Timestamp; latency is measured from here)
    seq: int
    # Seconds on the source's own clock: position in the file for files/folders (so throttling a file
    # gives the same result at any playback speed), the monotonic clock for live sources.
    media_time: float


class _Reader(Protocol):
    """One opened source. read() -> image, or None at end of file / on failure (see `finite`)."""

    finite: bool  # True for files and folders: a failed read means end-of-file

    def read(self) -> np.ndarray | None: ...

    def native_fps(self) -> float | None: ...

    def close(self) -> None: ...


def source_kind(source: int | str) -> str:
    """'device', 'stream', 'folder' or 'file' (what kind of reader a source needs)."""
    if isinstance(source, int) or source.isdigit() or source.startswith("/dev/video"):
        return "device"
    if source.split("://", 1)[0].lower() in ("rtsp", "rtsps", "http", "https", "rtmp"):
        return "stream"
    return "folder" if Path(source).is_dir() else "file"


class _VideoReader:
    """cv2.VideoCapture over a device, stream or file."""

    def __init__(self, config: CameraConfig, kind: str) -> None:
        source: Any = config.source
        if kind == "device" and (isinstance(source, int) or source.isdigit()):
            source = int(source)
        if kind == "file" and not Path(str(source)).is_file():
            raise OSError(f"no such video file: {redact_url(source)}")
        self.finite = kind == "file"
        self._cap = cv2.VideoCapture(source)
        if not self._cap.isOpened():
            self._cap.release()
            raise OSError(f"cannot open camera source {redact_url(config.source)!r}")
        if kind == "device":
            # Requests only: the driver picks the nearest mode it supports.
            if config.width:
                self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, config.width)
            if config.height:
                self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, config.height)
            if config.fps:
                self._cap.set(cv2.CAP_PROP_FPS, config.fps)

    def read(self) -> np.ndarray | None:
        ok, image = self._cap.read()
        return image if ok and image is not None else None

    def native_fps(self) -> float | None:
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        return fps if 0 < fps < 1000 else None

    def close(self) -> None:
        self._cap.release()


class _FolderReader:
    """Images of a folder in name order; unreadable files are skipped with a log line."""

    finite = True

    def __init__(self, folder: Path) -> None:
        self._paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._paths:
            raise OSError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder {folder}")
        self._next = 0

    def read(self) -> np.ndarray | None:
        while self._next < len(self._paths):
            path = self._paths[self._next]
            self._next += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                return image
            log.warning("camera: skipping unreadable image %s", path)
        return None

    def native_fps(self) -> float | None:
        return _FOLDER_DEFAULT_FPS

    def close(self) -> None:
        self._paths = []


def open_reader(config: CameraConfig) -> _Reader:
    """Open the configured source once; OSError when it cannot be opened."""
    kind = source_kind(config.source)
    if kind == "folder":
        return _FolderReader(Path(str(config.source)))
    return _VideoReader(config, kind)


class Camera:
    """Paced frames from the configured source, reopening it with backoff when it fails."""

    def __init__(self, config: CameraConfig, stop: threading.Event) -> None:
        self._config = config
        self._stop = stop
        self._reader: _Reader | None = None
        self._seq = 0
        self._interval = 0.0
        self._next_due = 0.0
        self._media_step = 0.0
        self._media_time = 0.0
        self.reconnects = 0
        self._delivered = 0
        self._lost_wait = config.reconnect.initial_s  # grows while reopened sources deliver nothing
        self.last_activity = time.monotonic()  # a frame or an open attempt; the watchdog checks it
        self.ended = False  # a non-looping file/folder reached its end: read() returns None from now on

    def _open(self) -> _Reader | None:
        """Open the source, retrying with exponential backoff; None only when stopping."""
        delay = self._config.reconnect.initial_s
        while not self._stop.is_set():
            self.last_activity = time.monotonic()
            try:
                reader = open_reader(self._config)
            except OSError as exc:
                log.warning("camera: %s; retrying in %.1fs", scrub(str(exc), self._config.source), delay)
            else:
                self._set_pace(reader)
                return reader
            if self._stop.wait(delay):
                break
            self.reconnects += 1
            delay = min(delay * 2, self._config.reconnect.max_s)
        return None

    def _set_pace(self, reader: _Reader) -> None:
        # Live sources pace themselves; files and folders are played at fps (0 = unpaced).
        nominal = self._config.fps or reader.native_fps() or 30.0
        self._media_step = 1.0 / nominal if reader.finite else 0.0
        self._interval = self._media_step if self._config.fps != 0 else 0.0
        self._next_due = time.monotonic()

    def read(self) -> Frame | None:
        """The next frame; None at end of a non-looping file/folder or when stopping."""
        while not self._stop.is_set() and not self.ended:
            if self._reader is None:
                self._reader = self._open()
                if self._reader is None:
                    return None
                self._delivered = 0
            image = self._reader.read()
            if image is not None:
                self._delivered += 1
                return self._paced(image)
            finite = self._reader.finite
            self._reader.close()
            self._reader = None
            if finite:
                if not self._config.loop:
                    log.info("camera: end of %s", redact_url(self._config.source))
                    self.ended = True
                    return None
                if not self._delivered:  # nothing readable at all: do not spin reopening it
                    log.warning("camera: %r gave no frame; retrying in %.1fs", redact_url(self._config.source),
                                self._config.reconnect.max_s)
                    self._stop.wait(self._config.reconnect.max_s)
                continue  # loop: reopen from the start
            # A source that opens but delivers nothing (device busy, empty stream) backs off like one that
            # does not open at all; one that delivered frames before is reopened quickly.
            if self._delivered:
                self._lost_wait = self._config.reconnect.initial_s
            wait, self._lost_wait = self._lost_wait, min(self._lost_wait * 2, self._config.reconnect.max_s)
            log.warning("camera: lost %r; reconnecting in %.1fs", redact_url(self._config.source), wait)
            if self._stop.wait(wait):
                return None
        return None

    def _paced(self, image: np.ndarray) -> Frame | None:
        if self._interval:
            self._next_due += self._interval
            delay = self._next_due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return None
            if delay < -1.0:  # fell far behind (slow machine): do not burst to catch up
                self._next_due = time.monotonic()
        self._seq += 1
        self.last_activity = time.monotonic()
        if self._media_step:
            self._media_time += self._media_step
        else:
            self._media_time = time.monotonic()
        return Frame(image=image, captured_at=time.time(), seq=self._seq, media_time=self._media_time)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
