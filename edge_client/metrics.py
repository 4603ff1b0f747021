"""The daemon's bookkeeping, in one place: every counter, the latency window and the run clock.

Prometheus counters are the store: `/metrics` exposes them, and the run summary, the STATUS line,
`/healthz` and `/api/status` read their totals back (`counts()`), so no figure lives twice. Each
`EdgeMetrics` owns its registry, so several daemons (or tests) in one process never collide.
"""

from __future__ import annotations

import resource
import threading
import time
from collections import deque
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

PREFIX = "facepipe_edge_"
# Capture-to-answer latency: ~0.3 s warm on AWS, seconds on a cold start, up to the answer timeout.
LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0)
GATE_REASONS = ("rate", "still", "busy")
_LATENCIES_KEPT = 100_000  # raw samples for the summary's median/p95 (the histogram only has buckets); ~1 MB


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def total(counter: Counter, **labels: str) -> int:
    """A counter's value summed over the label values matching `labels` (0 before the first increment)."""
    return round(sum(
        sample.value for metric in counter.collect() for sample in metric.samples
        if sample.name.endswith("_total") and labels.items() <= sample.labels.items()
    ))


class EdgeMetrics:
    """Every counter the pipeline stages increment; names are `facepipe_edge_<name>_total`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(PREFIX + name, doc, labels, registry=self.registry)

        self.frames_captured = counter("frames_captured", "Frames read from the camera")
        self.frames_gated = counter("frames_gated", "Frames skipped by the throttle, by reason", ("reason",))
        for reason in GATE_REASONS:
            self.frames_gated.labels(reason=reason)  # exposed as 0 from the start
        self.frames_sent = counter("frames_sent", "Frames uploaded to the detection endpoint")
        self.frames_spooled = counter("frames_spooled", "Frames written to the disk spool")
        self.frames_dropped = counter("frames_dropped", "Frames lost (e.g. oldest spooled beyond the size cap)")
        self.frames_answered = counter("frames_answered", "Frames whose answer arrived")
        self.frames_unanswered = counter("frames_unanswered", "Frames with no answer within the timeout")
        self.duplicates = counter("duplicates", "Duplicate answers dropped (SQS delivers at least once)")
        self.late_answers = counter("late_answers", "Answers for an expired or unknown request (not reported)")
        self.upload_errors = counter("upload_errors", "Failed upload attempts by kind", ("kind",))
        self.rejections = counter("rejections", "Uploads refused by the endpoint (4xx) by status", ("status",))
        self.faces = counter("faces", "Faces in answers by name ('unknown' included)", ("name",))
        self.events = counter("events", "Events emitted, by type (start, update, end)", ("type",))
        self.output_errors = counter(
            "output_errors", "Output deliveries that failed or were dropped, by output and kind", ("output", "kind")
        )
        self.latency_seconds = Histogram(
            PREFIX + "latency_seconds", "Capture-to-answer latency per frame",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self._latencies: deque[float] = deque(maxlen=_LATENCIES_KEPT)
        self._lock = threading.Lock()
        self._cpu_start = _cpu_seconds()
        self._wall_start = time.monotonic()

    def observe_latency(self, seconds: float) -> None:
        self.latency_seconds.observe(seconds)
        with self._lock:
            self._latencies.append(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def counts(self) -> dict[str, int]:
        """Totals under the short names the summary, STATUS line and status page use."""
        gated = {f"gated_{reason}": total(self.frames_gated, reason=reason) for reason in GATE_REASONS}
        return {
            "captured": total(self.frames_captured), "gated": total(self.frames_gated), **gated,
            "sent": total(self.frames_sent), "spooled": total(self.frames_spooled),
            "dropped": total(self.frames_dropped), "answered": total(self.frames_answered),
            "unanswered": total(self.frames_unanswered), "duplicates": total(self.duplicates),
            "late": total(self.late_answers), "rejected": total(self.rejections),
            "upload_errors": total(self.upload_errors), "events": total(self.events),
            "output_errors": total(self.output_errors),
        }

    def summary(self) -> dict[str, Any]:
        """The counts plus latency median/p95 and the process's CPU since these metrics started."""
        with self._lock:
            latencies = np.array(self._latencies, dtype=float)
        result: dict[str, Any] = self.counts()
        cpu = _cpu_seconds() - self._cpu_start
        result["latency_median_s"] = float(np.median(latencies)) if latencies.size else None
        result["latency_p95_s"] = float(np.percentile(latencies, 95)) if latencies.size else None
        result["cpu_s"] = round(cpu, 3)
        result["cpu_s_per_frame"] = cpu / result["captured"] if result["captured"] else None
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
        f"rejected {summary['rejected']}; events {summary['events']}; latency median "
        f"{seconds(summary['latency_median_s'])}, p95 {seconds(summary['latency_p95_s'])}; CPU {summary['cpu_s']:.2f}s"
        + (f" ({per_frame * 1000:.2f} ms/captured frame)" if per_frame is not None else "")
    )
