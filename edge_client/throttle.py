"""Throttle: which captured frames are worth sending.

Three gates, cheapest first: a rate cap (max_fps), motion gating on a small grey frame compared
with the last frame *sent* (a still scene sends one frame; slow drift triggers once it adds up),
and a cap on requests in flight (sent, not yet answered).

One exception to motion gating, the keep-alive: while someone is being tracked, a still frame is sent
every `motion.keepalive_s`, so a person who stands still is seen again before their track's gap runs
out and stays one event. An empty still scene still sends nothing.

The rate cap counts from the last frame that passed it, sent or not: motion is then checked at most
max_fps times a second, so a still scene costs a few checks a second, not one per captured frame,
at the price of noticing motion up to 1/max_fps later.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable

import cv2
import numpy as np

from edge_client.config import MotionConfig, ThrottleConfig


class Decision(enum.Enum):
    SEND = "send"
    RATE = "rate"  # faster than max_fps
    BUSY = "busy"  # max_in_flight requests await their answer
    STILL = "still"  # not enough motion since the last frame sent


class InFlight:
    """Counting limiter for requests between 'accepted by the throttle' and 'answered or given up'."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._count = 0
        self._cond = threading.Condition()

    def try_acquire(self) -> bool:
        with self._cond:
            if self._count >= self.limit:
                return False
            self._count += 1
            return True

    def acquire(self, timeout: float) -> bool:
        with self._cond:
            if not self._cond.wait_for(lambda: self._count < self.limit, timeout):
                return False
            self._count += 1
            return True

    def release(self) -> None:
        with self._cond:
            if self._count <= 0:
                raise RuntimeError("InFlight released more often than acquired")
            self._count -= 1
            self._cond.notify()

    @property
    def count(self) -> int:
        with self._cond:
            return self._count


class MotionDetector:
    """Fraction of changed pixels between a small blurred grey frame and a reference frame."""

    def __init__(self, config: MotionConfig) -> None:
        self._config = config
        self._reference: np.ndarray | None = None

    def small_grey(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        target_w = min(self._config.downscale_width, width)
        target_h = max(1, round(height * target_w / width))
        # Bilinear to twice the size, then an exact 2:1 area average: close to a full INTER_AREA
        # downscale (no aliasing flicker) at a fraction of its cost for non-integer ratios.
        if width > 2 * target_w:
            image = cv2.resize(image, (2 * target_w, 2 * target_h), interpolation=cv2.INTER_LINEAR)
        small = cv2.resize(image, (target_w, target_h), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        return cv2.GaussianBlur(grey, (5, 5), 0)  # sensor noise is not motion

    def changed_ratio(self, grey: np.ndarray) -> float:
        """1.0 when there is no reference yet (or the size changed): the first frame always counts."""
        if self._reference is None or self._reference.shape != grey.shape:
            return 1.0
        diff = cv2.absdiff(grey, self._reference)
        return float(np.count_nonzero(diff >= self._config.threshold)) / diff.size

    def is_motion(self, grey: np.ndarray) -> bool:
        return self.changed_ratio(grey) >= self._config.min_area_ratio

    def set_reference(self, grey: np.ndarray) -> None:
        self._reference = grey


class Throttle:
    """decide(image, now) -> Decision; SEND holds one InFlight slot the caller must release.
    `tracking()` says whether someone is being tracked (the keep-alive's condition)."""

    def __init__(self, config: ThrottleConfig, in_flight: InFlight,
                 tracking: Callable[[], bool] = lambda: False) -> None:
        self._min_interval = 1.0 / config.max_fps
        self._motion = MotionDetector(config.motion) if config.motion.enabled else None
        self._keepalive_s = config.motion.keepalive_s
        self._tracking = tracking
        self._in_flight = in_flight
        self._last_passed: float | None = None  # media time of the last frame past the rate gate
        self._last_sent: float | None = None  # media time of the last frame sent

    def decide(self, image: np.ndarray, now: float) -> Decision:
        # `now` is the frame's media time (seconds); a tiny tolerance keeps max_fps == source fps from skipping frames.
        if self._last_passed is not None and now - self._last_passed < self._min_interval * 0.999:
            return Decision.RATE
        self._last_passed = now
        grey = None
        if self._motion is not None:
            grey = self._motion.small_grey(image)
            if not self._motion.is_motion(grey) and not self._keepalive_due(now):
                return Decision.STILL
        if not self._in_flight.try_acquire():
            return Decision.BUSY
        if self._motion is not None and grey is not None:
            self._motion.set_reference(grey)
        self._last_sent = now
        return Decision.SEND

    def _keepalive_due(self, now: float) -> bool:
        return (self._keepalive_s is not None and self._last_sent is not None
                and now - self._last_sent >= self._keepalive_s * 0.999 and self._tracking())
