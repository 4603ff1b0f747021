"""The daemon: wires capture -> throttle -> encode -> upload/spool -> correlate -> outputs.

Threads: one capture (camera, throttle, encode), a few uploaders, one spool drainer, one correlator
(long-polls the response queue). Memory is bounded by the in-flight limiter: the throttle takes a
slot per frame it passes and the slot comes back when the answer arrives, the frame is given up
(rejected, unanswered) or it goes to the disk spool. A slow cloud therefore gates frames at capture
instead of queueing them.

One stop event ends everything. On stop (SIGTERM): capture ends, queued frames go to the spool,
uploads already under way may finish within `stop_timeout_s`, answers to them are awaited within
the same deadline (a frame still without one is counted unanswered), and whatever is left stays
spooled for the next start. A non-looping file camera ends the same way once every frame has been
answered (or timed out) and the spool is empty.
"""

from __future__ import annotations

import logging
import queue
import resource
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from cloud.contracts import ResponseMessage
from edge_client.camera import Camera
from edge_client.config import EdgeConfig
from edge_client.correlator import Correlator, CorrelatorEvents, Pending, PendingRequests, make_sqs_client
from edge_client.encode import EncodeError, encode_jpeg
from edge_client.metrics import EdgeMetrics
from edge_client.notify import SystemdNotifier
from edge_client.outputs import Outputs
from edge_client.redact import redact_url
from edge_client.spool import Spool, SpooledFrame
from edge_client.throttle import Decision, InFlight, Throttle
from edge_client.uploader import Outcome, Signer, Uploader, UploadResult

log = logging.getLogger(__name__)

EX_SOFTWARE = 70  # sysexits.h: internal error (systemd's Restart=on-failure restarts)
MAX_UPLOAD_THREADS = 4
STATUS_EVERY_S = 10.0
_LATENCIES_KEPT = 100_000  # for median/p95 in the summary; ~1 MB


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


class Stats:
    """Counters and latencies for the summary, STATUS lines and /healthz (Prometheus has its own)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._latencies: deque[float] = deque(maxlen=_LATENCIES_KEPT)
        self._cpu_start = _cpu_seconds()
        self._wall_start = time.monotonic()

    def inc(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def latency(self, seconds: float) -> None:
        with self._lock:
            self._latencies.append(seconds)

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def summary(self) -> dict[str, Any]:
        with self._lock:
            counts = dict(self._counts)
            latencies = np.array(self._latencies, dtype=float)
        captured = counts.get("captured", 0)
        cpu = _cpu_seconds() - self._cpu_start
        result: dict[str, Any] = {name: counts.get(name, 0) for name in (
            "captured", "gated", "gated_rate", "gated_still", "gated_busy", "sent", "spooled", "dropped",
            "answered", "unanswered", "duplicates", "late", "rejected", "upload_errors",
        )}
        result["latency_median_s"] = float(np.median(latencies)) if latencies.size else None
        result["latency_p95_s"] = float(np.percentile(latencies, 95)) if latencies.size else None
        result["cpu_s"] = round(cpu, 3)
        result["cpu_s_per_frame"] = cpu / captured if captured else None
        result["wall_s"] = round(time.monotonic() - self._wall_start, 3)
        return result


def format_summary(summary: dict[str, Any]) -> str:
    def seconds(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}s"

    per_frame = summary["cpu_s_per_frame"]
    return (
        f"frames: captured {summary['captured']}, gated out {summary['gated']} "
        f"(rate {summary['gated_rate']}, still {summary['gated_still']}, busy {summary['gated_busy']}), "
        f"sent {summary['sent']}, answered {summary['answered']}, unanswered {summary['unanswered']}, "
        f"spooled {summary['spooled']}, dropped {summary['dropped']}, duplicates {summary['duplicates']}, "
        f"rejected {summary['rejected']}; latency median {seconds(summary['latency_median_s'])}, "
        f"p95 {seconds(summary['latency_p95_s'])}; CPU {summary['cpu_s']:.2f}s"
        + (f" ({per_frame * 1000:.2f} ms/captured frame)" if per_frame is not None else "")
    )


@dataclass(frozen=True)
class Outgoing:
    request_id: str
    captured_at: float
    jpeg: bytes


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
        self.stop = threading.Event()
        self.stats = Stats()
        self.metrics = metrics or EdgeMetrics()
        self.notifier = notifier or SystemdNotifier()
        region = config.signing_region()
        if signer is None and config.endpoint.auth == "aws_iam":
            signer = Signer(region or "")  # CredentialsMissing when the chain is empty
        self.uploader = Uploader(
            config.endpoint, config.device_id, config.responses.reply_to, self.stop, signer, self._upload_error
        )
        self.in_flight = InFlight(config.throttle.max_in_flight)
        self.throttle = Throttle(config.throttle, self.in_flight)
        self.spool = Spool(config.spool.directory, int(config.spool.max_bytes))
        self.pending = PendingRequests()
        self.outputs = Outputs(config.outputs, config.device_id, self.metrics)
        self.correlator = Correlator(
            config.responses, config.device_id, sqs or make_sqs_client(config.responses, region), self.pending,
            CorrelatorEvents(self._answered, self._unanswered, self._duplicate, self._late),
        )
        self.endpoint_down = threading.Event()
        self.capture_done = threading.Event()
        self.failed = ""  # name of a stage thread that raised
        self._uploads: queue.Queue[Outgoing] = queue.Queue(maxsize=config.throttle.max_in_flight)
        self._busy: dict[str, Outgoing] = {}  # uploader thread name -> live frame being uploaded
        self._busy_lock = threading.Lock()
        self._keep_jpeg = config.outputs.snapshots_dir is not None
        self._threads: dict[str, threading.Thread] = {}
        self.camera = Camera(config.camera, self.stop)
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
        if self.config.metrics.listen:
            try:
                server = self.metrics.serve(self.config.metrics.listen, self.health)
            except OSError as exc:  # the camera pipeline matters more than its metrics
                log.error("metrics: cannot listen on %s: %s", self.config.metrics.listen, exc)
        self._start("capture", self._capture_loop)
        for index in range(min(self.config.throttle.max_in_flight, MAX_UPLOAD_THREADS)):
            self._start(f"upload-{index}", self._upload_loop)
        self._start("spool-drain", self._drain_loop)
        self._start("correlator", self.correlator.run)
        self.notifier.ready()
        self.notifier.status("running")
        log.info("%s: running (camera %r -> %s)", self.config.device_id, redact_url(self.config.camera.source),
                 redact_url(self.config.endpoint.url))
        try:
            self._supervise()
        finally:
            self._shutdown()
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
        watchdog = self.notifier.watchdog_interval_s
        tick = min(1.0, watchdog) if watchdog else 1.0
        next_status = time.monotonic() + STATUS_EVERY_S
        while not self.stop.wait(tick):
            if watchdog and self.pipeline_alive():
                self.notifier.watchdog()
            if time.monotonic() >= next_status:
                next_status += STATUS_EVERY_S
                self.notifier.status(self.status_line())
            if self.capture_done.is_set() and self.in_flight.count == 0 and not len(self.spool):
                log.info("camera finished and every frame is delivered; stopping")
                self.stop.set()

    def _shutdown(self) -> None:
        self.stop.set()
        self.notifier.stopping()
        deadline = time.monotonic() + self.config.stop_timeout_s
        # Capture and uploaders: queued frames go to the spool; uploads under way may finish.
        for name, thread in self._threads.items():
            if name != "correlator":
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._busy_lock:  # still uploading at the deadline: spool a copy (a duplicate is harmless);
            unfinished = list(self._busy.values())  # taking the entry tells the uploader not to spool it too
            self._busy.clear()
        for frame in unfinished:
            self._to_spool(frame)
        # Frames still queued behind uploads that outlived the deadline (max_in_flight > upload threads).
        while True:
            try:
                self._spool_queued(self._uploads.get_nowait())
            except queue.Empty:
                break
        # Answers to what was sent: wait for them within the same deadline.
        while len(self.pending) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.correlator.close()
        # Nothing is pending now (or the deadline has passed): don't sit out a long poll under way, up to
        # responses.wait_s. The thread is a daemon; an answer it still receives finds no pending frame.
        self._threads["correlator"].join(timeout=0.5)
        self.correlator.sweep()
        self.correlator.abandon()
        self.outputs.close()
        # The summary itself is the CLI's to print (once, on stdout).
        log.info("stopped; spool keeps %d frame(s)", len(self.spool))

    # --- stages -----------------------------------------------------------------------------

    def _capture_loop(self) -> None:
        camera = self.camera
        throttle_cfg = self.config.throttle
        try:
            while not self.stop.is_set():
                frame = camera.read()
                if frame is None:
                    self.capture_done.set()
                    break
                self._count("captured", self.metrics.frames_captured)
                decision = self.throttle.decide(frame.image, frame.media_time)
                if decision is not Decision.SEND:
                    self._count("gated", self.metrics.frames_gated)
                    self.stats.inc(f"gated_{decision.value}")
                    continue
                try:
                    jpeg = encode_jpeg(frame.image, throttle_cfg.max_side, throttle_cfg.jpeg_quality)
                except EncodeError as exc:
                    log.warning("frame %d not sent: %s", frame.seq, exc)
                    self._count("dropped", self.metrics.frames_dropped)
                    self.in_flight.release()
                    continue
                # Never blocks: the queue holds max_in_flight items and each one holds a slot.
                self._uploads.put_nowait(Outgoing(str(uuid.uuid4()), frame.captured_at, jpeg))
        finally:
            camera.close()

    def _upload_loop(self) -> None:
        name = threading.current_thread().name
        while True:
            try:
                item = self._uploads.get(timeout=0.2)
            except queue.Empty:
                if self.stop.is_set():
                    return
                continue
            if self.stop.is_set() or self.endpoint_down.is_set():
                self._spool_queued(item)
                continue
            with self._busy_lock:
                self._busy[name] = item
            try:
                result = self._send(item.request_id, item.captured_at, item.jpeg, retry=True)
            finally:
                with self._busy_lock:
                    still_ours = self._busy.pop(name, None) is not None  # else _shutdown spooled it
            if result.outcome is Outcome.UNREACHABLE and still_ours:
                self._to_spool(item)

    def _drain_loop(self) -> None:
        """Deliver spooled frames oldest first; while the endpoint is down, probe with backoff."""
        retries = self.config.endpoint.retries
        delay = retries.base_s
        while not self.stop.is_set():
            if self.endpoint_down.is_set():
                if self.stop.wait(delay):
                    return
                delay = min(delay * 2, retries.max_s)
                if not len(self.spool):
                    self.endpoint_down.clear()  # nothing to probe with: let the next live frame try
                    continue
            elif not len(self.spool):
                self.stop.wait(0.2)
                continue
            if not self.in_flight.acquire(timeout=0.5):
                continue
            frame, corrupt = self.spool.oldest()
            if corrupt:
                self._count("dropped", self.metrics.frames_dropped, corrupt)
            if frame is None or self.stop.is_set():
                self.in_flight.release()
                continue
            result = self._send(frame.request_id, frame.captured_at, frame.jpeg, retry=False)
            if result.outcome is not Outcome.UNREACHABLE:
                self.spool.remove(frame)
                delay = retries.base_s

    def _send(self, request_id: str, captured_at: float, jpeg: bytes, retry: bool) -> UploadResult:
        """Upload one frame that holds an in-flight slot; the slot stays only while an answer is due."""
        # Registered before the POST: the answer can arrive before the HTTP response does.
        self.pending.add(Pending(request_id, captured_at, jpeg if self._keep_jpeg else None, uploading=True))
        result = self.uploader.upload(jpeg, request_id, captured_at, retry=retry)
        if result.outcome is Outcome.ACCEPTED:
            self.pending.accepted(request_id)
            self._count("sent", self.metrics.frames_sent)
            if self.endpoint_down.is_set():
                log.info("endpoint reachable again; draining %d spooled frame(s)", len(self.spool))
                self.endpoint_down.clear()
            return result
        if self.pending.pop(request_id) is not None:
            self.in_flight.release()
        elif result.outcome is Outcome.UNREACHABLE:
            # Its answer came although no HTTP response did (e.g. a read timeout during a slow cold start):
            # the cloud has the frame, and spooling it would send it again and report it twice.
            log.info("frame %s answered without an HTTP response (%s); not sent again", request_id, result.error)
            self._count("sent", self.metrics.frames_sent)
            return replace(result, outcome=Outcome.ACCEPTED)
        if result.outcome is Outcome.REJECTED:
            self.stats.inc("rejected")
            self.metrics.rejections.labels(status=str(result.status)).inc()
            log.warning("frame %s rejected by the endpoint (HTTP %s): %s", request_id, result.status, result.error)
        elif not self.endpoint_down.is_set() and not self.stop.is_set():
            log.warning("endpoint unreachable after %d attempt(s) (%s); spooling frames", result.attempts,
                        result.error)
            self.endpoint_down.set()
        return result

    def _spool_queued(self, item: Outgoing) -> None:
        """A frame that was queued, not sent: to the spool, and its in-flight slot is free again."""
        self._to_spool(item)
        self.in_flight.release()

    def _to_spool(self, item: Outgoing) -> None:
        try:
            dropped = self.spool.put(SpooledFrame(item.request_id, item.captured_at, item.jpeg))
        except OSError as exc:  # disk full or read-only: lose this frame, keep the camera running
            log.error("spool: cannot write frame %s: %s", item.request_id, exc)
            self._count("dropped", self.metrics.frames_dropped)
            return
        self._count("spooled", self.metrics.frames_spooled)
        if dropped:
            self._count("dropped", self.metrics.frames_dropped, dropped)

    # --- correlator and uploader events -------------------------------------------------------

    def _answered(self, answer: ResponseMessage, item: Pending, latency_s: float) -> None:
        self.in_flight.release()
        self._count("answered", self.metrics.frames_answered)
        self.stats.latency(latency_s)
        self.metrics.latency_seconds.observe(latency_s)
        for face in answer.faces:
            self.metrics.faces.labels(name=face.name).inc()
        try:
            self.outputs.emit(answer, item.jpeg, latency_s)
        except Exception:  # an output bug must not stop correlation
            log.exception("output failed for %s", answer.request_id)

    def _unanswered(self, item: Pending) -> None:
        self.in_flight.release()
        self._count("unanswered", self.metrics.frames_unanswered)

    def _duplicate(self, request_id: str) -> None:
        self._count("duplicates", self.metrics.duplicates)

    def _late(self, request_id: str) -> None:
        self.stats.inc("late")

    def _upload_error(self, kind: str) -> None:
        self.stats.inc("upload_errors")
        self.metrics.upload_errors.labels(kind=kind).inc()

    def _count(self, name: str, counter: Any, amount: int = 1) -> None:
        self.stats.inc(name, amount)
        counter.inc(amount)

    # --- reporting ----------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        return self.stats.summary()

    def status_line(self) -> str:
        s = self.stats
        return (f"captured {s['captured']}, sent {s['sent']}, answered {s['answered']}, "
                f"unanswered {s['unanswered']}, spool {len(self.spool)}, in flight {self.in_flight.count}"
                + (", endpoint DOWN" if self.endpoint_down.is_set() else ""))

    def pipeline_alive(self) -> bool:
        """Every stage thread runs and capture is making progress (or has finished its file)."""
        if self.stop.is_set() or not all(thread.is_alive() for name, thread in self._threads.items()
                                         if name != "capture"):
            return False
        if self.capture_done.is_set():
            return True
        return time.monotonic() - self.camera.last_activity < self._stall_limit_s

    def health(self) -> dict[str, Any]:
        alive = {name: thread.is_alive() for name, thread in self._threads.items()}
        return {
            "ok": self.pipeline_alive(),
            "capture_stalled_s": round(time.monotonic() - self.camera.last_activity, 1),
            "device_id": self.config.device_id,
            "threads": alive,
            "endpoint_up": not self.endpoint_down.is_set(),
            "spool_frames": len(self.spool),
            "spool_bytes": self.spool.bytes,
            "in_flight": self.in_flight.count,
            "counts": {k: v for k, v in self.stats.summary().items() if isinstance(v, int)},
        }
