"""The daemon: runs capture -> throttle -> encode -> delivery (upload/spool) -> correlate -> answers.

Threads: one capture (camera, throttle, encode), a few uploaders, one spool drainer, one correlator
(long-polls the response queue), and this one supervising (systemd watchdog and STATUS, ending
tracks). Memory is bounded by the in-flight limiter: the throttle takes a slot per frame it passes
and the slot comes back when the answer arrives, the frame is given up (rejected, unanswered) or it
goes to the disk spool. A slow cloud therefore gates frames at capture instead of queueing them.

The parts are built in `wiring`, the stop sequence is `shutdown`'s. One stop event ends everything
(SIGTERM). A non-looping file camera ends the same way once every frame has been answered (or
timed out) and the spool is empty.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from edge_client.config import EdgeConfig
from edge_client.delivery import Outgoing
from edge_client.encode import EncodeError, encode_jpeg
from edge_client.metrics import EdgeMetrics
from edge_client.notify import SystemdNotifier
from edge_client.redact import redact_url
from edge_client.server import MetricsServer, StatusSource
from edge_client.shutdown import shut_down
from edge_client.status import public_config
from edge_client.throttle import Decision
from edge_client.uploader import Signer
from edge_client.wiring import wire

log = logging.getLogger(__name__)

EX_SOFTWARE = 70  # sysexits.h: internal error (systemd's Restart=on-failure restarts)
MAX_UPLOAD_THREADS = 4
STATUS_EVERY_S = 10.0


class Daemon:
    def __init__(
        self,
        config: EdgeConfig,
        *,
        metrics: EdgeMetrics | None = None,
        notifier: SystemdNotifier | None = None,
        signer: Signer | None = None,
        sqs: Any = None,
    ) -> None:
        self.config = config
        self.parts = wire(config, metrics=metrics, notifier=notifier, signer=signer, sqs=sqs)
        self.stop = self.parts.stop
        self.metrics = self.parts.metrics
        self.spool = self.parts.spool
        self.in_flight = self.parts.in_flight
        self.endpoint_down = self.parts.delivery.endpoint_down
        self.capture_done = threading.Event()
        self.failed = ""  # name of a stage thread that raised
        self._threads: dict[str, threading.Thread] = {}
        # A capture thread stuck this long (e.g. a stream read that never returns) is not healthy: the
        # systemd watchdog then stops being fed and systemd restarts the service.
        self._stall_limit_s = max(60.0, 2 * config.camera.reconnect.max_s)
        if len(self.spool):
            log.info("spool: %d frame(s) from an earlier run will be delivered first", len(self.spool))

    # --- lifecycle --------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Signal-safe: only sets the event."""
        self.stop.set()

    def run(self) -> int:
        """Run until stopped (or a non-looping file camera is done and delivered); returns 0, or
        EX_SOFTWARE when a stage thread failed."""
        server = None
        metrics = self.config.metrics
        if metrics.listen:
            try:
                server = MetricsServer(self.metrics, metrics.listen, self.health, self.status_source(),
                                       tuple(metrics.allowed_hosts), metrics.status_token())
            except (OSError, ValueError) as exc:  # the camera pipeline matters more than its metrics
                log.error("metrics: not serving on %s: %s", metrics.listen, exc)
        delivery = self.parts.delivery
        self._start("capture", self._capture_loop)
        for index in range(min(self.config.throttle.max_in_flight, MAX_UPLOAD_THREADS)):
            self._start(f"upload-{index}", delivery.upload_loop)
        self._start("spool-drain", delivery.drain_loop)
        self._start("correlator", self.parts.correlator.run)
        notifier = self.parts.notifier
        notifier.ready()
        notifier.status("running")
        log.info("%s: running (camera %r -> %s)", self.config.device_id, redact_url(self.config.camera.source),
                 redact_url(self.config.endpoint.url))
        try:
            self._supervise()
        finally:
            shut_down(self.parts, self._threads)
            if server is not None:
                server.shutdown()
        return EX_SOFTWARE if self.failed else 0

    def _start(self, name: str, target: Any) -> None:
        def guarded() -> None:
            try:
                target()
            except Exception:  # a bug in a stage: stop everything and exit non-zero so systemd restarts us
                log.exception("%s thread failed; stopping", name)
                self.failed = name
                self.stop.set()

        thread = threading.Thread(target=guarded, name=name, daemon=True)
        self._threads[name] = thread
        thread.start()

    def _supervise(self) -> None:
        notifier = self.parts.notifier
        watchdog = notifier.watchdog_interval_s
        tick = min(0.5, watchdog) if watchdog else 0.5
        next_status = time.monotonic() + STATUS_EVERY_S
        while not self.stop.wait(tick):
            if watchdog and self.pipeline_alive():
                notifier.watchdog()
            if time.monotonic() >= next_status:
                next_status += STATUS_EVERY_S
                notifier.status(self.status_line())
            self._end_tracks()
            if self.capture_done.is_set() and self.in_flight.count == 0 and not len(self.spool):
                log.info("camera finished and every frame is delivered; stopping")
                self.stop.set()

    def _end_tracks(self) -> None:
        """Every live frame captured before the horizon is answered: tracks unseen since then can end."""
        oldest = self.parts.delivery.oldest_unanswered_capture()
        now = time.time()
        self.parts.answers.expire(now if oldest is None else min(now, oldest))

    # --- the capture stage ------------------------------------------------------------------

    def _capture_loop(self) -> None:
        camera, throttle, metrics = self.parts.camera, self.parts.throttle, self.metrics
        throttle_cfg = self.config.throttle
        try:
            while not self.stop.is_set():
                frame = camera.read()
                if frame is None:
                    self.capture_done.set()
                    break
                metrics.frames_captured.inc()
                decision = throttle.decide(frame.image, frame.media_time)
                if decision is not Decision.SEND:
                    metrics.frames_gated.labels(reason=decision.value).inc()
                    continue
                try:
                    jpeg = encode_jpeg(frame.image, throttle_cfg.max_side, throttle_cfg.jpeg_quality)
                except EncodeError as exc:
                    log.warning("frame %d not sent: %s", frame.seq, exc)
                    metrics.frames_dropped.inc()
                    self.in_flight.release()
                    continue
                self.parts.delivery.submit(Outgoing(str(uuid.uuid4()), frame.captured_at, jpeg))
        finally:
            camera.close()

    # --- reporting ----------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        return self.metrics.summary()

    def status_line(self) -> str:
        c = self.metrics.counts()
        return (f"captured {c['captured']}, sent {c['sent']}, answered {c['answered']}, "
                f"unanswered {c['unanswered']}, events {c['events']}, spool {len(self.spool)}, "
                f"in flight {self.in_flight.count}" + (", endpoint DOWN" if self.endpoint_down.is_set() else ""))

    def status(self) -> dict[str, Any]:
        """/api/status: the same counters as /metrics, health, open tracks, presence and the config in force."""
        summary = self.metrics.summary()
        return {
            "device_id": self.config.device_id,
            "counts": {k: v for k, v in summary.items() if isinstance(v, int)},
            "latency_median_s": summary["latency_median_s"], "latency_p95_s": summary["latency_p95_s"],
            "health": self.health(), "tracks": self.parts.answers.open_tracks(),
            "presence": self.parts.presence.status(),
            "latest_frame_at": self.parts.status.latest_frame_at(), "config": public_config(self.config),
        }

    def status_source(self) -> StatusSource:
        live = self.parts.status
        return StatusSource(self.status, live.events, live.latest_frame_jpeg, live.picture,
                            self.parts.presence.people.picture)

    def camera_state(self) -> str:
        if self.capture_done.is_set():
            return "finished"
        idle = time.monotonic() - self.parts.camera.last_activity
        return "delivering" if idle < 5.0 else f"no frame for {idle:.0f} s (reconnecting)"

    def pipeline_alive(self) -> bool:
        """Every stage thread runs and capture is making progress (or has finished its file)."""
        if self.stop.is_set() or not all(thread.is_alive() for name, thread in self._threads.items()
                                         if name != "capture"):
            return False
        if self.capture_done.is_set():
            return True
        return time.monotonic() - self.parts.camera.last_activity < self._stall_limit_s

    def health(self) -> dict[str, Any]:
        alive = {name: thread.is_alive() for name, thread in self._threads.items()}
        return {
            "ok": self.pipeline_alive(),
            "capture_stalled_s": round(time.monotonic() - self.parts.camera.last_activity, 1),
            "camera": self.camera_state(),
            "device_id": self.config.device_id,
            "threads": alive,
            "endpoint_up": not self.endpoint_down.is_set(),
            "spool_frames": len(self.spool),
            "spool_bytes": self.spool.bytes,
            "in_flight": self.in_flight.count,
            "counts": self.metrics.counts(),
        }
