"""The daemon's small HTTP server: the status page and its JSON, Prometheus `/metrics`, JSON `/healthz`.

- `/`: the status page (`status_page.py`: plain HTML and a small script, no external assets);
- `/api/status`: counters (the ones `/metrics` has), camera and endpoint health, open tracks, the
  config in force with secrets redacted; `/api/events`: the last events, newest first;
- `/api/frame.jpg`: the latest answered frame, annotated; `/api/events/<event_id>.jpg`: an event's
  best picture; `/api/people/<id>.jpg`: a person's (presence);
- `/metrics`: Prometheus text; `/healthz`: the health JSON (200 when "ok" is true, else 503).

Read-only, GET only. Bound to loopback by default (`metrics.listen`): the page shows who came by.
Every answer first checks the request's `Host` and, when one is configured, its token (`access.py`):
421 for a name that is not this server's, 401 without the token.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_LATEST

from edge_client.access import Access
from edge_client.metrics import EdgeMetrics
from edge_client.status_page import PAGE

log = logging.getLogger(__name__)

HealthFn = Callable[[], dict[str, Any]]
_EVENT_PICTURE = re.compile(r"^/api/events/([0-9a-f]{1,64})\.jpg$")
_PERSON_PICTURE = re.compile(r"^/api/people/([A-Za-z0-9_-]{1,128})\.jpg$")  # mqtt.object_id's alphabet


@dataclass
class StatusSource:
    """What the status page reads (each callable returns a fresh view)."""

    status: Callable[[], dict[str, Any]]
    events: Callable[[], list[dict[str, Any]]]
    frame: Callable[[], bytes | None]  # the latest answered frame, annotated
    picture: Callable[[str], bytes | None]  # an event's best picture
    person_picture: Callable[[str], bytes | None] = lambda _oid: None  # a person's, by object id


def parse_listen(listen: str) -> tuple[str, int]:
    """'127.0.0.1:9108' -> ('127.0.0.1', 9108); '[::]:9108' -> ('::', 9108); ':9108' -> all interfaces."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError("must be host:port, e.g. 127.0.0.1:9108")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "0.0.0.0", int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client never blocks shutdown

    def __init__(self, address: tuple[str, int], metrics: EdgeMetrics, health: HealthFn,
                 source: StatusSource | None, allowed_hosts: tuple[str, ...], token: str | None) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.metrics = metrics
        self.health = health
        self.source = source
        super().__init__(address, _Handler)
        self.access = Access(address[0], self.server_address[1], allowed_hosts, token)  # the bound port (":0")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stall

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path, _, query = self.path.partition("?")
        access = self.server.access
        if not access.host_allowed(self.headers.get("Host")):
            self._send(421, "text/plain; charset=utf-8",
                       b"misdirected request: this server answers to its own names only (metrics.allowed_hosts)\n")
            return
        if path == "/" and "token" in (asked := parse_qs(query)):
            self._let_browser_in(asked["token"][-1])
            return
        if not access.authorized(self.headers):
            self._send(401, "text/plain; charset=utf-8",
                       b"a token is required: Authorization: Bearer <token>, or open /?token=<token> once\n",
                       {"WWW-Authenticate": 'Bearer realm="facepipe-edge"'})
            return
        source = self.server.source
        if path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, self.server.metrics.exposition())
        elif path == "/healthz":
            status, body = self._health()
            self._send(status, "application/json", body)
        elif source is None:
            self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n")
        elif path == "/":
            self._send(200, "text/html; charset=utf-8", PAGE.encode())
        elif path == "/api/status":
            self._json(source.status())
        elif path == "/api/events":
            self._json(source.events())
        elif path == "/api/frame.jpg":
            self._jpeg(source.frame())
        elif match := _EVENT_PICTURE.match(path):
            self._jpeg(source.picture(match.group(1)))
        elif match := _PERSON_PICTURE.match(path):
            self._jpeg(source.person_picture(match.group(1)))
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")

    def _let_browser_in(self, token: str) -> None:
        """`/?token=`: a cookie for the page's own requests, and the token out of the address bar."""
        access = self.server.access
        if access.token is None or not access.token_matches(token):
            self._send(401, "text/plain; charset=utf-8", b"wrong token\n")
            return
        self._send(303, "text/plain; charset=utf-8", b"", {"Location": "/", "Set-Cookie": access.set_cookie()})

    def _health(self) -> tuple[int, bytes]:
        try:
            report = self.server.health()
        except Exception as exc:  # the health callback must not kill the endpoint
            log.exception("health check raised")
            report = {"ok": False, "error": f"health check raised: {exc}"}
        status = 200 if report.get("ok") is True else 503
        return status, json.dumps(report, default=str).encode() + b"\n"

    def _json(self, data: Any) -> None:
        self._send(200, "application/json", json.dumps(data, default=str).encode())

    def _jpeg(self, data: bytes | None) -> None:
        if data is None:
            self._send(404, "text/plain; charset=utf-8", b"no picture (yet)\n")
        else:
            self._send(200, "image/jpeg", data)

    def _send(self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy",
                         "default-src 'self'; img-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'")
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Scrapes every 15 s and the page's polling would flood the journal: debug level. No query: `?token=`.
        log.debug("http: %s %s %s", self.command, getattr(self, "path", "").partition("?")[0], code)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


class MetricsServer:
    """A running server; `address` is the bound (host, port). Without a `source`, only /metrics and /healthz.
    It answers requests naming it (loopback names, the listen address, `allowed_hosts`), with `token` if set."""

    def __init__(self, metrics: EdgeMetrics, listen: str, health: HealthFn, source: StatusSource | None = None,
                 allowed_hosts: tuple[str, ...] = (), token: str | None = None) -> None:
        self._httpd = _Server(parse_listen(listen), metrics, health, source, allowed_hosts, token)
        self.address: tuple[str, int] = self._httpd.server_address[:2]  # type: ignore[assignment]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()
        log.info("status page on http://%s:%d/ (metrics on /metrics)", *self.address)

    def shutdown(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
