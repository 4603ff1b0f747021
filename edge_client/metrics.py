"""Prometheus metrics of the edge daemon and the small HTTP server that exposes them.

`/metrics` is the Prometheus text exposition of this instance's registry; `/healthz` is the JSON of
a health callback (200 when its "ok" is true, else 503), for load balancers, `curl` and systemd
checks. Each `EdgeMetrics` owns its registry, so several daemons (or tests) in one process never
collide on metric names.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

log = logging.getLogger(__name__)

PREFIX = "facepipe_edge_"
# Capture-to-answer latency: ~0.3 s warm on AWS, seconds on a cold start, up to the answer timeout.
LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0)

HealthFn = Callable[[], dict[str, Any]]


class EdgeMetrics:
    """Every counter the pipeline stages increment; names are `facepipe_edge_<name>_total`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(PREFIX + name, doc, labels, registry=self.registry)

        self.frames_captured = counter("frames_captured", "Frames read from the camera")
        self.frames_gated = counter("frames_gated", "Frames skipped by the throttle or motion gate")
        self.frames_sent = counter("frames_sent", "Frames uploaded to the detection endpoint")
        self.frames_spooled = counter("frames_spooled", "Frames written to the disk spool")
        self.frames_dropped = counter("frames_dropped", "Frames lost (e.g. oldest spooled beyond the size cap)")
        self.frames_answered = counter("frames_answered", "Frames whose answer arrived")
        self.frames_unanswered = counter("frames_unanswered", "Frames with no answer within the timeout")
        self.duplicates = counter("duplicates", "Duplicate answers dropped (SQS delivers at least once)")
        self.upload_errors = counter("upload_errors", "Failed upload attempts by kind", ("kind",))
        self.rejections = counter("rejections", "Uploads refused by the endpoint (4xx) by status", ("status",))
        self.faces = counter("faces", "Faces in answers by name ('unknown' included)", ("name",))
        self.webhook_errors = counter("webhook_errors", "Webhook posts that failed or were dropped", ("kind",))
        self.latency_seconds = Histogram(
            PREFIX + "latency_seconds", "Capture-to-answer latency per frame",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, listen: str, health: HealthFn) -> MetricsServer:
        """Serve /metrics and /healthz on `listen` ("host:port", "[::1]:port"; port 0 = any free)."""
        return MetricsServer(self, listen, health)


def parse_listen(listen: str) -> tuple[str, int]:
    """'127.0.0.1:9108' -> ('127.0.0.1', 9108); '[::]:9108' -> ('::', 9108); ':9108' -> all interfaces."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError("must be host:port, e.g. 127.0.0.1:9108")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "0.0.0.0", int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck scraper never blocks shutdown

    def __init__(self, address: tuple[str, int], metrics: EdgeMetrics, health: HealthFn) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.metrics = metrics
        self.health = health
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, self.server.metrics.exposition())
        elif path == "/healthz":
            status, body = self._health()
            self._send(status, "application/json", body)
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n")

    def _health(self) -> tuple[int, bytes]:
        try:
            report = self.server.health()
        except Exception as exc:  # the health callback must not kill the endpoint
            log.exception("health check raised")
            report = {"ok": False, "error": f"health check raised: {exc}"}
        status = 200 if report.get("ok") is True else 503
        return status, json.dumps(report, default=str).encode() + b"\n"

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Scrapes every 15 s would flood the journal; keep them at debug level.
        log.debug("metrics http: " + format, *args)


class MetricsServer:
    """A running /metrics + /healthz server; `address` is the bound (host, port)."""

    def __init__(self, metrics: EdgeMetrics, listen: str, health: HealthFn) -> None:
        self._httpd = _Server(parse_listen(listen), metrics, health)
        self.address: tuple[str, int] = self._httpd.server_address[:2]  # type: ignore[assignment]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics", *self.address)

    def shutdown(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
