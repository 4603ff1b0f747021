"""Delivery: frames from the throttle to the cloud. An upload queue, uploader loops, the disk spool and
its drainer (which probes with backoff while the endpoint is down).

Each frame holds an in-flight slot from the throttle until its answer arrives, it is given up
(rejected, unanswered) or it goes to the spool.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, replace

from edge_client.config import EdgeConfig
from edge_client.correlator import Pending, PendingRequests
from edge_client.metrics import EdgeMetrics
from edge_client.spool import Spool, SpooledFrame
from edge_client.throttle import InFlight
from edge_client.uploader import Outcome, Uploader, UploadResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outgoing:
    request_id: str
    captured_at: float
    jpeg: bytes


class Delivery:
    def __init__(self, config: EdgeConfig, stop: threading.Event, uploader: Uploader, in_flight: InFlight,
                 spool: Spool, pending: PendingRequests, metrics: EdgeMetrics) -> None:
        self._config = config
        self._stop = stop
        self._uploader = uploader
        self._in_flight = in_flight
        self.spool = spool
        self._pending = pending
        self._metrics = metrics
        self.endpoint_down = threading.Event()
        self.uploads: queue.Queue[Outgoing] = queue.Queue(maxsize=config.throttle.max_in_flight)
        self._busy: dict[str, Outgoing] = {}  # uploader thread name -> live frame being uploaded
        self._busy_lock = threading.Lock()

    def submit(self, item: Outgoing) -> None:
        # Never blocks: the queue holds max_in_flight items and each one holds a slot.
        self.uploads.put_nowait(item)

    def oldest_unanswered_capture(self) -> float | None:
        """Capture time of the oldest live frame queued or awaiting its answer (None: there is none)."""
        with self.uploads.mutex:
            queued = min((item.captured_at for item in self.uploads.queue), default=None)
        waiting = self._pending.oldest_live_capture()
        return min((t for t in (queued, waiting) if t is not None), default=None)

    # --- loops ------------------------------------------------------------------------------

    def upload_loop(self) -> None:
        name = threading.current_thread().name
        while True:
            try:
                item = self.uploads.get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if self._stop.is_set() or self.endpoint_down.is_set():
                self.spool_queued(item)
                continue
            with self._busy_lock:
                self._busy[name] = item
            try:
                result = self._send(item.request_id, item.captured_at, item.jpeg, retry=True, from_spool=False)
            finally:
                with self._busy_lock:
                    still_ours = self._busy.pop(name, None) is not None  # else the shutdown spooled it
            if result.outcome is Outcome.UNREACHABLE and still_ours:
                self._to_spool(item)

    def drain_loop(self) -> None:
        """Deliver spooled frames oldest first; while the endpoint is down, probe with backoff."""
        retries = self._config.endpoint.retries
        delay = retries.base_s
        while not self._stop.is_set():
            if self.endpoint_down.is_set():
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, retries.max_s)
                if not len(self.spool):
                    self.endpoint_down.clear()  # nothing to probe with: let the next live frame try
                    continue
            elif not len(self.spool):
                self._stop.wait(0.2)
                continue
            if not self._in_flight.acquire(timeout=0.5):
                continue
            frame, corrupt = self.spool.oldest()
            if corrupt:
                self._metrics.frames_dropped.inc(corrupt)
            if frame is None or self._stop.is_set():
                self._in_flight.release()
                continue
            result = self._send(frame.request_id, frame.captured_at, frame.jpeg, retry=False, from_spool=True)
            if result.outcome is not Outcome.UNREACHABLE:
                self.spool.remove(frame)
                delay = retries.base_s

    # --- one frame ----------------------------------------------------------------------------

    def _send(self, request_id: str, captured_at: float, jpeg: bytes, retry: bool, from_spool: bool) -> UploadResult:
        """Upload one frame that holds an in-flight slot; the slot stays only while an answer is due."""
        # Registered before the POST: the answer can arrive before the HTTP response does.
        self._pending.add(Pending(request_id, captured_at, jpeg, uploading=True, from_spool=from_spool))
        result = self._uploader.upload(jpeg, request_id, captured_at, retry=retry)
        if result.outcome is Outcome.ACCEPTED:
            self._pending.accepted(request_id)
            self._metrics.frames_sent.inc()
            if self.endpoint_down.is_set():
                log.info("endpoint reachable again; draining %d spooled frame(s)", len(self.spool))
                self.endpoint_down.clear()
            return result
        if self._pending.pop(request_id) is not None:
            self._in_flight.release()
        elif result.outcome is Outcome.UNREACHABLE:
            # Its answer came although no HTTP response did (e.g. a read timeout during a slow cold start):
            # the cloud has the frame, and spooling it would send it again and report it twice.
            log.info("frame %s answered without an HTTP response (%s); not sent again", request_id, result.error)
            self._metrics.frames_sent.inc()
            return replace(result, outcome=Outcome.ACCEPTED)
        if result.outcome is Outcome.REJECTED:
            self._metrics.rejections.labels(status=str(result.status)).inc()
            log.warning("frame %s rejected by the endpoint (HTTP %s): %s", request_id, result.status, result.error)
        elif not self.endpoint_down.is_set() and not self._stop.is_set():
            log.warning("endpoint unreachable after %d attempt(s) (%s); spooling frames", result.attempts,
                        result.error)
            self.endpoint_down.set()
        return result

    def spool_queued(self, item: Outgoing) -> None:
        """A frame that was queued, not sent: to the spool, and its in-flight slot is free again."""
        self._to_spool(item)
        self._in_flight.release()

    def _to_spool(self, item: Outgoing) -> None:
        try:
            dropped = self.spool.put(SpooledFrame(item.request_id, item.captured_at, item.jpeg))
        except OSError as exc:  # disk full or read-only: lose this frame, keep the camera running
            log.error("spool: cannot write frame %s: %s", item.request_id, exc)
            self._metrics.frames_dropped.inc()
            return
        self._metrics.frames_spooled.inc()
        if dropped:
            self._metrics.frames_dropped.inc(dropped)

    # --- at stop ------------------------------------------------------------------------------

    def spool_unfinished(self) -> None:
        """At the stop deadline: frames still uploading get a spooled copy (a duplicate is harmless; taking
        the entry tells the uploader not to spool it too), and frames still queued go to the spool."""
        with self._busy_lock:
            unfinished = list(self._busy.values())
            self._busy.clear()
        for frame in unfinished:
            self._to_spool(frame)
        while True:  # queued behind uploads that outlived the deadline (max_in_flight > upload threads)
            try:
                self.spool_queued(self.uploads.get_nowait())
            except queue.Empty:
                break

    def wait_for_answers(self, deadline: float) -> None:
        while len(self._pending) and time.monotonic() < deadline:
            time.sleep(0.05)
