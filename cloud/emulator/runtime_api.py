"""The Lambda Runtime API of one local execution environment: what Lambda's RAPID serves inside a sandbox.

A worker process (awslambdaric, pointed here by AWS_LAMBDA_RUNTIME_API) calls
- `GET /2018-06-01/runtime/invocation/next`: blocks until there is an event; the reply carries it as the
  body and `Lambda-Runtime-Aws-Request-Id`, `-Deadline-Ms`, `-Invoked-Function-Arn`, `-Trace-Id` headers.
  The first call also tells us the worker finished its init phase.
- `POST /2018-06-01/runtime/invocation/{id}/response` / `.../{id}/error`: the invocation's outcome.
- `POST /2018-06-01/runtime/init/error`: the init phase (imports, model load) failed.
One server per execution environment, as in Lambda, so a request always names its worker by the port.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "/2018-06-01/runtime"
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"


@dataclass
class Invocation:
    """One event handed to the worker, and what the worker answered."""

    request_id: str
    payload: bytes
    deadline_ms: int  # epoch milliseconds, as Lambda-Runtime-Deadline-Ms
    function_arn: str
    trace_id: str
    done: threading.Event = field(default_factory=threading.Event)
    response: bytes | None = None
    error: dict[str, Any] | None = None  # the runtime's error document: errorType, errorMessage, stackTrace
    started: float = 0.0  # perf_counter when the worker received it


class RuntimeApiServer(ThreadingHTTPServer):
    """Serves one worker on host:port (0 = a free port) from a background thread until `stop()`."""

    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), RuntimeApiHandler)
        self.events: queue.Queue[Invocation | None] = queue.Queue()
        self.current: Invocation | None = None  # the invocation the worker is running
        self.initialised = threading.Event()  # set by the worker's first `next`
        self.initialised_at = 0.0  # perf_counter of that first `next`
        self.init_error: dict[str, Any] | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """host:port, the value of AWS_LAMBDA_RUNTIME_API."""
        host, port = self.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name=f"runtime-api-{self.address}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.events.put(None)  # releases a `next` still waiting
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()

    def submit(self, invocation: Invocation) -> None:
        self.events.put(invocation)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A killed worker drops its connections mid-request: expected, not worth a traceback.
        log.debug("runtime API connection from %s ended abruptly", client_address, exc_info=True)


class RuntimeApiHandler(BaseHTTPRequestHandler):
    server: RuntimeApiServer
    protocol_version = "HTTP/1.1"
    server_version = "facepipe-local-runtime-api"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stall

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        # Always a Content-Type: awslambdaric 4.2.2's native client crashes (SIGSEGV) on a `next` without one.
        self.send_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _accepted(self) -> None:
        self._reply(202, b'{"status":"OK"}')

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.path != f"{PREFIX}/invocation/next":
            self._reply(404, b'{"errorType":"NotFound"}')
            return
        server = self.server
        if not server.initialised.is_set():
            server.initialised_at = time.perf_counter()
            server.initialised.set()
        invocation = server.events.get()
        if invocation is None:  # the environment is shutting down
            self.close_connection = True
            self._reply(500, b'{"errorType":"ShuttingDown"}')
            return
        invocation.started = time.perf_counter()
        server.current = invocation
        self._reply(200, invocation.payload, {
            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
            "Lambda-Runtime-Deadline-Ms": str(invocation.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": invocation.function_arn,
            "Lambda-Runtime-Trace-Id": invocation.trace_id,
        })

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        body = self._body()
        server = self.server
        if self.path == f"{PREFIX}/init/error":
            server.init_error = _error_document(body, self.headers.get(ERROR_TYPE_HEADER))
            self._accepted()
            return
        parts = self.path[len(PREFIX):].split("/") if self.path.startswith(PREFIX) else []
        # ["", "invocation", id, "response" | "error"]
        if len(parts) != 4 or parts[1] != "invocation" or parts[3] not in ("response", "error"):
            self._reply(404, b'{"errorType":"NotFound"}')
            return
        invocation = server.current
        if invocation is None or invocation.request_id != parts[2] or invocation.done.is_set():
            self._reply(400, b'{"errorType":"InvalidRequestID"}')
            return
        if parts[3] == "response":
            invocation.response = body
        else:
            invocation.error = _error_document(body, self.headers.get(ERROR_TYPE_HEADER))
        server.current = None
        invocation.done.set()
        self._accepted()


def _error_document(body: bytes, error_type: str | None) -> dict[str, Any]:
    """The runtime's error JSON (errorMessage, errorType, stackTrace), or what can be said without it."""
    try:
        document = json.loads(body or b"{}")
    except ValueError:
        document = {"errorMessage": body.decode("utf-8", "replace")}
    if not isinstance(document, dict):
        document = {"errorMessage": str(document)}
    document.setdefault("errorType", error_type or "Unhandled")
    return document
