"""The daemon's small HTTP server: Prometheus `/metrics` and JSON `/healthz`.

`/healthz` is the JSON of a health callback (200 when its "ok" is true, else 503), for load
balancers, `curl` and systemd checks. Bound to loopback by default (`metrics.listen`).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from edge_client.metrics import EdgeMetrics

log = logging.getLogger(__name__)

HealthFn = Callable[[], dict[str, Any]]


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
